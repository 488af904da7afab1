"""How the native CPU kernel is built, cached and loaded: key, planted libraries, private cache, compile.

The subprocess tests build the library into a fresh cache (about 15 s each) so that they see what a new
machine or a new process sees.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from graphspike_kd._cache import CACHE_ENV
from graphspike_kd.spiking import native

ROOT = Path(__file__).resolve().parents[2]
needs_compiler = pytest.mark.skipif(shutil.which(os.environ.get("CXX", "c++")) is None,
                                    reason="no C++ compiler on PATH")


def _run(code: str, cache: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, CACHE_ENV: str(cache), "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          env=env, cwd=ROOT, timeout=timeout)


def test_build_key_covers_source_compiler_flags_torch_and_cpu(monkeypatch, tmp_path):
    if shutil.which(native._compiler()) is None:
        pytest.skip("no C++ compiler on PATH")
    base = native.build_key()
    assert base == native.build_key() and len(base) == 64
    monkeypatch.setattr(native, "_cpu_signature", lambda: "x86_64 sse sse2 avx avx2 avx512f")
    other_cpu = native.build_key()
    monkeypatch.setattr(native, "_cpu_signature", lambda: "x86_64 sse sse2 avx avx2")
    assert native.build_key() != other_cpu  # an older CPU (no avx512f) never gets the newer one's binary
    monkeypatch.undo()
    monkeypatch.setattr(torch, "__version__", "0.0.1")
    assert native.build_key() != base
    monkeypatch.undo()
    monkeypatch.setattr(native, "_compiler_identity", lambda compiler: "/opt/other/g++ g++ (GCC) 99.1")
    assert native.build_key() != base
    monkeypatch.undo()
    monkeypatch.setattr(native, "FLAGS", (*native.FLAGS, "-funroll-loops"))
    assert native.build_key() != base
    monkeypatch.undo()
    edited = tmp_path / "neuron_cpu.cpp"
    edited.write_text(native.SOURCE.read_text() + "\n// edited\n")
    monkeypatch.setattr(native, "SOURCE", edited)
    assert native.build_key() != base


def test_cpu_signature_lists_instruction_set_flags():
    sig = native._cpu_signature()
    assert sig.split()[0] == __import__("platform").machine()
    if Path("/proc/cpuinfo").exists() and "flags" in Path("/proc/cpuinfo").read_text():
        assert "sse2" in sig.split() or "fpu" in sig.split()


def test_cache_writable_by_others_is_refused(monkeypatch, tmp_path):
    if os.name != "posix":
        pytest.skip("POSIX permissions")
    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    folder = native.native_cache_dir()
    assert native._private_dir(folder) == folder and (folder.stat().st_mode & 0o077) == 0  # created 0700
    folder.chmod(0o777)
    with pytest.raises(RuntimeError, match="writable by group/others"):
        native.build_native_library()
    folder.chmod(0o700)


@needs_compiler
@pytest.mark.slow
def test_planted_library_is_refused_and_rebuilt(monkeypatch, tmp_path):
    """A library at the expected name without a matching recorded hash is never loaded: its code (a
    constructor that writes a marker file) does not run, and a genuine build replaces it."""
    cc = shutil.which("cc") or shutil.which("gcc") or native._compiler()
    marker = tmp_path / "planted_code_ran"
    evil_c = tmp_path / "evil.c"
    evil_c.write_text(textwrap.dedent(f"""
        #include <stdio.h>
        __attribute__((constructor)) static void run(void) {{
          FILE* f = fopen("{marker}", "w");
          if (f) {{ fputs("ran", f); fclose(f); }}
        }}
        int gsk_neuron_forward_f32(void) {{ return 0; }}
    """))
    cache = tmp_path / "cache"
    monkeypatch.setenv(CACHE_ENV, str(cache))
    key = native.build_key()  # the same key the subprocess computes
    folder = native._private_dir(native.native_cache_dir())
    target = folder / f"gsk_neuron_cpu_{key[:24]}.so"
    subprocess.run([cc, "-shared", "-fPIC", str(evil_c), "-o", str(target)], check=True)
    planted_sha = hashlib.sha256(target.read_bytes()).hexdigest()
    # a forged manifest with the wrong hash does not help either
    target.with_suffix(".json").write_text(json.dumps({"key": key, "sha256": "0" * 64}))

    check = """
        import torch
        from graphspike_kd.spiking import native
        from graphspike_kd.spiking.neurons import LIF
        ok, path = native.cpp_status()
        assert ok, path
        x = torch.rand(6, 3, 50, generator=torch.Generator().manual_seed(0)) * 1.5
        assert torch.equal(LIF(backend="cpp")(x), LIF()(x))
        print("PATH", path)
    """
    first = _run(check, cache)
    assert first.returncode == 0, first.stderr[-3000:]
    assert not marker.exists(), "the planted library's code ran"
    assert f"PATH {target}" in first.stdout
    assert "compiling the native CPU neuron kernel" in first.stderr  # rebuilt, with the one-line message
    record = json.loads(target.with_suffix(".json").read_text())
    assert record["key"] == key and record["sha256"] == hashlib.sha256(target.read_bytes()).hexdigest()
    assert record["sha256"] != planted_sha
    assert sorted(p.name for p in folder.iterdir()) == sorted([target.name, target.with_suffix(".json").name])

    second = _run(check, cache)  # the verified build is reused: no compile
    assert second.returncode == 0, second.stderr[-3000:]
    assert "compiling" not in second.stderr and not marker.exists()


@needs_compiler
@pytest.mark.slow
def test_torch_compile_fullgraph_cpp_on_first_use_in_a_fresh_process(tmp_path):
    code = """
        import torch
        from graphspike_kd.spiking.neurons import LIF, PLIF
        gen = torch.Generator().manual_seed(0)
        x = (torch.rand(8, 4, 300, generator=gen) * 1.5)
        for make in (lambda b: LIF(v_reset=0.0, backend=b), lambda b: PLIF(backend=b)):
            compiled = torch.compile(make("cpp"), fullgraph=True)  # the first cpp use of the process
            xc = x.clone().requires_grad_()
            s = compiled(xc)
            (s * torch.linspace(-1, 1, 8).view(8, 1, 1)).sum().backward()
            ref_neuron = make("torch")
            xr = x.clone().requires_grad_()
            r = ref_neuron(xr)
            (r * torch.linspace(-1, 1, 8).view(8, 1, 1)).sum().backward()
            assert torch.equal(s, r) and 0 < s.mean() < 1
            torch.testing.assert_close(xc.grad, xr.grad, rtol=1e-5, atol=1e-6)
            params = list(compiled.parameters())
            for p, q in zip(params, ref_neuron.parameters(), strict=True):
                torch.testing.assert_close(p.grad, q.grad, rtol=1e-5, atol=1e-5)
        print("OK")
    """
    proc = _run(code, tmp_path / "cache")
    assert proc.returncode == 0 and "OK" in proc.stdout, proc.stderr[-4000:]
