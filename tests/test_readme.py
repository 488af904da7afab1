"""The README's Python snippets run as written (so the quick starts cannot silently rot).

A snippet that needs a dataset or device this machine may lack (it names ``NEEDS_DATA``) is compiled and its
imports are executed, so its names still have to exist; everything else runs.
"""

import ast
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)
SLOW = ("PKD(",)  # a full PKD fit on Cora: about a minute on CPU
NEEDS_DATA = ("/data/CIFAR10DVS",)  # the CIFAR10-DVS release and a CUDA GPU


def _params():
    for i, code in enumerate(BLOCKS):
        marks = [pytest.mark.slow] if any(s in code for s in SLOW) else []
        yield pytest.param(code, id=f"block{i}", marks=marks)


def test_readme_has_the_three_quick_starts():
    assert len(BLOCKS) >= 3
    assert any("PKD(" in b for b in BLOCKS)
    assert any("CIFAR10DVS(" in b and '"cupy"' in b for b in BLOCKS)
    assert any("convert_neurons" in b and "get_loss" in b for b in BLOCKS)


@pytest.mark.parametrize("code", list(_params()))
def test_readme_snippet_runs(code, capsys):
    tree = compile(code, str(README), "exec", flags=ast.PyCF_ONLY_AST)
    if any(s in code for s in NEEDS_DATA):
        imports = ast.Module([n for n in tree.body if isinstance(n, ast.Import | ast.ImportFrom)], [])
        exec(compile(imports, str(README), "exec"), {"__name__": "readme_snippet"})
        return
    exec(compile(tree, str(README), "exec"), {"__name__": "readme_snippet"})
