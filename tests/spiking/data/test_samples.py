"""sample_recording: where it looks, the sha256 check, and the error that says where to put a missing file."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from graphspike_kd.spiking.data import sample_recording, samples

NAME = "alex_walking_again.aedat"


@pytest.fixture
def no_checkout(monkeypatch):
    """Search only $GRAPHSPIKE_KD_DATA (a checkout's data/ may hold the user's copy of the recordings)."""
    real = samples._candidates
    monkeypatch.setattr(samples, "_candidates", lambda: [c for c in real() if c[0] != "source checkout"])


def test_missing_file_names_where_to_put_it(tmp_path, monkeypatch, no_checkout):
    monkeypatch.setenv("GRAPHSPIKE_KD_DATA", str(tmp_path))
    expected = tmp_path / "dvs128_aedat2" / NAME
    with pytest.raises(FileNotFoundError) as err:
        sample_recording(NAME)
    msg = str(err.value)
    assert f"put it at {expected}" in msg and f"$GRAPHSPIKE_KD_DATA: {expected}" in msg
    assert samples.SOURCE_URL.format(name=NAME) in msg and samples.RECORDINGS[NAME][0] in msg
    assert "not distributed" in msg
    monkeypatch.delenv("GRAPHSPIKE_KD_DATA")
    with pytest.raises(FileNotFoundError, match=r"set GRAPHSPIKE_KD_DATA=.*GRAPHSPIKE_KD_DATA is not set"):
        sample_recording(NAME)


def test_checksum_is_verified(tmp_path, monkeypatch, no_checkout):
    monkeypatch.setenv("GRAPHSPIKE_KD_DATA", str(tmp_path))
    path = tmp_path / "dvs128_aedat2" / NAME
    path.parent.mkdir()
    content = b"#!AER-DAT2.0\r\n" + bytes(range(16))
    path.write_bytes(content)
    with pytest.raises(ValueError, match=rf"checksum mismatch for .*{NAME}: sha256 "
                                         rf"{hashlib.sha256(content).hexdigest()}, expected"):
        sample_recording(NAME)
    # a file whose sha256 is the recorded one is returned from $GRAPHSPIKE_KD_DATA
    sha, n, first = samples.RECORDINGS[NAME]
    monkeypatch.setitem(samples.RECORDINGS, NAME, (hashlib.sha256(content).hexdigest(), n, first))
    assert sample_recording(NAME) == path


def test_unknown_name():
    with pytest.raises(ValueError, match=r"unknown recording 'x\.aedat'; available: \['alex"):
        sample_recording("x.aedat")


def test_checkout_data_folder_is_searched_after_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("GRAPHSPIKE_KD_DATA", str(tmp_path))
    candidates = samples._candidates()
    assert candidates[0] == ("$GRAPHSPIKE_KD_DATA", tmp_path)
    checkout = Path(samples.__file__).resolve().parents[3]
    expected = [("source checkout", checkout / "data")] if (checkout / "pyproject.toml").is_file() else []
    assert candidates[1:] == expected
    monkeypatch.delenv("GRAPHSPIKE_KD_DATA")
    assert samples._candidates() == expected
