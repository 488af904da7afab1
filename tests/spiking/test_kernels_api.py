"""Public surface of graphspike_kd.spiking.kernels without a GPU: status, errors, sources."""

from __future__ import annotations

import ast
import re
import sys

import pytest
import torch

from graphspike_kd.spiking.functional import neuron_multistep_cupy
from graphspike_kd.spiking.kernels import SURROGATES, cupy_status
from graphspike_kd.spiking.kernels.cupy_backend import require_cupy
from graphspike_kd.spiking.kernels.sources import (
    HEADER_FILE,
    KERNEL_DIR,
    KERNEL_FILE,
    KernelConfig,
    assemble_source,
    surrogate_id,
)

OPTS = dict(v_threshold=1.0, v_reset=None, decay_input=True, detach_reset=False, surrogate_name="sigmoid",
            alpha=4.0)

needs_no_gpu = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the behaviour without a GPU")


@needs_no_gpu
def test_cupy_status_false_with_real_reason():
    ok, reason = cupy_status()
    assert ok is False
    assert reason and "not installed" not in reason.lower()
    try:
        import cupy  # noqa: F401
    except Exception as exc:  # the reason is the import error itself
        assert str(exc) in reason
    else:  # cupy imports: the reason is the CUDA / NVRTC failure, naming cupy's version
        assert cupy.__version__ in reason and ("CUDA" in reason or "NVRTC" in reason)


@needs_no_gpu
def test_require_cupy_raises_with_the_status_reason():
    _, reason = cupy_status()
    with pytest.raises(RuntimeError, match="cannot run") as info:
        require_cupy()
    assert reason in str(info.value) and "backend='torch'" in str(info.value)


def test_cpu_tensors_are_rejected_clearly():
    x, v0 = torch.zeros(3, 4), torch.zeros(4)
    with pytest.raises(RuntimeError, match=r"needs CUDA tensors, got x_seq on cpu; use backend='torch'"):
        neuron_multistep_cupy(x, v0, torch.tensor(0.5), **OPTS)


def test_ops_without_launcher_for_cpu_raise():
    from graphspike_kd.spiking.kernels import ops

    assert "cpu" not in ops.LAUNCHERS
    with pytest.raises(RuntimeError, match="CUDA tensors only"):
        ops.cupy_forward(torch.zeros(2, 3), torch.zeros(3), torch.tensor(0.5), 1.0, None, True, False,
                         "sigmoid", 4.0, False)


def test_cupy_is_imported_lazily():
    """No module of the package imports cupy at module level (only inside functions)."""
    for path in sorted(KERNEL_DIR.glob("*.py")):
        tree = ast.parse(path.read_text())
        for node in tree.body:  # module-level statements only
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            assert not any(n == "cupy" or n.startswith("cupy.") for n in names), f"{path.name}: {names}"


def test_cpu_path_never_imports_cupy(monkeypatch):
    """With cupy made unimportable, the CPU call still fails with the CUDA message, not an import error."""
    monkeypatch.setitem(sys.modules, "cupy", None)  # any `import cupy` now raises ImportError
    with pytest.raises(RuntimeError, match="needs CUDA tensors"):
        neuron_multistep_cupy(torch.zeros(2, 3), torch.zeros(3), 0.5, **OPTS)


def test_surrogate_table_matches_header_enum():
    header = HEADER_FILE.read_text()
    enum = dict(re.findall(r"^\s*k(\w+) = (\d+),", header, flags=re.MULTILINE))
    names = {"Sigmoid": "sigmoid", "ATan": "atan", "Rectangle": "rectangle", "Triangle": "triangle",
             "FastSigmoid": "fast_sigmoid"}
    assert {names[k]: int(v) for k, v in enum.items()} == {n: i for n, (i, _) in SURROGATES.items()}
    assert {n: a for n, (_, a) in SURROGATES.items()} == {
        "sigmoid": 4.0, "atan": 2.0, "rectangle": 1.0, "triangle": 1.0, "fast_sigmoid": 25.0}


def test_unknown_surrogate_lists_supported():
    with pytest.raises(ValueError, match=r"unknown surrogate 'erf'.*\['atan', 'fast_sigmoid', 'rectangle'"):
        surrogate_id("erf")
    with pytest.raises(ValueError, match="supported"):
        KernelConfig("float32", "erf", False, False, True)
    with pytest.raises(ValueError, match="bfloat16"):
        KernelConfig("bfloat16", "atan", False, False, True)


def test_assembled_source_is_self_contained():
    text = assemble_source()
    assert '#include "' not in text and "#pragma once" not in text
    assert "namespace gskd" in text and "gskd_neuron_backward" in text
    assert text.count("struct Storage {") == 1
    assert KERNEL_FILE.read_text().count('#include "neuron_math.cuh"') == 1
    # no system headers reach NVRTC (which ships none): only the host branch includes <cmath>
    for line in text.splitlines():
        if line.lstrip().startswith("#include <"):
            assert line.strip() == "#include <cmath>"
    assert "#else\n#include <cmath>" in text
