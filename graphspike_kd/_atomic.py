"""Atomic file writes: a temporary file in the destination folder, flushed and fsynced, then
``os.replace``, so a reader sees the old file or the complete new one, never a partial one."""

from __future__ import annotations

import contextlib
import io
import os
import stat
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["atomic_savefig", "atomic_write_bytes", "atomic_write_text"]


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically: a temporary file in the same folder (created with the
    parents), flushed and fsynced, then ``os.replace``. On any error the temporary file is removed and an
    existing ``path`` is left untouched. The file keeps the mode of the one it replaces; a new file gets
    the usual ``0o666`` less the umask. Returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:  # the mode of the file replaced, else that of a new file (mkstemp's own is 0600)
        mode = stat.S_IMODE(path.stat().st_mode)
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        mode = 0o666 & ~umask
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> Path:
    """:func:`atomic_write_bytes` of ``text`` encoded with ``encoding`` (default ``"utf-8"``)."""
    return atomic_write_bytes(path, text.encode(encoding))


def atomic_savefig(fig: Any, path: str | os.PathLike, **savefig_kwargs: Any) -> Path:
    """Save a matplotlib figure atomically: rendered into memory first (format from the suffix of
    ``path``, default PNG), then :func:`atomic_write_bytes`. ``savefig_kwargs`` go to ``fig.savefig``."""
    path = Path(path)
    buf = io.BytesIO()
    savefig_kwargs.setdefault("format", path.suffix.lstrip(".") or "png")
    fig.savefig(buf, **savefig_kwargs)
    return atomic_write_bytes(path, buf.getvalue())
