"""Event-to-frame integration (per-pixel, per-polarity event counts)."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

SPLIT_BY = ("number", "time")

#: Coordinate conventions of :func:`events_to_frames` (see :func:`orient_events`).
ORIENTATIONS = ("raw", "transpose", "spikingjelly")


def _field(events: np.ndarray | Mapping[str, np.ndarray], name: str) -> np.ndarray:
    if isinstance(events, Mapping):
        if name not in events:
            raise ValueError(f"events_to_frames: events mapping has no key {name!r} (keys: {sorted(events)})")
        return np.asarray(events[name])
    if events.dtype.names is None or name not in events.dtype.names:
        raise ValueError(
            f"events_to_frames: events must be a structured array with fields x, y, t, p; got dtype "
            f"{events.dtype}"
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
        if np.issubdtype(t.dtype, np.floating):
            bad = np.flatnonzero(~np.isfinite(t))
            if bad.size:
                i = int(bad[0])
                raise ValueError(f"events_to_frames: split_by='time' needs finite timestamps; event {i} has "
                                 f"t = {t[i]} ({bad.size} non-finite in all)")
        t = t.astype(np.int64)
        # first and last time of the time-sorted stream: any event order gives the frames of the sorted one
        t0 = int(t.min())
        span = int(t.max()) - t0
        dt = span // frames
        if dt > 0:
            idx = (t - t0) // dt
        else:  # span shorter than `frames` µs: split [t0, t_last] proportionally
            idx = ((t - t0) * frames) // max(span + 1, 1)
        return np.clip(idx, 0, frames - 1).astype(np.intp)
    raise ValueError(f"events_to_frames: split_by must be one of {SPLIT_BY}, got {split_by!r}")


def orient_events(x: np.ndarray, y: np.ndarray, p: np.ndarray, sensor_size: tuple[int, int],
                  orientation: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[int, int]]:
    r"""Map event coordinates to ``orientation`` (:data:`ORIENTATIONS`) on a ``(W, H)`` sensor; returns
    ``(x', y', p', (W', H'))``.

    * ``"raw"``: unchanged;
    * ``"transpose"``: :math:`x' = y,\ y' = x` (``(W', H') = (H, W)``): swaps tonic's and spikingjelly's axis
      conventions;
    * ``"spikingjelly"``: spikingjelly's CIFAR10-DVS loader, :math:`x' = H-1-y,\ y' = W-1-x,\ p' = 1-p`
      (``(W', H') = (H, W)``).
    """
    w, h = int(sensor_size[0]), int(sensor_size[1])
    if orientation == "raw":
        return x, y, p, (w, h)
    if orientation == "transpose":
        return y, x, p, (h, w)
    if orientation == "spikingjelly":
        return h - 1 - y, w - 1 - x, 1 - p, (h, w)
    raise ValueError(f"events_to_frames: orientation must be one of {ORIENTATIONS}, got {orientation!r}")


def events_to_frames(
    events: np.ndarray | Mapping[str, np.ndarray],
    frames: int,
    *,
    sensor_size: tuple[int, int] = (128, 128),
    split_by: str = "number",
    orientation: str = "raw",
) -> np.ndarray:
    r"""Integrate an event stream into ``frames`` two-channel count frames (spikingjelly's convention).

    .. math::
        F[j, p, y, x] = \sum_{i \in S_j} \mathbb{1}[(p_i, y_i, x_i) = (p, y, x)]

    with the event slices :math:`S_j`:

    * ``split_by="number"``: :math:`S_j = [\lfloor N/M \rfloor j,\ \lfloor N/M \rfloor (j + 1))` for
      :math:`j < M - 1` and the last slice takes the remainder up to :math:`N` (so with fewer events than
      frames, every event lands in the last frame), exactly as spikingjelly's
      ``cal_fixed_frames_number_segment_index``; the slices follow the order of the events as given;
    * ``split_by="time"``: :math:`\Delta = \lfloor (t_{max} - t_{min}) / M \rfloor`; event :math:`i` goes to
      frame :math:`\min(\lfloor (t_i - t_{min})/\Delta \rfloor, M - 1)` (the last frame also takes the
      tail past :math:`t_{min} + M\Delta`), as spikingjelly for time-sorted events (there :math:`t_{min} =
      t_0`, :math:`t_{max} = t_{N-1}`); unsorted events give the frames of the sorted stream. Timestamps
      must be finite. spikingjelly fails on an empty window, this function returns an empty frame. If the
      span is shorter than :math:`M` µs the span is split proportionally.

    One ``np.bincount`` over a flat ``(frame, p, y, x)`` index: no Python loop over events or frames.

    Args:
        events: structured array (or mapping) with fields ``x, y, t, p`` (``p`` bool or 0/1).
        frames (int): number of frames :math:`M \geq 1`.
        sensor_size (tuple, optional): ``(W, H)`` of the events' coordinates, as in tonic.
            (default: ``(128, 128)``)
        split_by (str, optional): ``"number"`` or ``"time"``. (default: ``"number"``)
        orientation (str, optional): ``"raw"``, ``"transpose"`` (swap x and y: tonic's axes to
            spikingjelly's and back) or ``"spikingjelly"`` (spikingjelly's CIFAR10-DVS orientation); see
            :func:`orient_events`. (default: ``"raw"``)

    Shapes:
        - **input:** :math:`N` events
        - **output:** float32 :math:`(M, 2, H', W')` indexed ``[frame, polarity, y', x']`` (``(W', H') =
          (W, H)`` for ``"raw"``, ``(H, W)`` otherwise); the sum over all entries equals :math:`N`.

    Raises:
        ValueError: ``frames < 1``, an unknown ``split_by`` or ``orientation``, missing fields, a
            coordinate or polarity out of range, or (``split_by="time"``) a non-finite timestamp (the
            message gives the offending value and its event index).
    """
    if not isinstance(frames, int | np.integer) or isinstance(frames, bool) or frames < 1:
        raise ValueError(f"events_to_frames: frames must be an int >= 1, got {frames!r}")
    if len(sensor_size) != 2 or min(sensor_size) < 1:
        raise ValueError(f"events_to_frames: sensor_size must be (W, H) with positive entries, got "
                         f"{sensor_size}")
    if split_by not in SPLIT_BY:
        raise ValueError(f"events_to_frames: split_by must be one of {SPLIT_BY}, got {split_by!r}")
    if orientation not in ORIENTATIONS:
        raise ValueError(f"events_to_frames: orientation must be one of {ORIENTATIONS}, got {orientation!r}")
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
    x, y, p, (width, height) = orient_events(x, y, p, (width, height), orientation)
    flat = ((f * 2 + p) * height + y) * width + x
    counts = np.bincount(flat, minlength=int(frames) * 2 * height * width)
    return counts.reshape(int(frames), 2, height, width).astype(np.float32)
