"""events_to_frames against straightforward loop references (spikingjelly's algorithm, written out), on
written AEDAT 2.0 recordings and on the real DVS128 ones when the user has them."""

from __future__ import annotations

import numpy as np
import pytest

from graphspike_kd.spiking.data import events_to_frames, read_aedat, write_aedat

from ._recordings import real_recording


def _reference(events, frames, split_by, h=128, w=128):
    """spikingjelly's cal_fixed_frames_number_segment_index + integrate_events_segment_to_frame, as loops."""
    t = events["t"]
    n = len(t)
    j_l = np.zeros(frames, dtype=int)
    j_r = np.zeros(frames, dtype=int)
    if split_by == "number":
        di = n // frames
        for i in range(frames):
            j_l[i] = i * di
            j_r[i] = j_l[i] + di
    else:
        dt = (t[-1] - t[0]) // frames
        idx = np.arange(n)
        for i in range(frames):
            t_l = dt * i + t[0]
            mask = (t >= t_l) & (t < t_l + dt)
            j_l[i] = idx[mask][0]
            j_r[i] = idx[mask][-1] + 1
    j_r[-1] = n
    out = np.zeros((frames, 2, h, w))
    for i in range(frames):
        for k in range(j_l[i], j_r[i]):
            out[i, int(events["p"][k]), int(events["y"][k]), int(events["x"][k])] += 1
    return out


def _dvs_like_events(n, seed):
    """A DVS128-like recording: a vertical bar walking across the sensor (its two edges give ON and OFF
    events) plus uniform background activity, with irregular µs timestamps starting far from zero."""
    rng = np.random.default_rng(seed)
    ev = np.zeros(n, dtype=[("x", "i2"), ("y", "i2"), ("t", "i8"), ("p", "?")])
    t = 41_306_606 + np.cumsum(rng.exponential(350.0, n).astype(np.int64))
    centre = 10 + (t - t[0]) * 100 // max(int(t[-1] - t[0]), 1)  # x of the bar, 10 -> 110
    edge = rng.integers(0, 2, n)  # leading edge ON, trailing edge OFF
    x = centre + np.where(edge == 1, 4, -4) + rng.integers(-1, 2, n)
    y = rng.integers(20, 120, n)
    noise = rng.random(n) < 0.1
    ev["x"] = np.where(noise, rng.integers(0, 128, n), np.clip(x, 0, 127))
    ev["y"] = np.where(noise, rng.integers(0, 128, n), y)
    ev["p"] = np.where(noise, rng.integers(0, 2, n), edge).astype(bool)
    ev["t"] = t
    return ev


@pytest.fixture(scope="module")
def recording(tmp_path_factory):
    """Path of a written AEDAT 2.0 file of 7001 DVS-like events (7001 is not a multiple of 4, 7 or 16)."""
    path = tmp_path_factory.mktemp("aedat") / "walking.aedat"
    write_aedat(path, _dvs_like_events(7001, seed=0))
    return path


def _check_matches_reference(events, frames, split_by):
    got = events_to_frames(events, frames, split_by=split_by)
    assert got.dtype == np.float32 and got.shape == (frames, 2, 128, 128)
    np.testing.assert_array_equal(got, _reference(events, frames, split_by))


def _check_sums_and_chunk_sizes(events):
    n = len(events)
    for frames in (4, 7, 16):
        f = events_to_frames(events, frames)
        assert f.sum() == n
        per_frame = f.sum(axis=(1, 2, 3))
        assert (per_frame[:-1] == n // frames).all() and per_frame[-1] == n - (frames - 1) * (n // frames)
        assert events_to_frames(events, frames, split_by="time").sum() == n


@pytest.mark.parametrize("split_by", ["number", "time"])
@pytest.mark.parametrize("frames", [1, 3, 10])
def test_matches_reference_on_a_recording(recording, split_by, frames):
    _check_matches_reference(read_aedat(recording)[:4001], frames, split_by)


def test_frame_sums_equal_event_count_and_chunk_sizes(recording):
    events = read_aedat(recording)
    assert len(events) % 4 and len(events) % 7 and len(events) % 16
    _check_sums_and_chunk_sizes(events)


@pytest.mark.parametrize("split_by", ["number", "time"])
@pytest.mark.parametrize("frames", [1, 3, 10])
def test_matches_reference_on_real_recording(split_by, frames):
    events = read_aedat(real_recording("alex_walking_again.aedat"))[:4001]
    _check_matches_reference(events, frames, split_by)


def test_frame_sums_on_real_recording():
    _check_sums_and_chunk_sizes(read_aedat(real_recording("neal_walking.aedat")))


def test_indexing_convention_and_sensor_size():
    events = np.zeros(3, dtype=[("x", "i2"), ("y", "i2"), ("t", "i8"), ("p", "?")])
    events["x"] = [5, 0, 9]
    events["y"] = [1, 2, 3]
    events["p"] = [True, False, True]
    events["t"] = [0, 1, 2]
    f = events_to_frames(events, 1, sensor_size=(10, 4))  # (W, H)
    assert f.shape == (1, 2, 4, 10)
    assert f[0, 1, 1, 5] == 1 and f[0, 0, 2, 0] == 1 and f[0, 1, 3, 9] == 1 and f.sum() == 3
    # fewer events than frames: all land in the last frame (spikingjelly's j_r[-1] = N)
    g = events_to_frames(events, 5, sensor_size=(10, 4))
    assert g[:4].sum() == 0 and g[4].sum() == 3
    bad = events.copy()
    bad["x"][1] = 10
    with pytest.raises(ValueError, match="event 1 has x = 10"):
        events_to_frames(bad, 2, sensor_size=(10, 4))
    with pytest.raises(ValueError, match="split_by"):
        events_to_frames(events, 2, split_by="duration")
    with pytest.raises(ValueError, match="frames"):
        events_to_frames(events, 0)
    assert events_to_frames(events[:0], 3).sum() == 0


def _events(n=500, seed=0, t_dtype="i8"):
    rng = np.random.default_rng(seed)
    ev = np.zeros(n, dtype=[("x", "i2"), ("y", "i2"), ("t", t_dtype), ("p", "?")])
    ev["x"] = rng.integers(0, 20, n)
    ev["y"] = rng.integers(0, 10, n)
    ev["p"] = rng.integers(0, 2, n).astype(bool)
    ev["t"] = np.sort(rng.integers(1000, 50_000, n))
    return ev


def test_time_split_of_unsorted_events_equals_the_sorted_stream():
    ev = _events()
    shuffled = ev[np.random.default_rng(1).permutation(len(ev))]
    ref = _reference(ev, 5, "time", h=10, w=20)
    np.testing.assert_array_equal(events_to_frames(ev, 5, sensor_size=(20, 10), split_by="time"), ref)
    got = events_to_frames(shuffled, 5, sensor_size=(20, 10), split_by="time")
    np.testing.assert_array_equal(got, ref)
    assert got.sum(axis=(1, 2, 3)).min() > 0  # not everything in one frame


def test_time_split_rejects_non_finite_timestamps():
    ev = _events(t_dtype="f8")
    for bad in (np.nan, np.inf):
        broken = ev.copy()
        broken["t"][7] = bad
        with pytest.raises(ValueError, match=f"event 7 has t = {bad}"):
            events_to_frames(broken, 4, sensor_size=(20, 10), split_by="time")
    # float timestamps that are finite integrate as the integer ones
    as_int = ev.astype([("x", "i2"), ("y", "i2"), ("t", "i8"), ("p", "?")])
    np.testing.assert_array_equal(events_to_frames(ev, 4, sensor_size=(20, 10), split_by="time"),
                                  events_to_frames(as_int, 4, sensor_size=(20, 10), split_by="time"))


def test_orientation_option():
    from graphspike_kd.spiking.data import spikingjelly_orientation

    ev = _events()
    raw = events_to_frames(ev, 3, sensor_size=(20, 10))
    assert raw.shape == (3, 2, 10, 20)
    transposed = events_to_frames(ev, 3, sensor_size=(20, 10), orientation="transpose")
    assert transposed.shape == (3, 2, 20, 10)
    np.testing.assert_array_equal(transposed, raw.transpose(0, 1, 3, 2))
    square = _events(seed=2)
    np.testing.assert_array_equal(
        events_to_frames(square, 3, sensor_size=(128, 128), orientation="spikingjelly"),
        events_to_frames(spikingjelly_orientation(square, 128), 3, sensor_size=(128, 128)))
    with pytest.raises(ValueError, match="orientation must be one of"):
        events_to_frames(ev, 3, sensor_size=(20, 10), orientation="flip")
