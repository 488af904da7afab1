"""Event-to-frame integration (per-pixel, per-polarity event counts)."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

SPLIT_BY = ("number", "time")


def _field(events: np.ndarray | Mapping[str, np.ndarray], name: str) -> np.ndarray:
    if isinstance(events, Mapping):
        if name not in events:
            raise ValueError(f"events_to_frames: events mapping has no key {name!r} (keys: {sorted(events)})")
        return np.asarray(events[name])
    if events.dtype.names is None or name not in events.dtype.names:
        raise ValueError(
            f"events_to_frames: events must be a structured array with fields x, y, t, p; got dtype {events.dtype}"
        )
    return events[name]


def frame_index(t: np.ndarray, frames: int, split_by: str = "number") -> np.ndarray:
    """Frame index in ``[0, frames)`` of every event (see :func:`events_to_frames`)."""
    n = t.shape[0]
    if split_by == "number":
        chunk = n // frames
        if chunk == 0:  # fewer events than frames: spikingjelly's j_r[-1] = N puts all in the last frame
            return np.full(n, frames - 1, dtype=np.intp)
        return np.minimum(np.arange(n, dtype=np.intp) // chunk, frames - 1)
    if split_by == "time":
        if n == 0:
            return np.zeros(0, dtype=np.intp)
        t = t.astype(np.int64)
        t0 = int(t[0])
        span = int(t[-1]) - t0
        dt = span // frames
        if dt > 0:
            idx = (t - t0) // dt
        else:  # span shorter than `frames` µs: split [t0, t_last] proportionally
            idx = ((t - t0) * frames) // max(span + 1, 1)
        return np.clip(idx, 0, frames - 1).astype(np.intp)
    raise ValueError(f"events_to_frames: split_by must be one of {SPLIT_BY}, got {split_by!r}")


def events_to_frames(
    events: np.ndarray | Mapping[str, np.ndarray],
    frames: int,
    *,
    sensor_size: tuple[int, int] = (128, 128),
    split_by: str = "number",
) -> np.ndarray:
    r"""Integrate an event stream into ``frames`` two-channel count frames (spikingjelly's convention).

    .. math::
        F[j, p, y, x] = \sum_{i \in S_j} \mathbb{1}[(p_i, y_i, x_i) = (p, y, x)]

    with the event slices :math:`S_j`:

    * ``split_by="number"``: :math:`S_j = [\lfloor N/M \rfloor j,\ \lfloor N/M \rfloor (j + 1))` for
      :math:`j < M - 1` and the last slice takes the remainder up to :math:`N` (so with fewer events than
      frames, every event lands in the last frame), exactly as spikingjelly's
      ``cal_fixed_frames_number_segment_index``;
    * ``split_by="time"``: :math:`\Delta = \lfloor (t_{N-1} - t_0) / M \rfloor`; event :math:`i` goes to
      frame :math:`\min(\lfloor (t_i - t_0)/\Delta \rfloor, M - 1)` (the last frame also takes the tail
      past :math:`t_0 + M\Delta`), as spikingjelly for time-sorted events; spikingjelly fails on an empty
      window, this function returns an empty frame. If the span is shorter than :math:`M` µs the span is
      split proportionally.

    One ``np.bincount`` over a flat ``(frame, p, y, x)`` index: no Python loop over events or frames.

    Args:
        events: structured array (or mapping) with fields ``x, y, t, p`` (``p`` bool or 0/1).
        frames (int): number of frames :math:`M \geq 1`.
        sensor_size (tuple, optional): ``(W, H)`` as in tonic. (default: ``(128, 128)``)
        split_by (str, optional): ``"number"`` or ``"time"``. (default: ``"number"``)

    Shapes:
        - **input:** :math:`N` events
        - **output:** float32 :math:`(M, 2, H, W)` indexed ``[frame, polarity, y, x]``; the sum over all
          entries equals :math:`N`.

    Raises:
        ValueError: ``frames < 1``, an unknown ``split_by``, missing fields, or a coordinate or polarity out
            of range (the message gives the offending value and its event index).
    """
    if not isinstance(frames, (int, np.integer)) or isinstance(frames, bool) or frames < 1:
        raise ValueError(f"events_to_frames: frames must be an int >= 1, got {frames!r}")
    if len(sensor_size) != 2 or min(sensor_size) < 1:
        raise ValueError(f"events_to_frames: sensor_size must be (W, H) with positive entries, got {sensor_size}")
    if split_by not in SPLIT_BY:
        raise ValueError(f"events_to_frames: split_by must be one of {SPLIT_BY}, got {split_by!r}")
    width, height = int(sensor_size[0]), int(sensor_size[1])
    x = _field(events, "x").astype(np.intp)
    y = _field(events, "y").astype(np.intp)
    t = _field(events, "t")
    p = _field(events, "p").astype(np.intp)
    for name, v, hi in (("x", x, width), ("y", y, height), ("p", p, 2)):
        if v.size:
            bad = np.flatnonzero((v < 0) | (v >= hi))
            if bad.size:
                i = int(bad[0])
                raise ValueError(
                    f"events_to_frames: {name} must lie in [0, {hi}) for sensor_size (W, H) = {sensor_size}; "
                    f"event {i} has {name} = {int(v[i])}"
                )
    f = frame_index(np.asarray(t), int(frames), split_by)
    flat = ((f * 2 + p) * height + y) * width + x
    counts = np.bincount(flat, minlength=int(frames) * 2 * height * width)
    return counts.reshape(int(frames), 2, height, width).astype(np.float32)
