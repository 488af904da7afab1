"""CuPy side of the kernels: availability probe, NVRTC compile cache, and launches on torch's stream.

CuPy is imported lazily, inside the functions that need it, and import failures are reported with their
real text (never "CuPy is not installed" for an unrelated error). Nothing here runs on CPU tensors.
"""

from __future__ import annotations

import threading
from functools import lru_cache
from typing import Any

import numpy as np
import torch

from graphspike_kd.spiking.kernels.sources import (
    COMPILE_OPTIONS,
    THREADS_PER_BLOCK,
    KernelConfig,
    kernel_source,
)

_PROBE_KERNEL = r"""
extern "C" __global__ void gskd_probe(float* out) { out[threadIdx.x] = 2.0f * threadIdx.x; }
"""


@lru_cache(maxsize=1)
def cupy_status() -> tuple[bool, str]:
    """Whether the CuPy kernels can run here, and why not.

    ``(True, "...")`` only if CuPy imports, a CUDA device is usable and NVRTC compiles a probe kernel;
    otherwise ``(False, reason)`` with the real cause (the ``ImportError`` text, "no CUDA device", the
    driver or NVRTC error). The probe runs once per process.
    """
    try:
        import cupy
    except Exception as exc:  # report any import failure as it is
        return False, (
            f"cupy failed to import ({type(exc).__name__}: {exc}); install the extra "
            "`pip install graphspike_kd[gpu]` (cupy-cuda12x) matching your CUDA driver"
        )
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:
        return False, f"cupy {cupy.__version__} cannot use CUDA: {type(exc).__name__}: {exc}"
    if count == 0:
        return False, "no CUDA device (cupy.cuda.runtime.getDeviceCount() == 0)"
    try:
        nvrtc_version = cupy.cuda.nvrtc.getVersion()
        module = cupy.RawModule(code=_PROBE_KERNEL, options=("--std=c++17",))
        module.get_function("gskd_probe")
    except Exception as exc:
        return False, f"NVRTC cannot compile with cupy {cupy.__version__}: {type(exc).__name__}: {exc}"
    if not torch.cuda.is_available():
        return False, "cupy sees a CUDA device but torch.cuda.is_available() is False (CPU build of torch?)"
    return True, (
        f"cupy {cupy.__version__}, NVRTC {nvrtc_version[0]}.{nvrtc_version[1]}, {count} CUDA device(s)"
    )


def require_cupy() -> Any:
    """Return the ``cupy`` module, or raise ``RuntimeError`` with the reason the kernels cannot run."""
    ok, reason = cupy_status()
    if not ok:
        raise RuntimeError(
            f"the CuPy neuron kernels cannot run: {reason}. Use backend='torch' (runs everywhere) instead."
        )
    import cupy

    return cupy


_MODULES: dict[tuple[int, KernelConfig], Any] = {}
_LOCK = threading.Lock()


def get_kernel(config: KernelConfig, name: str, device_index: int) -> Any:
    """The compiled ``cupy.RawKernel`` ``name`` of ``config`` on device ``device_index`` (cached)."""
    cupy = require_cupy()
    key = (device_index, config)
    with _LOCK:
        module = _MODULES.get(key)
        if module is None:
            with cupy.cuda.Device(device_index):
                module = cupy.RawModule(
                    code=kernel_source(), options=COMPILE_OPTIONS, name_expressions=list(config.names)
                )
                try:
                    for kernel_name in config.names:  # compile and load now, inside this device
                        module.get_function(kernel_name)
                except Exception as exc:
                    raise RuntimeError(
                        f"NVRTC failed to compile the neuron kernels for {config} with options "
                        f"{COMPILE_OPTIONS}: {exc}"
                    ) from exc
            _MODULES[key] = module
    return module.get_function(name)


def _ptr(tensor: torch.Tensor | None) -> np.uint64:
    return np.uint64(0 if tensor is None else tensor.data_ptr())


def _launch(kernel: Any, device: torch.device, blocks: int, args: tuple) -> None:
    cupy = require_cupy()
    torch_stream = torch.cuda.current_stream(device)
    if hasattr(cupy.cuda.Stream, "from_external"):  # cupy >= 14
        stream = cupy.cuda.Stream.from_external(torch_stream)
    else:
        stream = cupy.cuda.ExternalStream(torch_stream.cuda_stream, device.index)
    with cupy.cuda.Device(device.index), stream:
        kernel((blocks,), (THREADS_PER_BLOCK,), args)


def _blocks(n: int) -> int:
    return (n + THREADS_PER_BLOCK - 1) // THREADS_PER_BLOCK


class CupyLauncher:
    """Launches the kernels for CUDA tensors (all contiguous, checked by the caller)."""

    def forward(
        self,
        config: KernelConfig,
        x: torch.Tensor,
        v_init: torch.Tensor,
        decay: torch.Tensor,
        spikes: torch.Tensor,
        h_seq: torch.Tensor | None,
        v_last: torch.Tensor,
        *,
        v_threshold: float,
        v_reset: float,
    ) -> None:
        steps, n = x.shape[0], v_init.numel()
        if n == 0:
            return
        kernel = get_kernel(config, config.forward_name, x.device.index)
        args = (
            _ptr(x), _ptr(v_init), _ptr(decay), _ptr(spikes), _ptr(h_seq), _ptr(v_last),
            np.float32(v_threshold), np.float32(v_reset), np.int64(steps), np.int64(n),
        )
        _launch(kernel, x.device, _blocks(n), args)

    def backward(
        self,
        config: KernelConfig,
        grad_spikes: torch.Tensor,
        grad_v_last: torch.Tensor,
        h_seq: torch.Tensor,
        x: torch.Tensor | None,
        v_init: torch.Tensor | None,
        decay: torch.Tensor,
        grad_x: torch.Tensor,
        grad_v_init: torch.Tensor,
        *,
        v_threshold: float,
        v_reset: float,
        alpha: float,
        decay_grad: bool,
    ) -> torch.Tensor:
        """Fill grad_x / grad_v_init; return dL/dk as a 0-dim fp32 tensor (zero unless ``decay_grad``)."""
        steps, n = h_seq.shape[0], grad_v_init.numel()
        if n == 0:
            return torch.zeros((), dtype=torch.float32, device=h_seq.device)
        blocks = _blocks(n)
        partial = torch.empty(blocks if decay_grad else 0, dtype=torch.float32, device=h_seq.device)
        kernel = get_kernel(config, config.backward_name(decay_grad), h_seq.device.index)
        args = (
            _ptr(grad_spikes), _ptr(grad_v_last), _ptr(h_seq), _ptr(x), _ptr(v_init), _ptr(decay),
            _ptr(grad_x), _ptr(grad_v_init), _ptr(partial if decay_grad else None),
            np.float32(v_threshold), np.float32(v_reset), np.float32(alpha), np.int64(steps), np.int64(n),
        )
        _launch(kernel, h_seq.device, blocks, args)
        if not decay_grad:
            return torch.zeros((), dtype=torch.float32, device=h_seq.device)
        return partial.sum()
