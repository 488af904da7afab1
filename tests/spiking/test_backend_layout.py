"""The neuron backend's shape: one way down, one custom-op family, one surrogate table.

``neurons`` -> ``functional`` (the dispatch) -> leaves (``torch_loop``, ``native``, ``kernels``); the
surrogate classes' ``kernel_id`` is the table the C++ and CUDA sources must agree with.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import torch

import graphspike_kd
from graphspike_kd.spiking import functional, neurons
from graphspike_kd.spiking.surrogate import CUDA_SURROGATES, KERNEL_IDS, available_surrogates, get_surrogate

PACKAGE_DIR = Path(graphspike_kd.__file__).resolve().parent
SPIKING = PACKAGE_DIR / "spiking"
#: the modules of the neuron backend
BACKEND_MODULES = ["neurons", "functional", "torch_loop", "native", "surrogate", "kernels", "kernels.ops",
                   "kernels.sources", "kernels.cupy_backend", "ratebp", "interop"]


def _path(module: str) -> Path:
    path = SPIKING / (module.replace(".", "/") + ".py")
    return path if path.exists() else SPIKING / module.replace(".", "/") / "__init__.py"


def _imports(module: str) -> list[tuple[str, list[str], bool]]:
    """``(imported module, imported names, at module level)`` for every ``graphspike_kd`` import."""
    tree = ast.parse(_path(module).read_text(encoding="utf-8"))
    top = set(map(id, tree.body))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("graphspike_kd"):
            names = [a.name for a in node.names]
            if node.module == "graphspike_kd.spiking":  # `from graphspike_kd.spiking import native`
                found += [(f"graphspike_kd.spiking.{n}", [], id(node) in top) for n in names]
            else:
                found.append((node.module, names, id(node) in top))
        elif isinstance(node, ast.Import):
            found += [(a.name, [], id(node) in top) for a in node.names if a.name.startswith("graphspike_kd")]
    return found


def _local(name: str) -> str | None:
    prefix = "graphspike_kd.spiking."
    return name[len(prefix):] if name.startswith(prefix) else None


def test_backend_imports_go_one_way_down_without_deferred_or_private_imports():
    graph: dict[str, set[str]] = {}
    for module in BACKEND_MODULES:
        graph[module] = set()
        for target, names, top_level in _imports(module):
            assert top_level, f"spiking/{module}: deferred import of {target} inside a function"
            assert not [n for n in names if n.startswith("_")], f"spiking/{module} imports private {names}"
            local = _local(target)
            if local is not None:
                graph[module].add(local)
    # no cycle (depth-first search over the backend modules)
    state: dict[str, int] = {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in graph.get(node, ()):
            assert state.get(nxt) != 1, f"import cycle: {' -> '.join([*stack, node, nxt])}"
            if nxt in graph and nxt not in state:
                visit(nxt, [*stack, node])
        state[node] = 2

    for module in graph:
        if module not in state:
            visit(module, [])
    # the layering: neurons -> functional -> leaves; leaves never reach back up
    assert graph["neurons"] == {"functional", "surrogate"}
    assert {"torch_loop", "native", "kernels", "kernels.ops"} & graph["functional"]
    for leaf in ("torch_loop", "native", "kernels", "kernels.ops", "kernels.sources", "kernels.cupy_backend"):
        assert not {"functional", "neurons"} & graph[leaf], f"{leaf} imports {graph[leaf]}"


def test_one_custom_op_family():
    import graphspike_kd.spiking.kernels  # noqa: F401  (everything that could register an op is loaded)
    import graphspike_kd.spiking.native  # noqa: F401

    ns = torch.ops.graphspike_kd
    assert torch.ops.graphspike_kd.neuron_forward.default is not None
    assert torch.ops.graphspike_kd.neuron_backward.default is not None
    for gone in ("neuron_multistep_forward", "neuron_multistep_backward"):
        assert not hasattr(ns, gone), f"a second op family graphspike_kd::{gone} is registered"
    assert functional.IMPLS == ("torch", "cpp", "cupy")  # every backend is an implementation of that op
    with pytest.raises(ValueError, match="impl must be one of"):
        functional.neuron_forward(torch.zeros(2, 3), torch.zeros(3), torch.tensor(0.5), 1.0, None, True,
                                  False, "sigmoid", 4.0, "fortran", False)


def _enum(text: str, pattern: str) -> dict[str, int]:
    return {name: int(value) for name, value in re.findall(pattern, text)}


_CPP_NAMES = {"Sigmoid": "sigmoid", "ATan": "atan", "Rectangle": "rectangle", "Triangle": "triangle",
              "FastSigmoid": "fast_sigmoid", "Erf": "erf"}


def test_native_source_surrogate_enum_equals_the_classes():
    source = (SPIKING / "csrc" / "neuron_cpu.cpp").read_text(encoding="utf-8")
    body = re.search(r"enum Surrogate \{([^}]*)\}", source)
    assert body is not None, "neuron_cpu.cpp lost its `enum Surrogate`"
    enum = _enum(body.group(1), r"k(\w+) = (\d+)")
    assert {_CPP_NAMES[k]: v for k, v in enum.items()} == KERNEL_IDS
    assert set(KERNEL_IDS) == set(available_surrogates())  # every surrogate has a native kernel
    # the dispatch switch handles every id
    assert set(re.findall(r"case k(\w+):", source)) == set(enum)


def test_cuda_header_surrogate_enum_equals_the_classes():
    header = (SPIKING / "kernels" / "neuron_math.cuh").read_text(encoding="utf-8")
    body = re.search(r"enum SurrogateKind : int \{([^}]*)\}", header)
    assert body is not None, "neuron_math.cuh lost its `enum SurrogateKind`"
    enum = {_CPP_NAMES[k]: v for k, v in _enum(body.group(1), r"k(\w+) = (\d+)").items()}
    assert enum == {name: KERNEL_IDS[name] for name in CUDA_SURROGATES}
    for name in available_surrogates():
        assert get_surrogate(name).has_cuda_kernel == (name in enum)


def test_neurons_run_through_the_dispatch(monkeypatch):
    calls = []
    run = functional.run_multistep

    def spy(x_seq, v_init, decay, cfg, backend="torch", who="neuron_multistep"):
        calls.append((backend, who))
        return run(x_seq, v_init, decay, cfg, backend, who)

    monkeypatch.setattr(neurons, "run_multistep", spy)
    neurons.LIF()(torch.rand(3, 4))
    assert calls == [("torch", "LIF")]
