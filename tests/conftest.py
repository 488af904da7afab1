"""Shared pytest configuration: ``gpu`` tests are skipped, with the reason, where no CUDA device exists."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture
def single_thread():
    """Run a test with one torch intra-op thread (tiny models: thread hand-off costs more than it saves)."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def load_benchmark_script():
    """Import a script of ``benchmarks/`` (a folder of scripts, not a package) as a module, by file stem."""

    def load(stem: str) -> ModuleType:
        spec = importlib.util.spec_from_file_location(f"benchmarks_{stem}", BENCHMARKS / f"{stem}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    return load


def _cuda_reason() -> str | None:
    try:
        import torch
    except ImportError as exc:  # torch is a hard dependency; say so plainly if it is missing
        return f"torch is not importable: {exc}"
    if not torch.cuda.is_available():
        return "needs a CUDA device (torch.cuda.is_available() is False)"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    reason = _cuda_reason()
    if reason is None:
        return
    skip_gpu = pytest.mark.skip(reason=reason)
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)
