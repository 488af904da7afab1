"""CIFAR10DVS on a tiny release-shaped folder written in the real AEDAT 2.0 format; splits; transforms."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from graphspike_kd.spiking.data import (
    CIFAR10DVS,
    CLASS_NAMES,
    RandomHorizontalFlip,
    RandomRoll,
    Resize,
    dvs_train_transform,
    events_to_frames,
    read_aedat,
    spikingjelly_orientation,
    split_indices,
    write_aedat,
)
from graphspike_kd.spiking.data import cifar10dvs as c10

PER_CLASS = 10


def _random_events(rng, n):
    ev = np.zeros(n, dtype=[("x", "i2"), ("y", "i2"), ("t", "i8"), ("p", "?")])
    ev["x"] = rng.integers(0, 128, n)
    ev["y"] = rng.integers(0, 128, n)
    ev["p"] = rng.integers(0, 2, n).astype(bool)
    ev["t"] = np.sort(rng.integers(0, 10**6, n))
    return ev


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    root = tmp_path_factory.mktemp("cifar10dvs")
    rng = np.random.default_rng(0)
    for cls in CLASS_NAMES:
        (root / cls).mkdir()
        for i in range(PER_CLASS):
            events = _random_events(rng, int(rng.integers(50, 300)))
            write_aedat(root / cls / f"cifar10_{cls}_{i}.aedat", events)
    return root


def test_orientation_is_spikingjelly():
    ev = np.zeros(2, dtype=[("x", "i2"), ("y", "i2"), ("t", "i8"), ("p", "?")])
    ev["x"], ev["y"], ev["p"], ev["t"] = [3, 127], [10, 0], [True, False], [5, 6]
    out = spikingjelly_orientation(ev)
    assert out["x"].tolist() == [117, 127] and out["y"].tolist() == [124, 0]
    assert out["p"].tolist() == [False, True] and out["t"].tolist() == [5, 6]


def test_dataset_integrates_caches_and_splits(release, tmp_path):
    cache = tmp_path / "cache"
    ds = CIFAR10DVS(release, frames=4, train=None, cache_dir=cache, workers=2, progress=False)
    assert len(ds) == 10 * PER_CLASS
    # lexicographic order inside a class, as spikingjelly's DatasetFolder: 0, 1, 10?, 2, ... (here 0..9)
    names = [r.path.name for r in ds.recordings[:PER_CLASS]]
    assert names == sorted(names) and ds.recordings[0].label == 0 and ds.recordings[-1].label == 9
    for i in (0, 37, 99):
        frames, label = ds[i]
        rec = ds.recordings[i]
        assert label == rec.label and frames.shape == (4, 2, 128, 128) and frames.dtype == torch.float32
        events = read_aedat(rec.path)
        expected = events_to_frames(spikingjelly_orientation(events), 4)
        np.testing.assert_array_equal(frames.numpy(), expected)
        assert frames.sum() == len(events)
    files = list((cache / "frames4_number_spikingjelly_128x128").rglob("*.npz"))
    assert len(files) == 10 * PER_CLASS
    # a second construction re-uses the cache; other settings get their own folder
    again = CIFAR10DVS(release, frames=4, train=None, cache_dir=cache, workers=0, progress=False)
    assert again.prepare(workers=0, progress=False) == 0
    time_ds = CIFAR10DVS(release, frames=2, split_by="time", train=None, cache_dir=cache, workers=0,
                         progress=False)
    assert (cache / "frames2_time_spikingjelly_128x128").is_dir() and len(time_ds) == 100

    train = CIFAR10DVS(release, frames=4, train=True, cache_dir=cache, progress=False)
    test = CIFAR10DVS(release, frames=4, train=False, cache_dir=cache, progress=False)
    assert len(train) == 90 and len(test) == 10
    assert sorted(np.bincount(test.labels).tolist()) == [1] * 10
    assert all(ds.recordings[i].index_in_class == 9 for i in test.indices)
    tebn_test = CIFAR10DVS(release, frames=4, split="tebn", train=False, cache_dir=cache, progress=False)
    assert len(tebn_test) == 100  # every file index here is < 100
    rnd = CIFAR10DVS(release, frames=4, split="random_9to1", train=False, seed=3, cache_dir=cache,
                     progress=False)
    assert len(rnd) == 10 and "random" in rnd.split_description


def test_dataset_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="class folders"):
        CIFAR10DVS(tmp_path, progress=False)
    with pytest.raises(ValueError, match="split must be one of"):
        CIFAR10DVS(tmp_path, split="first900", progress=False)


class _FakeDecoder:
    """Stands in for ``aedat.Decoder``: one event stream (id 0) in two packets, one frame stream (id 1)."""

    store: dict = {}

    def __init__(self, path):
        self.raw = self.store[path]

    def id_to_stream(self):
        return {1: {"type": "frame"}, 0: {"type": "events"}}

    def __iter__(self):
        yield {"stream_id": 0, "events": self.raw[:7]}
        yield {"stream_id": 1, "frame": None}
        yield {"stream_id": 0, "events": self.raw[7:]}


def test_aedat4_release_through_the_aedat_decoder(tmp_path, monkeypatch):
    import sys
    import types

    rng = np.random.default_rng(1)
    store = {}
    for cls in CLASS_NAMES:
        (tmp_path / cls).mkdir()
        path = tmp_path / cls / f"{cls}_0.aedat4"
        path.write_bytes(b"fake")
        raw = np.zeros(20, dtype=[("t", "<u8"), ("x", "<u2"), ("y", "<u2"), ("on", "?")])
        raw["t"] = np.arange(20)
        raw["x"] = rng.integers(0, 128, 20)
        raw["y"] = rng.integers(0, 128, 20)
        raw["on"] = rng.integers(0, 2, 20).astype(bool)
        store[str(path)] = raw
    monkeypatch.setattr(_FakeDecoder, "store", store)
    monkeypatch.setitem(sys.modules, "aedat", types.SimpleNamespace(Decoder=_FakeDecoder))
    ds = CIFAR10DVS(tmp_path, frames=2, train=None, cache_dir=tmp_path / "c", workers=0, progress=False)
    assert ds.settings.orientation == "raw" and len(ds) == 10
    frames, label = ds[3]
    raw = store[str(ds.recordings[3].path)]
    assert frames[:, 1].sum() == raw["on"].sum() and frames.sum() == 20 and label == 3
    i = int(np.flatnonzero(raw["on"])[0])
    assert frames[0 if i < 10 else 1, 1, raw["y"][i], raw["x"][i]] >= 1


def test_aedat4_without_the_decoder_names_the_extra(tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "aedat", None)  # import fails
    with pytest.raises(ImportError, match=r"graphspike_kd\[events\]"):
        c10.read_aedat4_events(tmp_path / "x.aedat4")


def test_reading_aedat4_does_not_import_tonic(tmp_path):
    import subprocess
    import sys

    code = (
        "import sys, types, numpy as np\n"
        "raw = np.zeros(3, dtype=[('t', '<u8'), ('x', '<u2'), ('y', '<u2'), ('on', '?')])\n"
        "class D:\n"
        "    def __init__(self, p): pass\n"
        "    def id_to_stream(self): return {0: {'type': 'events'}}\n"
        "    def __iter__(self): yield {'stream_id': 0, 'events': raw}\n"
        "sys.modules['aedat'] = types.SimpleNamespace(Decoder=D)\n"
        "from graphspike_kd.spiking.data import read_aedat4_events\n"
        "assert len(read_aedat4_events('x.aedat4')) == 3\n"
        "print(sorted(m for m in ('tonic', 'librosa', 'numba', 'h5py') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_one_argument_transform_and_target_transform(release, tmp_path):
    seen = []

    def transform(frames):  # torchvision / tonic style: one argument
        seen.append(tuple(frames.shape))
        return frames[:, :1]

    ds = CIFAR10DVS(release, frames=2, train=None, cache_dir=tmp_path / "c", workers=0, progress=False,
                    transform=transform, target_transform=lambda y: f"class {y}")
    frames, target = ds[0]
    assert seen == [(2, 2, 128, 128)] and frames.shape == (2, 1, 128, 128)
    assert target == f"class {int(ds.labels[0])}"
    frames, _ = CIFAR10DVS(release, frames=2, train=None, cache_dir=tmp_path / "c", workers=0,
                           progress=False, transform=Resize(48))[0]
    assert frames.shape == (2, 2, 48, 48)
    with pytest.raises(TypeError, match="target_transform must be callable"):
        CIFAR10DVS(release, frames=2, cache_dir=tmp_path / "c", workers=0, progress=False,
                   target_transform=3)


def test_split_conventions_match_references():
    labels = np.repeat(np.arange(10), 1000)
    tr, te = split_indices(labels)
    assert len(tr) == 9000 and len(te) == 1000 and (np.bincount(labels[te]) == 100).all()
    assert (te.reshape(10, 100) % 1000 >= 900).all()
    tr, te = split_indices(labels, "random_9to1", seed=42)
    gen = torch.Generator().manual_seed(42)
    ref = torch.utils.data.random_split(range(10000), [9000, 1000], generator=gen)
    assert tr.tolist() == list(ref[0].indices) and te.tolist() == list(ref[1].indices)
    index_in_class = np.tile(np.arange(1000), 10)
    tr, te = split_indices(labels, "tebn", index_in_class=index_in_class)
    assert len(te) == 1000 and (index_in_class[te] < 100).all() and (index_in_class[tr] >= 100).all()
    with pytest.raises(ValueError, match="index_in_class"):
        split_indices(labels, "tebn")


def test_transforms():
    x = torch.arange(2 * 2 * 8 * 8, dtype=torch.float32).reshape(2, 2, 8, 8)
    assert torch.equal(RandomHorizontalFlip(1.0)(x), x.flip(-1))
    assert torch.equal(RandomHorizontalFlip(0.0)(x), x)
    rolled = RandomRoll(5)(x, torch.Generator().manual_seed(0))
    assert torch.equal(rolled, RandomRoll(5)(x, torch.Generator().manual_seed(0)))
    shifts = {(dy, dx) for dy in range(-5, 6) for dx in range(-5, 6)
              if torch.equal(torch.roll(x, (dy, dx), (-2, -1)), rolled)}
    assert shifts
    assert Resize(48)(torch.ones(3, 2, 128, 128)).shape == (3, 2, 48, 48)
    assert torch.allclose(Resize(64)(torch.ones(1, 2, 128, 128)), torch.ones(1, 2, 64, 64))
    out = dvs_train_transform(48)(torch.rand(5, 2, 128, 128), torch.Generator().manual_seed(1))
    assert out.shape == (5, 2, 48, 48)


def test_cache_file_is_loaded_without_pickle(release, tmp_path, monkeypatch):
    seen = []
    real_load = np.load

    def spy(*args, **kwargs):
        seen.append(kwargs.get("allow_pickle"))
        return real_load(*args, **kwargs)

    ds = CIFAR10DVS(release, frames=1, train=None, cache_dir=tmp_path, workers=0, progress=False)
    monkeypatch.setattr(c10.np, "load", spy)
    ds[0]
    assert seen == [False]
