"""AEDAT 2.0 reader/writer on files built byte by byte from the format, on written files, and on the real
DVS128 recordings when the user has them (they are not distributed: no licence)."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from graphspike_kd.spiking.data import (
    read_aedat,
    read_aedat_header,
    spikingjelly_orientation,
    write_aedat,
)
from graphspike_kd.spiking.data.samples import RECORDINGS

from ._recordings import real_recording, spikingjelly_load_origin_data

#: A jAER-like header: the lines jAER writes for a DVS128, then its preferences XML block commented out.
JAER_HEADER_LINES = (
    "!AER-DAT2.0",
    " This is a raw AE data file - do not edit",
    " Data format is int32 address, int32 timestamp (8 bytes total), repeated for each event",
    " Timestamps tick is 1 us",
    " created Fri Apr 15 09:54:36 PDT 2016",
    " HardwareInterface: DVS128-V1 0298",
    " AEChip: ch.unizh.ini.jaer.chip.retina.DVS128",
    "Start of Preferences for this AEChip",
    '<?xml version="1.0" encoding="UTF-8" standalone="no"?>',
    '<!DOCTYPE preferences SYSTEM "http://java.sun.com/dtd/preferences.dtd">',
    '<preferences EXTERNAL_XML_VERSION="1.0">',
    '  <root type="user">',
    "    <map/>",
    '    <node name="retina">',
    "      <map>",
    '        <entry key="DVS128.IPot.cas" value="54"/>',
    '        <entry key="BackgroundActivityFilter.filterEnabled" value="true"/>',
    "      </map>",
    "    </node>",
    "  </root>",
    "</preferences>",
    "End of Preferences for this AEChip",
)
JAER_HEADER = b"".join(b"#" + line.encode("ascii") + b"\r\n" for line in JAER_HEADER_LINES)

#: Events as encoded (x, y, p, t) with t unwrapped: sensor corners, equal timestamps, a 32-bit wrap.
EVENTS = [
    (65, 118, 1, 41_306_606),
    (47, 97, 0, 41_309_379),
    (0, 0, 0, 41_309_379),
    (127, 127, 1, 41_310_000),
    (127, 0, 0, 41_310_001),
    (0, 127, 1, 2**32 - 2),
    (1, 2, 1, 2**32 - 1),
    (3, 4, 0, 2**32 + 3),  # written as 3: the timestamp wrapped
    (64, 64, 0, 2**32 + 10),
    (126, 1, 1, 2**32 + 2_000_000),
]


def _body(events):
    """Body bytes from the documented layout: big-endian uint32 address (y << 8 | x << 1 | p), uint32 t."""
    return b"".join(struct.pack(">II", (y << 8) | (x << 1) | p, t % 2**32) for x, y, p, t in events)


def _decoded(events):
    return [(int(e["x"]), int(e["y"]), int(e["p"]), int(e["t"])) for e in events]


def _reference_decode(path, count=None):
    """Straightforward struct-based decoder (independent of the numpy path); timestamps as stored."""
    data = path.read_bytes()
    pos = 0
    while data[pos : pos + 1] == b"#":
        pos = data.index(b"\n", pos) + 1
    n = (len(data) - pos) // 8 if count is None else count
    out = []
    for i in range(n):
        addr, ts = struct.unpack(">II", data[pos + 8 * i : pos + 8 * i + 8])
        out.append(((addr >> 1) & 0x7F, (addr >> 8) & 0x7F, addr & 1, ts))
    return out, pos


@pytest.fixture
def jaer_file(tmp_path):
    path = tmp_path / "jaer_like.aedat"
    path.write_bytes(JAER_HEADER + _body(EVENTS))
    return path


def test_body_bytes_follow_the_documented_layout():
    # (65, 118, 1): address 118 << 8 | 65 << 1 | 1 = 0x7683; t = 41306606 = 0x0276_49EE; big-endian
    assert _body(EVENTS[:1]) == bytes([0x00, 0x00, 0x76, 0x83, 0x02, 0x76, 0x49, 0xEE])
    assert _body([(3, 4, 0, 2**32 + 3)]) == bytes([0, 0, 0x04, 0x06, 0, 0, 0, 3])


def test_byte_built_jaer_file_decodes_exactly(jaer_file):
    events, header = read_aedat(jaer_file, return_header=True)
    assert events.shape == (len(EVENTS),)
    assert set(events.dtype.names) == {"x", "y", "t", "p"}
    assert _decoded(events) == EVENTS  # incl. the unwrapped timestamps after the 2^32 wrap
    assert header.version == "2.0" and header.lines[0] == "!AER-DAT2.0"
    assert len(header.lines) == len(JAER_HEADER_LINES) and header.body_offset == len(JAER_HEADER)
    assert header.lines[-1] == "End of Preferences for this AEChip"
    assert header.chip == "ch.unizh.ini.jaer.chip.retina.DVS128"
    assert read_aedat_header(jaer_file) == header
    ref, offset = _reference_decode(jaer_file)
    assert offset == header.body_offset
    assert [(x, y, p, t % 2**32) for x, y, p, t in _decoded(events)] == ref


def test_writer_produces_the_byte_built_file(jaer_file, tmp_path):
    events = np.array([(x, y, t, bool(p)) for x, y, p, t in EVENTS],
                      dtype=[("x", "i2"), ("y", "i2"), ("t", "i8"), ("p", "?")])
    path = tmp_path / "written.aedat"
    write_aedat(path, events, header_lines=JAER_HEADER_LINES[1:])
    assert path.read_bytes() == jaer_file.read_bytes()


def test_lf_line_endings_and_timestamp_resets(tmp_path):
    # "\n"-only header lines are accepted; a small backward jump (a jAER timestamp reset) is kept, only a
    # backward jump of more than 2^31 counts as a wrap
    events = [(10, 20, 1, 5_000_000), (11, 21, 0, 100), (12, 22, 1, 200)]
    path = tmp_path / "lf.aedat"
    path.write_bytes(b"#!AER-DAT2.0\n# AEChip: DVS128\n" + _body(events))
    got, header = read_aedat(path, return_header=True)
    assert _decoded(got) == events
    assert header.body_offset == 30 and header.chip == "DVS128"
    empty = tmp_path / "empty.aedat"
    empty.write_bytes(b"#!AER-DAT2.0\r\n")
    assert read_aedat(empty).shape == (0,)


def test_truncated_body_raises_with_file_and_offset(tmp_path):
    data = JAER_HEADER + _body(EVENTS)
    bad = tmp_path / "truncated.aedat"
    bad.write_bytes(data[:-3])
    offset = len(JAER_HEADER) + (len(EVENTS) - 1) * 8
    with pytest.raises(ValueError, match=rf"truncated\.aedat.*byte offset {offset}"):
        read_aedat(bad)


def test_malformed_headers_raise(tmp_path):
    cut = tmp_path / "cut_header.aedat"
    cut.write_bytes(JAER_HEADER[:100])  # inside the header: the line starting before byte 100 never ends
    line_start = JAER_HEADER.rindex(b"\n", 0, 100) + 1
    with pytest.raises(ValueError, match=rf"cut_header\.aedat.*line starting at byte offset {line_start}\b"):
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
    assert events["t"][0] < 2**32 <= events["t"][-1]
    path = tmp_path / "rt.aedat"
    write_aedat(path, events)
    back = read_aedat(path)
    for f in ("x", "y", "p", "t"):
        np.testing.assert_array_equal(back[f], events[f])
    ref, _ = _reference_decode(path)
    assert ref == [(x, y, p, t % 2**32) for x, y, p, t in _decoded(events)]
    with pytest.raises(ValueError, match="x must lie in"):
        bad = events.copy()
        bad["x"][3] = 128
        write_aedat(tmp_path / "bad.aedat", bad)


def _assert_spikingjelly_orientation_equal(path):
    load = spikingjelly_load_origin_data()
    sj = load(path)
    ours = spikingjelly_orientation(read_aedat(path))
    np.testing.assert_array_equal(ours["x"], sj["x"])
    np.testing.assert_array_equal(ours["y"], sj["y"])
    np.testing.assert_array_equal(ours["p"].astype(int), sj["p"])
    np.testing.assert_array_equal(ours["t"] % 2**32, sj["t"])  # spikingjelly keeps the raw 32-bit stamps


def test_spikingjelly_decodes_the_same_events(jaer_file, tmp_path):
    _assert_spikingjelly_orientation_equal(jaer_file)
    rng = np.random.default_rng(1)
    events = np.zeros(3000, dtype=[("x", "i2"), ("y", "i2"), ("t", "i8"), ("p", "?")])
    events["x"] = rng.integers(0, 128, 3000)
    events["y"] = rng.integers(0, 128, 3000)
    events["p"] = rng.integers(0, 2, 3000).astype(bool)
    events["t"] = np.cumsum(rng.integers(0, 3000, 3000))
    path = tmp_path / "random.aedat"
    write_aedat(path, events)
    _assert_spikingjelly_orientation_equal(path)


#: Last event (x, y, p, t) and number of events with p = 1 of each real recording (its SOURCE.md).
REAL_LAST_AND_ON = {
    "alex_walking_again.aedat": ((127, 22, 0, 48_193_156), 12_080),
    "neal_walking.aedat": ((85, 53, 0, 144_951_371), 36_273),
}


@pytest.mark.parametrize("name", sorted(RECORDINGS))
def test_real_recordings_match_source_md(name, tmp_path):
    path = real_recording(name)
    _, n_events, first = RECORDINGS[name]
    last, n_on = REAL_LAST_AND_ON[name]
    events, header = read_aedat(path, return_header=True)
    assert events.shape == (n_events,)
    assert _decoded(events[:2]) == list(first) and _decoded(events[-1:]) == [last]
    assert int(events["p"].sum()) == n_on
    assert header.version == "2.0" and len(header.lines) == 84 and header.body_offset == 4612
    assert header.chip == "ch.unizh.ini.jaer.chip.retina.DVS128"
    assert header.lines[0] == "!AER-DAT2.0"
    assert read_aedat_header(path) == header
    assert events["x"].min() >= 0 and events["x"].max() <= 127
    assert events["y"].min() >= 0 and events["y"].max() <= 127
    assert (np.diff(events["t"]) >= 0).all()
    ref, offset = _reference_decode(path, 500)
    assert offset == header.body_offset
    assert _decoded(events[:500]) == ref
    bad = tmp_path / "truncated.aedat"
    bad.write_bytes(path.read_bytes()[:-3])
    with pytest.raises(ValueError, match=rf"truncated\.aedat.*byte offset {4612 + (n_events - 1) * 8}"):
        read_aedat(bad)
    _assert_spikingjelly_orientation_equal(path)
