"""The two real DVS128 AEDAT 2.0 recordings shipped in ``data/dvs128_aedat2`` (test fixtures; no license).

Search order for the data folder: ``$GRAPHSPIKE_KD_DATA``, package data (``graphspike_kd/_data``), the
source checkout's ``data/``. Every file is checked against its sha256 from ``data/dvs128_aedat2/SOURCE.md``.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

DATA_ENV = "GRAPHSPIKE_KD_DATA"
FOLDER = "dvs128_aedat2"

#: name -> (sha256, number of events, first two events as (x, y, p, t) in raw sensor coordinates)
RECORDINGS: dict[str, tuple[str, int, tuple[tuple[int, int, int, int], ...]]] = {
    "alex_walking_again.aedat": (
        "2f2c84318860a224c06d59201f862871cc92bcf23369634a7d5a19c4ab98e1d6",
        19_182,
        ((65, 118, 1, 41_306_606), (47, 97, 0, 41_309_379)),
    ),
    "neal_walking.aedat": (
        "056a3e0e6dba9f21dd0b260701fee2a8b5f4fdbf796540bb7076ed1d9a7760a2",
        70_304,
        ((21, 37, 0, 135_707_767), (89, 85, 1, 135_709_139)),
    ),
}


def _candidates() -> list[tuple[str, Path]]:
    out = []
    env = os.environ.get(DATA_ENV)
    if env:
        out.append((f"${DATA_ENV}", Path(env)))
    package_dir = Path(__file__).resolve().parents[3]
    out.append(("package data", package_dir / "graphspike_kd" / "_data"))
    out.append(("source checkout", package_dir / "data"))
    return out


def sample_recording(name: str) -> Path:
    """Path of a shipped recording (one of :data:`RECORDINGS`) after checking its sha256.

    Raises:
        ValueError: unknown name, or the file's checksum does not match.
        FileNotFoundError: no data folder holds it (the message lists every place tried).
    """
    if name not in RECORDINGS:
        raise ValueError(f"sample_recording: unknown recording {name!r}; available: {sorted(RECORDINGS)}")
    tried = []
    for label, root in _candidates():
        path = root / FOLDER / name
        if path.is_file():
            actual = hashlib.sha256(path.read_bytes()).hexdigest()
            if actual != RECORDINGS[name][0]:
                raise ValueError(
                    f"checksum mismatch for {path}: sha256 {actual}, expected {RECORDINGS[name][0]}; restore "
                    "the file from the repository (its SOURCE.md gives the origin)"
                )
            return path
        tried.append(f"{label}: {path}")
    raise FileNotFoundError(f"cannot find {FOLDER}/{name}. Tried: " + "; ".join(tried) + f". Set {DATA_ENV}.")
