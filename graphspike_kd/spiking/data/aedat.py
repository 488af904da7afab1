"""jAER AEDAT 2.0 event files (DVS128, the original CIFAR10-DVS release): read, write, header.

File layout (jAER ``AEDAT 2.0``; verified on two real DVS128 recordings, see :func:`sample_recording`):

* a text header of lines that start with ``#`` and end in ``\\r\\n`` (``\\n`` is accepted too); the first
  line is ``#!AER-DAT2.0``; the header ends at the first line that does not start with ``#``;
* a body of 8-byte events: **big-endian** ``uint32`` address, then ``uint32`` timestamp in µs (wraps at
  :math:`2^{32}`).

DVS128 address bits: ``x = (addr >> 1) & 0x7F``, ``y = (addr >> 8) & 0x7F``, ``p = addr & 1`` (the masks
``0xFE``, ``0x7F00``, ``0x1`` that spikingjelly's CIFAR10-DVS loader uses). The first body byte is the
top byte of a DVS128 address and therefore never ``'#'`` (bits above 0x7FFF are unused by the sensor),
so the header/body boundary is unambiguous.

:func:`read_aedat` returns **raw sensor coordinates**; the spikingjelly CIFAR10-DVS orientation
(:math:`x' = 127 - y,\\ y' = 127 - x,\\ p' = 1 - p`) is applied by
:func:`graphspike_kd.spiking.data.cifar10dvs.spikingjelly_orientation`, not here.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

#: Structured dtype of decoded events (tonic's field names; ``t`` in µs, unwrapped to int64).
EVENT_DTYPE = np.dtype([("x", np.int16), ("y", np.int16), ("t", np.int64), ("p", np.bool_)])

#: Bytes per AEDAT 2.0 event (uint32 address + uint32 timestamp).
EVENT_BYTES = 8

_MAGIC = b"#!AER-DAT"
_SUPPORTED_VERSION = "2.0"
_WRAP = np.int64(1) << 32


@dataclass(frozen=True)
class AedatHeader:
    """Parsed AEDAT 2.0 text header.

    Attributes:
        version: format version from the first line (``"2.0"``).
        lines: every header line without the leading ``#`` and the line ending.
        body_offset: byte offset of the first event.
        chip: the ``# AEChip:`` value (e.g. ``ch.unizh.ini.jaer.chip.retina.DVS128``), or ``None``.
    """

    version: str
    lines: tuple[str, ...]
    body_offset: int
    chip: str | None


def _parse_header(data: bytes, path: str) -> AedatHeader:
    if not data.startswith(_MAGIC):
        raise ValueError(
            f"{path}: not a jAER AEDAT file: expected the first line to start with {_MAGIC!r} at byte offset "
            f"0, found {data[:16]!r}. (AEDAT4 files, e.g. tonic's CIFAR10-DVS re-release, are read with "
            "tonic.io.read_aedat4.)"
        )
    lines: list[str] = []
    pos = 0
    hash_byte = ord("#")
    while pos < len(data) and data[pos] == hash_byte:
        end = data.find(b"\n", pos)
        if end < 0:
            raise ValueError(
                f"{path}: truncated or malformed header: the header line starting at byte offset {pos} "
                f"has no line ending (file size {len(data)} bytes)"
            )
        lines.append(data[pos + 1 : end].rstrip(b"\r").decode("latin-1"))
        pos = end + 1
    version = lines[0][len(_MAGIC) - 1 :].strip()
    if version != _SUPPORTED_VERSION:
        raise ValueError(
            f"{path}: AEDAT version {version!r} (byte offset 0) is not supported: read_aedat decodes jAER "
            f"AEDAT {_SUPPORTED_VERSION} (DVS128 / original CIFAR10-DVS). Use "
            "graphspike_kd.spiking.data.read_aedat4_events for AEDAT4."
        )
    chip = None
    for line in lines:
        stripped = line.strip()
        if stripped.startswith("AEChip:"):
            chip = stripped[len("AEChip:") :].strip()
            break
    return AedatHeader(version=version, lines=tuple(lines), body_offset=pos, chip=chip)


def read_aedat_header(path: str | os.PathLike) -> AedatHeader:
    """Parse only the text header of an AEDAT 2.0 file (see :class:`AedatHeader`).

    Raises:
        ValueError: the file does not start with ``#!AER-DAT``, a header line is cut off, or the version is
            not 2.0; the message names the file and the byte offset.
    """
    path = os.fspath(path)
    return _parse_header(Path(path).read_bytes(), path)


def decode_events(body: np.ndarray, *, path: str = "<buffer>", body_offset: int = 0) -> np.ndarray:
    """Decode a big-endian ``uint32`` (address, timestamp) array into :data:`EVENT_DTYPE` events.

    Timestamps are unwrapped: every backward jump larger than :math:`2^{31}` µs is taken as a 32-bit
    wrap-around and adds :math:`2^{32}` from there on; smaller backward jumps (jAER timestamp resets) are
    kept as they are.
    """
    if body.dtype != np.dtype(">u4") or body.ndim != 1 or body.size % 2:
        raise ValueError(
            f"{path}: malformed event body at byte offset {body_offset}: expected an even number of "
            f"big-endian uint32 words, got dtype {body.dtype} shape {body.shape}"
        )
    addr = body[0::2].astype(np.uint32)
    ts = body[1::2].astype(np.int64)
    events = np.empty(addr.shape[0], dtype=EVENT_DTYPE)
    events["x"] = (addr >> 1) & 0x7F
    events["y"] = (addr >> 8) & 0x7F
    events["p"] = (addr & 1).astype(np.bool_)
    if ts.size > 1:
        wraps = np.cumsum(np.diff(ts) < -(_WRAP >> 1))
        ts[1:] += wraps * _WRAP
    events["t"] = ts
    return events


def read_aedat(path: str | os.PathLike, *,
               return_header: bool = False) -> np.ndarray | tuple[np.ndarray, AedatHeader]:
    """Read a jAER AEDAT 2.0 file (DVS128, original CIFAR10-DVS ``.aedat``) into a structured array.

    The body is decoded in one vectorised pass (``np.frombuffer`` with dtype ``>u4``).

    Args:
        path: the ``.aedat`` file.
        return_header (bool, optional): also return the parsed :class:`AedatHeader`. (default: ``False``)

    Returns:
        numpy structured array with fields ``x, y`` (int16, raw sensor coordinates 0..127), ``t`` (int64 µs,
        unwrapped, see :func:`decode_events`) and ``p`` (bool polarity, ``addr & 1``), in file order; and the
        header if ``return_header``.

    Raises:
        ValueError: malformed header (no ``#!AER-DAT`` magic, a header line without line ending, a version
            other than 2.0) or a truncated body (its length is not a multiple of 8 bytes); the message names
            the file and the byte offset at fault.
    """
    path = os.fspath(path)
    data = Path(path).read_bytes()
    header = _parse_header(data, path)
    body_len = len(data) - header.body_offset
    if body_len % EVENT_BYTES:
        complete = body_len // EVENT_BYTES
        bad = header.body_offset + complete * EVENT_BYTES
        raise ValueError(
            f"{path}: truncated AEDAT 2.0 body: the event at byte offset {bad} is incomplete "
            f"({body_len % EVENT_BYTES} of {EVENT_BYTES} bytes; body starts at byte offset "
            f"{header.body_offset}, {complete} complete events before it)"
        )
    body = np.frombuffer(data, dtype=">u4", offset=header.body_offset)
    events = decode_events(body, path=path, body_offset=header.body_offset)
    return (events, header) if return_header else events


def encode_address(x: np.ndarray, y: np.ndarray, p: np.ndarray) -> np.ndarray:
    """DVS128 address word of each event: ``(y << 8) | (x << 1) | p`` (inverse of the read masks)."""
    x = np.asarray(x, dtype=np.int64)
    y = np.asarray(y, dtype=np.int64)
    p = np.asarray(p).astype(np.int64)
    for name, v, hi in (("x", x, 127), ("y", y, 127), ("p", p, 1)):
        if v.size and (int(v.min()) < 0 or int(v.max()) > hi):
            raise ValueError(f"encode_address: {name} must lie in [0, {hi}], got min {v.min()}, "
                             f"max {v.max()}")
    return ((y << 8) | (x << 1) | p).astype(np.uint32)


def write_aedat(
    path: str | os.PathLike,
    events: np.ndarray,
    *,
    header_lines: tuple[str, ...] = ("AEChip: ch.unizh.ini.jaer.chip.retina.DVS128",),
) -> None:
    """Write events as a jAER AEDAT 2.0 file that :func:`read_aedat` (and spikingjelly) can read.

    Meant for tests and for building small DVS-format data sets; the header has the ``#!AER-DAT2.0`` line
    and ``header_lines`` (each prefixed with ``#``), ``\\r\\n`` line endings.

    Args:
        path: destination file (overwritten).
        events: structured array with fields ``x, y, t, p`` (raw sensor coordinates, ``t`` in µs; values of
            ``t`` are written modulo :math:`2^{32}`).
        header_lines: extra header lines, without the leading ``#``.
    """
    for field in ("x", "y", "t", "p"):
        if events.dtype.names is None or field not in events.dtype.names:
            raise ValueError(f"write_aedat: events need fields x, y, t, p; got dtype {events.dtype}")
    body = np.empty(2 * events.shape[0], dtype=">u4")
    body[0::2] = encode_address(events["x"], events["y"], events["p"])
    body[1::2] = (np.asarray(events["t"], dtype=np.int64) % _WRAP).astype(np.uint32)
    head = "".join(f"#{line}\r\n" for line in ("!AER-DAT2.0", *header_lines)).encode("ascii")
    with open(path, "wb") as f:
        f.write(head)
        f.write(body.tobytes())
