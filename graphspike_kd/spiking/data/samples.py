"""Two real DVS128 AEDAT 2.0 recordings, looked up where the user put them (they are not distributed).

The files (people walking, recorded with a DVS128 in the jAER AEDAT 2.0 format of the original CIFAR10-DVS
release) come from the repository ``AlexOuyang/DVS128DataAnalysis``, which grants no licence to
redistribute them; neither the wheel nor the source tree holds them. Download them from :data:`SOURCE_URL`
and put them in ``$GRAPHSPIKE_KD_DATA/dvs128_aedat2/`` (in a source checkout, ``data/dvs128_aedat2/``
works too). Every file is checked against its sha256 in :data:`RECORDINGS` (the same table is in
``data/dvs128_aedat2/SOURCE.md``).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

DATA_ENV = "GRAPHSPIKE_KD_DATA"
FOLDER = "dvs128_aedat2"

#: Download address of each recording (``SOURCE_URL.format(name=name)``), pinned to one commit.
SOURCE_URL = ("https://raw.githubusercontent.com/AlexOuyang/DVS128DataAnalysis/"
              "0798359da092bad8762ecef555b44ae1c339b542/test_data/{name}")

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
    """Data folders searched, in order: ``$GRAPHSPIKE_KD_DATA``, then a source checkout's ``data/``."""
    out = []
    env = os.environ.get(DATA_ENV)
    if env:
        out.append((f"${DATA_ENV}", Path(env)))
    checkout = Path(__file__).resolve().parents[3]
    if (checkout / "pyproject.toml").is_file() and (checkout / "data").is_dir():
        out.append(("source checkout", checkout / "data"))
    return out


def sample_recording(name: str) -> Path:
    """Path of one of the DVS128 recordings in :data:`RECORDINGS` after checking its sha256.

    Looked for as ``<folder>/dvs128_aedat2/<name>`` in ``$GRAPHSPIKE_KD_DATA``, then in the ``data/`` folder
    of a source checkout. The files are not distributed with the package (their author gave no licence);
    download them from ``SOURCE_URL.format(name=name)``.

    Args:
        name: file name, ``"alex_walking_again.aedat"`` or ``"neal_walking.aedat"``.

    Returns:
        the path of the verified file.

    Raises:
        ValueError: unknown name, or the file's sha256 does not match.
        FileNotFoundError: no data folder holds it; the message gives the download address, the path to put
            the file at, and every place tried.
    """
    if name not in RECORDINGS:
        raise ValueError(f"sample_recording: unknown recording {name!r}; available: {sorted(RECORDINGS)}")
    sha256 = RECORDINGS[name][0]
    url = SOURCE_URL.format(name=name)
    tried = []
    for label, root in _candidates():
        path = root / FOLDER / name
        if path.is_file():
            actual = hashlib.sha256(path.read_bytes()).hexdigest()
            if actual != sha256:
                raise ValueError(
                    f"sample_recording: checksum mismatch for {path}: sha256 {actual}, expected {sha256}; "
                    f"download the file again from {url}"
                )
            return path
        tried.append(f"{label}: {path}")
    env = os.environ.get(DATA_ENV)
    target = (f"{Path(env) / FOLDER / name} (${DATA_ENV}/{FOLDER}/{name})" if env
              else f"$DATA/{FOLDER}/{name} for a folder DATA of your choice, and set {DATA_ENV}=$DATA")
    raise FileNotFoundError(
        f"sample_recording: {name} is not distributed with graphspike_kd (its author gave no licence to "
        f"redistribute it). Download it from {url} (sha256 {sha256}) and put it at {target}. "
        "Tried: " + ("; ".join(tried) if tried else f"nothing (${DATA_ENV} is not set)") + "."
    )
