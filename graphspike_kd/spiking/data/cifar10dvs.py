"""CIFAR10-DVS over the original release's layout, with frames integrated once and cached compressed.

Expected layout under ``root`` (the 10 per-class zips of the original figshare release, extracted)::

    root/airplane/cifar10_airplane_0.aedat ... cifar10_airplane_999.aedat
    root/automobile/...   (10 class folders, jAER AEDAT 2.0 files)

tonic's AEDAT4 re-release (``CIFAR10DVS.zip``, the same 10 class folders holding ``.aedat4`` files) is read
too when the AEDAT4 decoder tonic uses, the ``aedat`` package, is installed (``pip install
graphspike_kd[events]``); it is imported only when an AEDAT4 file is read, and tonic itself is not imported.

Orientation. The original ``.aedat`` files carry raw DVS128 coordinates. spikingjelly's loader returns
:math:`x' = 127 - y,\\ y' = 127 - x,\\ p' = 1 - p` (a transpose + 180° turn and inverted polarity), and every
CIFAR10-DVS number in the SNN literature that uses spikingjelly frames was trained on that orientation, so
``orientation="spikingjelly"`` is the default for AEDAT 2.0 files. AEDAT4 files are used as tonic decodes them
(``orientation="raw"``); whether the re-release's coordinates equal the original's raw ones was not
verified here, so do not mix the two releases in one experiment. :func:`events_to_frames` takes the same
``orientation`` option for other event data.

Transforms follow torchvision / tonic: ``transform(frames) -> frames`` and ``target_transform(label)``.

Sample order is lexicographic by file name within each class, as spikingjelly's ``DatasetFolder`` (so
``cifar10_airplane_10`` comes before ``cifar10_airplane_2``) — this is what makes ``"per_class_9to1"``
identical to spikingjelly's split; the TEBN split uses the numeric file index instead (see :mod:`.splits`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from graphspike_kd.spiking.data.aedat import EVENT_DTYPE, read_aedat
from graphspike_kd.spiking.data.frames import SPLIT_BY, events_to_frames
from graphspike_kd.spiking.data.splits import SPLIT_DESCRIPTIONS, SPLITS, split_indices

CLASS_NAMES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
SENSOR_SIZE = (128, 128)
ORIENTATIONS = ("auto", "spikingjelly", "raw")
_SUFFIXES = {".aedat": "aedat2", ".aedat4": "aedat4"}
_INDEX_RE = re.compile(r"_(\d+)$")


def spikingjelly_orientation(events: np.ndarray, sensor: int = 128) -> np.ndarray:
    """spikingjelly's CIFAR10-DVS orientation: :math:`x' = s-1-y,\\ y' = s-1-x,\\ p' = 1 - p`
    (``s = 128``)."""
    out = np.empty(events.shape[0], dtype=EVENT_DTYPE)
    out["x"] = sensor - 1 - events["y"].astype(np.int16)
    out["y"] = sensor - 1 - events["x"].astype(np.int16)
    out["t"] = events["t"]
    out["p"] = ~events["p"].astype(np.bool_)
    return out


def _read_aedat4_raw(path: str) -> np.ndarray:
    """The events of the lowest-id event stream of an AEDAT4 file, decoded by the ``aedat`` package exactly as
    ``tonic.io.read_aedat4`` does (without importing tonic, whose package import pulls in librosa, numba and
    h5py)."""
    try:
        import aedat
    except ImportError as exc:
        raise ImportError(
            f"reading AEDAT4 file {path} needs the optional AEDAT4 decoder: pip install "
            f"graphspike_kd[events] (the 'aedat' package). Import error: {exc}"
        ) from exc
    decoder = aedat.Decoder(path)
    ids = [i for i, stream in decoder.id_to_stream().items() if stream["type"] == "events"]
    if not ids:
        raise ValueError(f"{path}: the AEDAT4 file has no event stream")
    target = min(ids)
    packets = [packet["events"] for packet in decoder if packet["stream_id"] == target]
    if not packets:
        raise ValueError(f"{path}: the AEDAT4 event stream holds no packet")
    return np.concatenate(packets)


def read_aedat4_events(path: str | os.PathLike) -> np.ndarray:
    """Read an AEDAT4 file (tonic's CIFAR10-DVS re-release) with the optional ``aedat`` decoder.

    Returns :data:`EVENT_DTYPE` events as tonic decodes them (fields in tonic's order ``t, x, y, p``).

    Raises:
        ImportError: ``aedat`` is not installed (the message names the ``events`` extra).
    """
    raw = _read_aedat4_raw(os.fspath(path))
    names = raw.dtype.names
    if names is None or len(names) != 4:
        raise ValueError(f"{os.fspath(path)}: the AEDAT4 decoder returned dtype {raw.dtype}, expected 4 "
                         "fields")
    # tonic's CIFAR10DVS renames the four fields positionally to (t, x, y, p); do the same
    t, x, y, p = (raw[n] for n in names)
    events = np.empty(raw.shape[0], dtype=EVENT_DTYPE)
    events["t"], events["x"], events["y"], events["p"] = t, x, y, p
    return events


@dataclass(frozen=True)
class FrameSettings:
    """Integration settings; :meth:`key` names the cache folder, so changing any of them re-integrates."""

    frames: int
    split_by: str = "number"
    orientation: str = "spikingjelly"
    sensor_size: tuple[int, int] = SENSOR_SIZE

    def key(self) -> str:
        w, h = self.sensor_size
        return f"frames{self.frames}_{self.split_by}_{self.orientation}_{w}x{h}"


@dataclass(frozen=True)
class Recording:
    """One file of the release: path, class id, file index inside its class (``-1`` if the name has none)."""

    path: Path
    label: int
    index_in_class: int
    fmt: str


def scan_release(root: str | os.PathLike) -> list[Recording]:
    """List the recordings of a CIFAR10-DVS release folder (10 class folders of ``.aedat`` / ``.aedat4``).

    Raises:
        FileNotFoundError: ``root`` or a class folder is missing, or a class folder holds no event file.
        ValueError: a class folder mixes AEDAT 2.0 and AEDAT4 files.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"CIFAR10-DVS root {root} is not a folder (expected 10 class folders in it)")
    missing = [c for c in CLASS_NAMES if not (root / c).is_dir()]
    if missing:
        raise FileNotFoundError(
            f"CIFAR10-DVS root {root} lacks the class folders {missing}; expected {list(CLASS_NAMES)} "
            "(extract airplane.zip ... truck.zip of the original release, or tonic's CIFAR10DVS.zip, into "
            "root)"
        )
    recordings: list[Recording] = []
    for label, cls in enumerate(CLASS_NAMES):
        files = sorted(
            (f for f in os.scandir(root / cls) if f.is_file() and Path(f.name).suffix in _SUFFIXES),
            key=lambda f: f.name,
        )
        if not files:
            raise FileNotFoundError(f"CIFAR10-DVS class folder {root / cls} holds no .aedat / .aedat4 file")
        fmts = {_SUFFIXES[Path(f.name).suffix] for f in files}
        if len(fmts) > 1:
            raise ValueError(f"{root / cls} mixes AEDAT 2.0 (.aedat) and AEDAT4 (.aedat4) files; use one "
                             "release")
        for f in files:
            match = _INDEX_RE.search(Path(f.name).stem)
            index = int(match.group(1)) if match else -1
            recordings.append(Recording(Path(f.path), label, index, _SUFFIXES[Path(f.name).suffix]))
    return recordings


def integrate_recording(rec: Recording, settings: FrameSettings) -> np.ndarray:
    """Read one recording, orient it and integrate it into float32 frames ``[frames, 2, H, W]``."""
    if rec.fmt == "aedat2":
        events = read_aedat(rec.path)
    else:
        events = read_aedat4_events(rec.path)
    orientation = settings.orientation
    if orientation == "spikingjelly":
        events = spikingjelly_orientation(events, SENSOR_SIZE[0])
    return events_to_frames(events, settings.frames, sensor_size=settings.sensor_size,
                            split_by=settings.split_by)


def _integrate_to_cache(rec: Recording, settings: FrameSettings, dst: Path) -> None:
    frames = integrate_recording(rec, settings)
    peak = float(frames.max()) if frames.size else 0.0
    stored = frames.astype(np.uint16) if peak < 65536 else frames  # counts: exact in uint16, compresses well
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f"{dst.stem}.{os.getpid()}.tmp.npz")
    np.savez_compressed(tmp, frames=stored)
    os.replace(tmp, dst)


def _integrate_job(args: tuple[Recording, FrameSettings, Path]) -> None:
    _integrate_to_cache(*args)


class CIFAR10DVS(Dataset):
    r"""CIFAR10-DVS frames ``[T, 2, H, W]`` from the original AEDAT 2.0 release (or tonic's AEDAT4 one).

    On first use every recording is integrated once with :func:`~graphspike_kd.spiking.data.events_to_frames`
    — in parallel (``concurrent.futures.ProcessPoolExecutor``), with a tqdm bar — and cached as one
    ``np.savez_compressed`` file per recording under ``cache_dir/<settings key>/<class>/<name>.npz``; the key
    holds the frame count, ``split_by``, orientation and sensor size, so other settings never reuse stale
    frames. Cached frames are loaded with ``allow_pickle=False``.

    Args:
        root: the extracted release (10 class folders, see the module docstring).
        frames (int, optional): frames per sample :math:`T`. (default: ``10``)
        split_by (str, optional): ``"number"`` or ``"time"`` (see :func:`events_to_frames`).
            (default: ``"number"``)
        split (str, optional): one of :data:`~graphspike_kd.spiking.data.splits.SPLITS`. (default:
            ``"per_class_9to1"``)
        train (bool or None, optional): the train part, the test part, or every sample (``None``).
            (default: ``True``)
        seed (int, optional): seed of the ``"random_9to1"`` split. (default: ``42``)
        transform (callable, optional): ``transform(frames) -> frames`` on the float32 ``[T, 2, H, W]``
            tensor (torchvision / tonic style), e.g.
            :func:`~graphspike_kd.spiking.data.transforms.dvs_train_transform`. (default: ``None``)
        target_transform (callable, optional): ``target_transform(label)`` on the int label.
            (default: ``None``)
        orientation (str, optional): ``"auto"`` (spikingjelly's for AEDAT 2.0, raw for AEDAT4),
            ``"spikingjelly"`` or ``"raw"``. (default: ``"auto"``)
        cache_dir (path, optional): where frames are cached. (default: ``root/.cache/frames``)
        workers (int, optional): integration processes; ``0`` integrates in this process. (default:
            ``min(8, os.cpu_count())``)
        progress (bool, optional): show the tqdm bar while integrating. (default: ``True``)

    Shapes:
        - **item:** ``(frames, label)`` with frames float32 :math:`(T, 2, H, W)` (counts, no normalisation;
          ``H = W = 128`` before a resize transform) and an int label in ``[0, 10)``.
    """

    classes = CLASS_NAMES

    def __init__(
        self,
        root: str | os.PathLike,
        frames: int = 10,
        *,
        split_by: str = "number",
        split: str = "per_class_9to1",
        train: bool | None = True,
        seed: int = 42,
        transform: Callable | None = None,
        target_transform: Callable | None = None,
        orientation: str = "auto",
        cache_dir: str | os.PathLike | None = None,
        workers: int | None = None,
        progress: bool = True,
    ) -> None:
        if split_by not in SPLIT_BY:
            raise ValueError(f"CIFAR10DVS: split_by must be one of {SPLIT_BY}, got {split_by!r}")
        if split not in SPLITS:
            raise ValueError(f"CIFAR10DVS: split must be one of {SPLITS}, got {split!r}")
        if orientation not in ORIENTATIONS:
            raise ValueError(f"CIFAR10DVS: orientation must be one of {ORIENTATIONS}, got {orientation!r}")
        if not isinstance(frames, int) or frames < 1:
            raise ValueError(f"CIFAR10DVS: frames must be an int >= 1, got {frames!r}")
        self.root = Path(root)
        self.recordings = scan_release(self.root)
        fmt = self.recordings[0].fmt
        if any(r.fmt != fmt for r in self.recordings):
            raise ValueError(f"CIFAR10DVS: {self.root} mixes AEDAT 2.0 and AEDAT4 class folders; use one "
                             "release")
        if orientation == "auto":
            orientation = "spikingjelly" if fmt == "aedat2" else "raw"
        self.settings = FrameSettings(frames=frames, split_by=split_by, orientation=orientation)
        self.cache_dir = Path(cache_dir) if cache_dir is not None else self.root / ".cache" / "frames"
        self.split = split
        self.split_description = SPLIT_DESCRIPTIONS[split]
        self.train = train
        for name, fn in (("transform", transform), ("target_transform", target_transform)):
            if fn is not None and not callable(fn):
                raise TypeError(f"CIFAR10DVS: {name} must be callable or None, got {type(fn).__name__}")
        self.transform = transform
        self.target_transform = target_transform
        self.labels_all = np.array([r.label for r in self.recordings], dtype=np.int64)
        self.index_in_class_all = np.array([r.index_in_class for r in self.recordings], dtype=np.int64)
        if split == "tebn" and (self.index_in_class_all < 0).any():
            bad = self.recordings[int(np.flatnonzero(self.index_in_class_all < 0)[0])].path
            raise ValueError(f"CIFAR10DVS: split='tebn' needs file names ending in _<index>; got {bad}")
        if train is None:
            self.indices = np.arange(len(self.recordings), dtype=np.int64)
        else:
            tr, te = split_indices(self.labels_all, split, index_in_class=self.index_in_class_all, seed=seed)
            self.indices = tr if train else te
        self.prepare(workers=workers, progress=progress)

    def cache_path(self, rec: Recording) -> Path:
        return self.cache_dir / self.settings.key() / CLASS_NAMES[rec.label] / (rec.path.stem + ".npz")

    def prepare(self, *, workers: int | None = None, progress: bool = True) -> int:
        """Integrate every recording whose cached frames are missing (all splits at once); returns how
        many."""
        todo = [(r, self.settings, self.cache_path(r)) for r in self.recordings
                if not self.cache_path(r).exists()]
        if not todo:
            return 0
        if workers is None:
            workers = min(8, os.cpu_count() or 1)
        from tqdm.auto import tqdm

        bar = tqdm(total=len(todo), desc=f"CIFAR10-DVS frames ({self.settings.key()})", disable=not progress,
                   unit="file")
        try:
            if workers <= 0 or len(todo) == 1:
                for job in todo:
                    _integrate_job(job)
                    bar.update()
            else:
                with ProcessPoolExecutor(max_workers=workers) as pool:
                    chunksize = max(1, len(todo) // (workers * 16))
                    for _ in pool.map(_integrate_job, todo, chunksize=chunksize):
                        bar.update()
        finally:
            bar.close()
        return len(todo)

    @property
    def labels(self) -> np.ndarray:
        """Labels of the samples of this split, in item order."""
        return self.labels_all[self.indices]

    def __len__(self) -> int:
        return int(self.indices.shape[0])

    def load_frames(self, i: int) -> torch.Tensor:
        """Cached frames of item ``i`` as float32 ``[T, 2, 128, 128]`` (no transform)."""
        rec = self.recordings[int(self.indices[i])]
        path = self.cache_path(rec)
        with np.load(path, allow_pickle=False) as npz:
            arr = npz["frames"]
        expected = (self.settings.frames, 2, self.settings.sensor_size[1], self.settings.sensor_size[0])
        if arr.shape != expected:
            raise ValueError(f"{path}: cached frames have shape {arr.shape}, expected {expected}; delete the "
                             "file")
        return torch.from_numpy(arr.astype(np.float32))

    def __getitem__(self, i: int) -> tuple[Any, Any]:
        frames: Any = self.load_frames(i)
        target: Any = int(self.labels_all[self.indices[i]])
        if self.transform is not None:
            frames = self.transform(frames)
        if self.target_transform is not None:
            target = self.target_transform(target)
        return frames, target

    def __repr__(self) -> str:
        part = "all" if self.train is None else ("train" if self.train else "test")
        return (f"{type(self).__name__}({len(self)}, root={str(self.root)!r}, {self.settings.key()}, "
                f"split={self.split!r}, part={part!r})")
