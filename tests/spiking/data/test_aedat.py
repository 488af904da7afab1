"""AEDAT 2.0 reader/writer on the shipped real DVS128 recordings and on written files."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from graphspike_kd.spiking.data import read_aedat, read_aedat_header, sample_recording, write_aedat
from graphspike_kd.spiking.data.samples import RECORDINGS


def _reference_decode(path, count):
    """Straightforward struct-based decoder of the first `count` events (independent of the numpy path)."""
    data = path.read_bytes()
    pos = 0
    while data[pos : pos + 1] == b"#":
        pos = data.index(b"\n", pos) + 1
    out = []
    for i in range(count):
        addr, ts = struct.unpack(">II", data[pos + 8 * i : pos + 8 * i + 8])
        out.append(((addr >> 1) & 0x7F, (addr >> 8) & 0x7F, addr & 1, ts))
    return out, pos


@pytest.mark.parametrize("name", sorted(RECORDINGS))
def test_real_recordings_match_source_md(name):
    _, n_events, first = RECORDINGS[name]
    path = sample_recording(name)
    events, header = read_aedat(path, return_header=True)
    assert events.shape == (n_events,)
    assert set(events.dtype.names) == {"x", "y", "t", "p"}
    got = [(int(e["x"]), int(e["y"]), int(e["p"]), int(e["t"])) for e in events[:2]]
    assert got == list(first)
    assert header.version == "2.0" and len(header.lines) == 84 and header.body_offset == 4612
    assert header.chip == "ch.unizh.ini.jaer.chip.retina.DVS128"
    assert header.lines[0] == "!AER-DAT2.0"
    assert read_aedat_header(path) == header
    assert events["x"].min() >= 0 and events["x"].max() <= 127
    assert events["y"].min() >= 0 and events["y"].max() <= 127
    assert (np.diff(events["t"]) >= 0).all()
    ref, offset = _reference_decode(path, 500)
    assert offset == header.body_offset
    assert [(int(e["x"]), int(e["y"]), int(e["p"]), int(e["t"])) for e in events[:500]] == ref


def test_truncated_copy_raises_with_file_and_offset(tmp_path):
    src = sample_recording("alex_walking_again.aedat")
    data = src.read_bytes()
    bad = tmp_path / "truncated.aedat"
    bad.write_bytes(data[:-3])
    n = RECORDINGS["alex_walking_again.aedat"][1]
    offset = 4612 + (n - 1) * 8
    with pytest.raises(ValueError, match=rf"truncated\.aedat.*byte offset {offset}"):
        read_aedat(bad)


def test_malformed_headers_raise(tmp_path):
    src = sample_recording("alex_walking_again.aedat").read_bytes()
    cut = tmp_path / "cut_header.aedat"
    cut.write_bytes(src[:100])  # inside the header: the line starting before byte 100 never ends
    with pytest.raises(ValueError, match=r"cut_header\.aedat.*header line starting at byte offset \d+"):
        read_aedat(cut)
    nomagic = tmp_path / "nomagic.aedat"
    nomagic.write_bytes(b"\x00\x00\x01\x02" * 4)
    with pytest.raises(ValueError, match=r"nomagic\.aedat.*byte offset 0"):
        read_aedat(nomagic)
    v3 = tmp_path / "v31.aedat"
    v3.write_bytes(b"#!AER-DAT3.1\r\n" + b"\x00" * 8)
    with pytest.raises(ValueError, match=r"v31\.aedat.*'3\.1'"):
        read_aedat(v3)


def test_write_read_roundtrip_with_timestamp_wrap(tmp_path):
    rng = np.random.default_rng(0)
    n = 1000
    events = np.zeros(n, dtype=[("x", "i2"), ("y", "i2"), ("t", "i8"), ("p", "?")])
    events["x"] = rng.integers(0, 128, n)
    events["y"] = rng.integers(0, 128, n)
    events["p"] = rng.integers(0, 2, n).astype(bool)
    events["t"] = (2**32 - 5000) + np.cumsum(rng.integers(0, 20, n))  # crosses the 32-bit wrap
    path = tmp_path / "rt.aedat"
    write_aedat(path, events)
    back = read_aedat(path)
    for f in ("x", "y", "p", "t"):
        np.testing.assert_array_equal(back[f], events[f])
    with pytest.raises(ValueError, match="x must lie in"):
        bad = events.copy()
        bad["x"][3] = 128
        write_aedat(tmp_path / "bad.aedat", bad)
