"""Smoke test of the runnable KD example (a few steps, one seed): it trains, reports and writes JSON."""

from __future__ import annotations

import json

from graphspike_kd.benchmarks import distill_digits


def test_distill_digits_runs_and_writes_json(tmp_path):
    out = tmp_path / "digits.json"
    result = distill_digits.main(["--seeds", "0", "--steps", "30", "--quiet", "--output", str(out)])
    saved = json.loads(out.read_text())
    assert set(saved["methods"]) == {"teacher", *distill_digits.METHODS}
    for entry in saved["methods"].values():
        assert len(entry["acc"]) == 1 and 0.0 <= entry["mean"] <= 1.0
    # 30 steps of Adam already put the teacher far above chance (0.1) on digits.
    assert result["methods"]["teacher"]["mean"] > 0.5
