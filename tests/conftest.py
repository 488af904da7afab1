"""Shared pytest configuration: ``gpu`` tests are skipped, with the reason, where no CUDA device exists."""

from __future__ import annotations

import pytest


@pytest.fixture
def single_thread():
    """Run a test with one torch intra-op thread (tiny models: thread hand-off costs more than it saves)."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


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
