"""Package-level checks: import cost and the declared layout."""

from __future__ import annotations

import subprocess
import sys


def test_import_is_light():
    # Importing the top-level package must not pull in torch-geometric or transformers.
    code = (
        "import sys, graphspike_kd; "
        "heavy = [m for m in ('torch_geometric', 'transformers', 'sentence_transformers', 'cupy') "
        "if m in sys.modules]; print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_subpackages_have_docstrings():
    import importlib

    for name in ("graphspike_kd", "graphspike_kd.common", "graphspike_kd.graph", "graphspike_kd.spiking",
                 "graphspike_kd.benchmarks"):
        module = importlib.import_module(name)
        assert module.__doc__ and len(module.__doc__.strip()) > 40, name


def test_common_does_not_import_the_domains():
    code = (
        "import sys, graphspike_kd.common, graphspike_kd.common.losses; "
        "print([m for m in sys.modules if m.startswith(('graphspike_kd.graph', 'graphspike_kd.spiking'))])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
