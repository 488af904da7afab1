"""The package's import graph: no cycles, and the layering of the house plan.

``benchmarks`` -> ``graph``, ``spiking`` -> ``common``: ``common`` imports no domain, the two domains
never import each other, and both take their distillation terms from :mod:`graphspike_kd.common.losses`.
Imports inside functions count as edges too, so a cycle cannot hide behind a deferred import.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE_ROOT = Path(__file__).resolve().parents[1] / "graphspike_kd"
PACKAGE = "graphspike_kd"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE_ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE_ROOT.rglob("*.py"))}


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The longest prefix of a dotted name that is one of the package's modules."""
    parts = name.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in modules:
            return candidate
        parts.pop()
    return None


def _imports(module: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """Package-internal modules that ``module`` imports, anywhere in its body (functions included)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(tree):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                if not is_package:
                    base = base[:-1]
                base = base[: len(base) - (node.level - 1)]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            # ``from pkg import sub`` imports the submodule when one exists, else a name of ``pkg``.
            targets = [f"{prefix}.{alias.name}" for alias in node.names]
        for t in targets:
            r = _resolve(t, modules)
            if r:
                found.add(r)
    found.discard(module)
    return {m for m in found if m == PACKAGE or m.startswith(PACKAGE + ".")}


def import_graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def _is_package_init_edge(src: str, dst: str) -> bool:
    """A package's ``__init__`` re-exporting its own submodules is not a layering cycle."""
    return dst.startswith(src + ".")


def test_the_checker_sees_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_the_checker_reads_relative_and_deferred_imports(tmp_path):
    modules = {"graphspike_kd.x": tmp_path / "x.py", "graphspike_kd.y": tmp_path / "y.py",
               "graphspike_kd.z": tmp_path / "z.py", "graphspike_kd": tmp_path / "__init__.py"}
    src = tmp_path / "x.py"
    src.write_text("from . import y\ndef f():\n    from graphspike_kd.z import thing\n    import os\n")
    assert _imports("graphspike_kd.x", src, modules) == {"graphspike_kd.y", "graphspike_kd.z"}


def test_no_import_cycle():
    graph = import_graph()
    # Package __init__ modules that re-export their own submodules close no real loop: drop those edges
    # before looking for cycles (a submodule importing its parent package's public names would otherwise
    # always look circular).
    pruned = {src: {d for d in dsts if not _is_package_init_edge(src, d)} for src, dsts in graph.items()}
    assert _cycles(pruned) == []


def _domain(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


@pytest.mark.parametrize(
    "layer, forbidden",
    [("common", {"graph", "spiking", "benchmarks"}), ("graph", {"spiking", "benchmarks"}),
     ("spiking", {"graph", "benchmarks"})],
)
def test_layering(layer, forbidden):
    bad = sorted(
        f"{src} imports {dst}"
        for src, dsts in import_graph().items() if _domain(src) == layer
        for dst in dsts if _domain(dst) in forbidden
    )
    assert bad == []


@pytest.mark.parametrize(
    "module", ["graphspike_kd.graph.pkd", "graphspike_kd.spiking.esd", "graphspike_kd.spiking.timestep_kd"]
)
def test_distillation_terms_come_from_common_losses(module):
    assert any(dst.startswith("graphspike_kd.common.losses") for dst in import_graph()[module])


def test_no_kl_or_soft_target_math_outside_common():
    """The KL divergence is written once, in common.losses: no ``kl_div`` call in either domain."""
    offenders = []
    for name, path in _modules().items():
        if _domain(name) not in ("graph", "spiking"):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call):
                fn = node.func
                called = fn.attr if isinstance(fn, ast.Attribute) else getattr(fn, "id", "")
                if called in ("kl_div", "kl_divergence"):
                    offenders.append(f"{name}:{node.lineno}")
    assert offenders == []
