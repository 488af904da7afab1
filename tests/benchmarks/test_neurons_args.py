"""``benchmarks/neurons.py``: arguments that would leave nothing to check or time are refused up front."""

from __future__ import annotations

import pytest


@pytest.mark.parametrize("flag", ["--warmup", "--reps"])
def test_zero_warmup_or_reps_is_refused_before_any_work(load_benchmark_script, flag, capsys, tmp_path):
    neurons = load_benchmark_script("neurons")
    with pytest.raises(SystemExit) as exc:
        neurons.main([flag, "0", "--skip-gpu", "--output", str(tmp_path / "n.json")])
    assert exc.value.code == 2
    assert "--warmup and --reps must be >= 1" in capsys.readouterr().err
    assert not (tmp_path / "n.json").exists()
