"""The annotator throughput benchmark runs end to end on a small, fast configuration."""

from __future__ import annotations

import json


def test_throughput_benchmark_smoke(load_benchmark_script, tmp_path):
    bench = load_benchmark_script("annotator_throughput")
    out = tmp_path / "t.json"
    result = bench.main(
        [
            "--nodes",
            "64",
            "--rounds",
            "1",
            "--latency",
            "0.01",
            "--configs",
            "keepalive_c32",
            "--out",
            str(out),
        ]
    )
    saved = json.loads(out.read_text())
    assert saved["configs"]["keepalive_c32"]["per_s_median"] > 0 and saved["invalid_answers"] == 0
    assert result["mean_confidence"] == result["expected_confidence"]  # confidence from the logprobs
