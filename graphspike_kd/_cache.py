"""The one on-disk cache root shared by every part of the library (embeddings, annotator answers, the
native CPU build): ``$GRAPHSPIKE_KD_CACHE`` if set, else ``~/.cache/graphspike_kd``."""

from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "GRAPHSPIKE_KD_CACHE"


def cache_root() -> Path:
    """``$GRAPHSPIKE_KD_CACHE`` if set, else ``~/.cache/graphspike_kd`` (not created here)."""
    root = os.environ.get(CACHE_ENV)
    return Path(root) if root else Path.home() / ".cache" / "graphspike_kd"
