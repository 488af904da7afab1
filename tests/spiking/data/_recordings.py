"""Test helpers for AEDAT 2.0: the real DVS128 recordings when the user has them, spikingjelly's decoder.

The two real recordings are not distributed (no licence); tests that use them call :func:`real_recording`,
which skips with the reason (and where to put the files) when they are absent.
"""

from __future__ import annotations

import ast
import importlib.util
import logging
import typing
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from graphspike_kd.spiking.data import sample_recording
from graphspike_kd.spiking.data.samples import DATA_ENV, FOLDER

#: The functions of ``spikingjelly/datasets/cifar10_dvs.py`` that decode an original CIFAR10-DVS ``.aedat``.
_SJ_FUNCTIONS = ("_read_bits", "_skip_header", "_load_raw_events", "_parse_raw_address", "_load_events",
                 "_load_origin_data")


def real_recording(name: str) -> Path:
    """Path of a verified real recording, or skip the test saying where the file is expected."""
    try:
        return sample_recording(name)
    except FileNotFoundError:
        pytest.skip(f"real DVS128 recording {name} absent (not distributed, no licence): put it in "
                    f"${DATA_ENV}/{FOLDER}/ to run this test (see data/{FOLDER}/SOURCE.md)")


def spikingjelly_load_origin_data() -> Callable[[Path], dict]:
    """spikingjelly 2.0's own ``_load_origin_data`` (CIFAR10-DVS ``.aedat`` decoder), or skip the test.

    ``spikingjelly.datasets`` imports torchvision at package import; where torchvision is missing, the
    decoder's functions (and the module constants they use) are taken from the installed
    ``cifar10_dvs.py`` source unchanged and executed with numpy.
    """
    try:
        from spikingjelly.datasets.cifar10_dvs import _load_origin_data

        return _load_origin_data
    except Exception:  # noqa: BLE001 - any failure of the package import: use the module's source below
        pass
    spec = importlib.util.find_spec("spikingjelly")
    if spec is None or spec.origin is None:
        pytest.skip("spikingjelly is not installed")
    source_path = Path(spec.origin).parent / "datasets" / "cifar10_dvs.py"
    if not source_path.is_file():
        pytest.skip(f"spikingjelly has no {source_path}")
    tree = ast.parse(source_path.read_text())
    keep = [node for node in tree.body
            if (isinstance(node, ast.FunctionDef) and node.name in _SJ_FUNCTIONS)
            or (isinstance(node, ast.Assign) and all(isinstance(t, ast.Name) for t in node.targets)
                and isinstance(node.value, (ast.Constant, ast.UnaryOp)))]
    found = {node.name for node in keep if isinstance(node, ast.FunctionDef)}
    if found != set(_SJ_FUNCTIONS):
        pytest.skip(f"{source_path} lacks {sorted(set(_SJ_FUNCTIONS) - found)}")
    namespace = {"np": np, "logger": logging.getLogger("spikingjelly"), "Path": Path,
                 **{name: getattr(typing, name) for name in ("Callable", "Optional", "Tuple", "Union")}}
    exec(compile(ast.Module(body=keep, type_ignores=[]), str(source_path), "exec"), namespace)
    return namespace["_load_origin_data"]
