"""Smoke check of an installed wheel, run from a folder outside the checkout by `.ci/run`.

It checks what a user of the wheel relies on: the package imports and reports the version of its metadata,
ships py.typed, every experiment CLI (`python -m graphspike_kd.benchmarks.<name>`) answers `--help`, a
shipped dataset loads from the package data, and no unlicensed data is in the wheel.
"""

from __future__ import annotations

import importlib.metadata
import os
import pkgutil
import subprocess
import sys
from pathlib import Path


def main() -> int:
    os.environ.pop("GRAPHSPIKE_KD_DATA", None)
    import graphspike_kd
    import graphspike_kd.benchmarks

    package = Path(graphspike_kd.__file__).resolve().parent
    if "site-packages" not in package.parts:
        raise SystemExit(f"graphspike_kd imported from {package}, not from an installed wheel")
    version = importlib.metadata.version("graphspike_kd")
    if graphspike_kd.__version__ != version:
        raise SystemExit(f"graphspike_kd.__version__ {graphspike_kd.__version__} != metadata {version}")
    if not (package / "py.typed").is_file():
        raise SystemExit("py.typed missing from the wheel")
    print(f"import graphspike_kd {version} from {package}")

    clis = sorted(m.name for m in pkgutil.iter_modules(graphspike_kd.benchmarks.__path__)
                  if not m.name.startswith("_"))
    for name in clis:
        out = subprocess.run([sys.executable, "-m", f"graphspike_kd.benchmarks.{name}", "--help"],
                             capture_output=True, text=True, timeout=300)
        if out.returncode != 0 or "usage:" not in out.stdout:
            raise SystemExit(f"python -m graphspike_kd.benchmarks.{name} --help failed "
                             f"(exit {out.returncode}):\n{out.stdout[-2000:]}{out.stderr[-2000:]}")
        print(f"python -m graphspike_kd.benchmarks.{name} --help: ok")

    from graphspike_kd.graph.datasets import load_tag_dataset

    data = load_tag_dataset("cora")
    if (data.num_nodes, int(data.edge_index.size(1))) != (2708, 2 * 5278):
        raise SystemExit(f"cora: {data.num_nodes} nodes, {data.edge_index.size(1)} edge entries")
    print(f"load_tag_dataset('cora'): {data.num_nodes} nodes, {data.edge_index.size(1) // 2} edges")

    shipped = sorted(p.name for p in (package / "_data").iterdir())
    if "dvs128_aedat2" in shipped or list((package / "_data").rglob("*.aedat")):
        raise SystemExit(f"the unlicensed DVS128 recordings are in the wheel: {shipped}")
    print(f"shipped data: {', '.join(shipped)}")
    checks = 4 + len(clis)  # import and version, py.typed, each CLI, the dataset, the data left out
    print(f"smoke: {checks} passed, 0 failed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
