"""``nvcc -ptx`` compiles every shipped ``.cu`` for sm_80 and sm_90, with every kernel the runtime uses.

The translation unit includes the ``.cu`` and takes the address of each name expression from
``sources.kernel_names`` / ``all_configs`` (exactly the strings handed to NVRTC), which instantiates every
template the CuPy launcher can ask for. Two nvcc processes run in parallel: sm_80 compiles the
file as shipped, sm_90 the NVRTC-ready text (header inlined by ``assemble_source``), so both the file and
the string CuPy compiles are checked while nvcc (slow) runs only twice.
"""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from graphspike_kd.spiking.kernels.sources import (
    COMPILE_OPTIONS,
    KERNEL_DIR,
    all_configs,
    assemble_source,
)

#: NVVM's optimiser off: front end, template instantiation, inline PTX and code generation are all checked
#: in a quarter of the time (the optimised build is what NVRTC does at run time, in the gpu tests).
FAST = ("-Xcicc", "-O0")


def _instances() -> list[str]:
    return sorted({name for config in all_configs() for name in config.names})


def _translation_unit(include: str) -> str:
    lines = [include, "void* gskd_all_instances[] = {"]
    lines += [f"    (void*)&{name}," for name in _instances()]
    lines.append("};")
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def nvcc() -> str:
    path = shutil.which("nvcc")
    if path is None:
        pytest.skip("nvcc is not on PATH (install the CUDA toolkit to compile the kernels ahead of time)")
    return path


def test_every_config_has_distinct_kernel_names():
    configs = all_configs()
    assert len(configs) == 2 * 5 * 2 * 2 * 2
    backward = {config.backward_name(flag) for config in configs for flag in (False, True)}
    forward = {config.forward_name for config in configs}
    assert len(backward) == 2 * 5 * 2 * 2 * 2 * 2 and len(forward) == 2 * 2 * 2


def test_nvcc_ptx_compiles_every_cu_for_sm80_and_sm90(nvcc, tmp_path):
    """sm_80 compiles the file as shipped (header found by #include); sm_90 compiles the NVRTC text."""
    cu_files = sorted(KERNEL_DIR.glob("*.cu"))
    assert cu_files, f"no .cu files in {KERNEL_DIR}"
    jobs = []
    for cu in cu_files:
        shipped = tmp_path / f"shipped_{cu.stem}.cu"
        shipped.write_text(_translation_unit(f'#include "{cu}"'))
        # the NVRTC text: the .cu with its header inlined, compiled from a directory without the header
        assembled = tmp_path / "nvrtc" / f"assembled_{cu.stem}.cu"
        assembled.parent.mkdir(exist_ok=True)
        assembled.write_text(_translation_unit(assemble_source(cu)))
        for unit, arch in ((shipped, "sm_80"), (assembled, "sm_90")):
            out = tmp_path / f"{unit.stem}_{arch}.ptx"
            cmd = [nvcc, "-ptx", f"-arch={arch}", *COMPILE_OPTIONS, *FAST, "-Werror", "all-warnings",
                   str(unit), "-o", str(out)]
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            jobs.append((cmd, out, proc))
    for cmd, out, proc in jobs:
        _, stderr = proc.communicate(timeout=600)
        assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{stderr}"
        ptx = out.read_text()
        entries = re.findall(r"^\.visible \.entry (\S+)\(", ptx, flags=re.MULTILINE)
        expected = len(_instances())
        assert len(entries) == expected, f"{out.name}: {len(entries)} kernels, expected {expected}"
        target = re.search(r"^\.target (sm_\d+)", ptx, flags=re.MULTILINE)
        assert target is not None and target.group(1) in out.name
