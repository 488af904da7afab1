"""Without ninja or without a compiler the native build fails soft: ``backend="auto"`` runs the torch path
and says why in one line; an explicit ``backend="cpp"`` raises with that reason."""

from __future__ import annotations

import logging
import shutil
import sys

import pytest
import torch

from graphspike_kd._cache import CACHE_ENV
from graphspike_kd.spiking import functional, native
from graphspike_kd.spiking.neurons import LIF


@pytest.fixture
def fresh_native(monkeypatch, tmp_path):
    """An empty build cache and no library loaded yet in this process (as on a new machine)."""
    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    monkeypatch.setattr(native, "_library", None)
    monkeypatch.setattr(native, "_library_path", None)
    monkeypatch.setattr(functional, "_already_said", set())
    return tmp_path


def _hide_ninja(monkeypatch):
    real_which = shutil.which

    def which(name, mode=None, path=None):
        if name == "ninja":
            return None
        return real_which(name) if path is None else real_which(name, path=path)

    monkeypatch.setattr(native.shutil, "which", which)
    monkeypatch.setitem(sys.modules, "ninja", None)  # `import ninja` raises ImportError


def _check_fallback(caplog, words):
    x = torch.rand(3, 5, generator=torch.Generator().manual_seed(0)) * 2
    with caplog.at_level(logging.INFO, logger=functional.__name__):
        spikes = LIF(backend="auto")(x)
    assert torch.equal(spikes, LIF(backend="torch")(x))
    lines = [r.getMessage() for r in caplog.records if "backend='auto' chose 'torch'" in r.getMessage()]
    assert len(lines) == 1 and "\n" not in lines[0] and all(w in lines[0] for w in words), lines
    with pytest.raises(RuntimeError, match=words[0]):
        LIF(backend="cpp")(x)


def test_no_ninja_falls_back_with_a_one_line_reason(fresh_native, monkeypatch, caplog):
    _hide_ninja(monkeypatch)
    ok, why = native.cpp_status()
    assert not ok and "ninja" in why and "\n" not in why
    assert not any(p.suffix == ".so" for p in fresh_native.rglob("*"))  # nothing was compiled
    _check_fallback(caplog, ["ninja", "pip install ninja"])


def test_no_compiler_falls_back_with_a_one_line_reason(fresh_native, monkeypatch, caplog):
    monkeypatch.setenv("CXX", "graphspike-kd-no-such-compiler")
    ok, why = native.cpp_status()
    assert not ok and "graphspike-kd-no-such-compiler" in why and "\n" not in why
    _check_fallback(caplog, ["compiler", "graphspike-kd-no-such-compiler"])


def test_ninja_of_the_interpreter_is_used_when_not_on_path(monkeypatch, tmp_path):
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    ninja = fake_bin / "ninja"
    ninja.write_text("#!/bin/sh\necho 1.11.1\n")
    ninja.chmod(0o755)
    real_which = shutil.which
    monkeypatch.setattr(native.shutil, "which",
                        lambda name, mode=None, path=None: None if name == "ninja" and path is None
                        else real_which(name, path=path))
    monkeypatch.setattr(native.sys, "executable", str(fake_bin / "python"))
    monkeypatch.setitem(sys.modules, "ninja", None)
    assert native._ninja_dir() == str(fake_bin)
