"""The CUDA sources shipped with the package and the names of the kernels instantiated from them.

The kernels live in ``.cu`` / ``.cuh`` files next to this module (package data) so compilers, editors and
tests can use them directly. This module knows where they are, how to hand them to NVRTC (quoted local
includes are inlined, so CuPy's on-disk cache, which keys on the source text, sees header edits too), and
which template instances one configuration needs. The surrogate ids come from the surrogate classes
(:mod:`graphspike_kd.spiking.surrogate`); it imports no CuPy.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from graphspike_kd.spiking.surrogate import CUDA_SURROGATES, KERNEL_IDS, get_surrogate

KERNEL_DIR = Path(__file__).resolve().parent
HEADER_FILE = KERNEL_DIR / "neuron_math.cuh"
KERNEL_FILE = KERNEL_DIR / "neuron_multistep.cu"
HOST_HARNESS_FILE = KERNEL_DIR / "host_harness.cpp"

#: Threads per block; the kernels are compiled with ``-DGSKD_THREADS`` equal to this.
THREADS_PER_BLOCK = 256

#: Surrogate name -> (id in ``neuron_math.cuh``'s ``SurrogateKind``, default ``alpha``), for the surrogates
#: the CUDA kernels inline; built from the surrogate classes' ``kernel_id`` and ``default_alpha``.
SURROGATES: dict[str, tuple[int, float]] = {
    name: (KERNEL_IDS[name], get_surrogate(name).alpha)
    for name in sorted(CUDA_SURROGATES, key=KERNEL_IDS.__getitem__)
}

#: Storage dtype name -> C++ type in ``neuron_multistep.cu``.
STORAGE_TYPES: dict[str, str] = {"float32": "float", "float16": "gskd_half"}

_LOCAL_INCLUDE = re.compile(r'^[ \t]*#[ \t]*include[ \t]+"([^"]+)"[ \t]*$', re.MULTILINE)
_PRAGMA_ONCE = re.compile(r"^[ \t]*#[ \t]*pragma[ \t]+once[ \t]*$", re.MULTILINE)


def surrogate_id(name: str) -> int:
    """Id of the surrogate ``name`` in the kernels; ``ValueError`` listing the supported names otherwise."""
    try:
        return SURROGATES[name][0]
    except KeyError:
        raise ValueError(
            f"unknown surrogate {name!r} for the CuPy kernels; supported: {sorted(SURROGATES)}"
        ) from None


def assemble_source(path: Path = KERNEL_FILE) -> str:
    """``path`` with each ``#include "local.cuh"`` replaced by that file's text (recursively, once each)."""
    seen: set[Path] = set()

    def expand(file: Path) -> str:
        file = file.resolve()
        if file in seen:  # every header has #pragma once; inline it once
            return ""
        seen.add(file)
        if not file.is_file():
            raise FileNotFoundError(f"CUDA source {file} is missing from the graphspike_kd installation")
        text = _PRAGMA_ONCE.sub("", file.read_text(encoding="utf-8"))  # inlined once by construction

        def substitute(match: re.Match[str]) -> str:
            return f"// ---- begin {match.group(1)} ----\n{expand(file.parent / match.group(1))}\n" \
                f"// ---- end {match.group(1)} ----"

        return _LOCAL_INCLUDE.sub(substitute, text)

    return expand(path)


@lru_cache(maxsize=1)
def kernel_source() -> str:
    """The NVRTC-ready text of ``neuron_multistep.cu`` (header inlined), read once per process."""
    return assemble_source(KERNEL_FILE)


def _b(flag: bool) -> str:
    return "true" if flag else "false"


@dataclass(frozen=True)
class KernelConfig:
    """One compiled configuration: storage dtype, surrogate and the three flags."""

    dtype: str  # "float32" | "float16"
    surrogate: str
    hard_reset: bool
    detach_reset: bool
    decay_input: bool

    def __post_init__(self) -> None:
        if self.dtype not in STORAGE_TYPES:
            raise ValueError(f"the CuPy kernels support {sorted(STORAGE_TYPES)}, got dtype {self.dtype!r}")
        surrogate_id(self.surrogate)

    @property
    def forward_name(self) -> str:
        storage = STORAGE_TYPES[self.dtype]
        return f"gskd_neuron_forward<{storage}, {_b(self.hard_reset)}, {_b(self.decay_input)}>"

    def backward_name(self, decay_grad: bool) -> str:
        return (
            f"gskd_neuron_backward<{STORAGE_TYPES[self.dtype]}, {surrogate_id(self.surrogate)}, "
            f"{_b(self.hard_reset)}, {_b(self.detach_reset)}, {_b(self.decay_input)}, {_b(decay_grad)}>"
        )

    @property
    def names(self) -> tuple[str, ...]:
        """Every kernel this configuration needs (forward, backward with and without dL/dk)."""
        return (self.forward_name, self.backward_name(False), self.backward_name(True))


def all_configs() -> list[KernelConfig]:
    """Every configuration the runtime can ask for (used by the nvcc test to compile them all)."""
    return [
        KernelConfig(dtype, surrogate, hard, detach, decay_input)
        for dtype in STORAGE_TYPES
        for surrogate in SURROGATES
        for hard in (False, True)
        for detach in (False, True)
        for decay_input in (False, True)
    ]


#: NVRTC options: no FMA contraction (bit-identical to a torch step loop), no fast math (no flush of
#: denormals, accurate expf), the block size the launcher uses.
COMPILE_OPTIONS: tuple[str, ...] = ("--std=c++17", "--fmad=false", f"-DGSKD_THREADS={THREADS_PER_BLOCK}")
