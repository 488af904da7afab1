"""The README's Python snippets run as written (so the tour cannot silently rot)."""

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)
SLOW = ("PKD(",)  # a full PKD fit on Cora: about a minute on CPU


def _params():
    for i, code in enumerate(BLOCKS):
        marks = [pytest.mark.slow] if any(s in code for s in SLOW) else []
        yield pytest.param(code, id=f"block{i}", marks=marks)


def test_readme_has_snippets():
    assert len(BLOCKS) >= 4


@pytest.mark.parametrize("code", list(_params()))
def test_readme_snippet_runs(code, capsys):
    exec(compile(code, str(README), "exec"), {"__name__": "readme_snippet"})
