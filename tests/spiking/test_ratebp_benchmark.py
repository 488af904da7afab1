"""``benchmarks/ratebp.py``: interleaved rounds, medians and per-round speed-ups (fake workers), and one
real run of the workers on a tiny configuration."""

from __future__ import annotations

import json
import subprocess

import pytest


@pytest.fixture(scope="module")
def bench(load_benchmark_script):
    return load_benchmark_script("ratebp")


def test_rounds_are_interleaved_and_speedups_are_per_round_medians(bench, tmp_path, monkeypatch):
    # round r: BPTT takes 6 + r seconds at T = 16, rate-BP 2 (rounds 0, 2) or 3 (round 1); T = 4 is 1 s
    calls = []

    def fake_run(cmd, **kwargs):
        method, T = cmd[cmd.index("--method") + 1], int(cmd[cmd.index("--T-one") + 1])
        r = sum(1 for c in calls if c == (method, T))
        calls.append((method, T))
        step = 1.0 if T == 4 else (6.0 + r if method == "bptt" else (3.0 if r == 1 else 2.0))
        rec = {"method": method, "T": T, "peak_mem_mb": 100.0 + T + r, "step_s": step}
        return subprocess.CompletedProcess(cmd, 0, stdout=json.dumps(rec) + "\n", stderr="")

    monkeypatch.setattr(bench.subprocess, "run", fake_run)
    out = tmp_path / "r.json"
    res = bench.main(["--T", "4", "16", "--methods", "bptt", "ratebp_chunked", "--repeats", "3", "--quiet",
                      "--output", str(out)])
    one_round = [("bptt", 4), ("ratebp_chunked", 4), ("bptt", 16), ("ratebp_chunked", 16)]
    assert calls == one_round * 3  # every configuration once per round, rounds one after the other
    assert res["bptt"]["step_s_rounds"] == [[1.0, 1.0, 1.0], [6.0, 7.0, 8.0]]
    assert res["bptt"]["step_s"] == [1.0, 7.0]
    assert res["ratebp_chunked"]["step_s"] == [1.0, 2.0]
    assert res["ratebp_chunked"]["peak_mem_mb"] == [105.0, 117.0]
    # per-round ratios 3.0, 7/3, 4.0: median 3.0 (the ratio of the medians would be 3.5)
    assert res["ratios"]["speedup_ratebp_chunked_vs_bptt_at_max_T_rounds"] == [3.0, 2.333, 4.0]
    assert res["ratios"]["speedup_ratebp_chunked_vs_bptt_at_max_T"] == 3.0
    assert json.loads(out.read_text())["repeats"] == 3


def test_bad_repeats_rejected(bench):
    with pytest.raises(SystemExit):
        bench.main(["--repeats", "0", "--quiet"])


def test_workers_run_a_tiny_configuration(bench, tmp_path):
    out = tmp_path / "r.json"
    res = bench.main(["--T", "2", "--arch", "vggsnn", "--batch", "2", "--steps", "1", "--methods", "bptt",
                      "ratebp_chunked", "--steps-per-call", "1", "--quiet", "--output", str(out)])
    for m in ("bptt", "ratebp_chunked"):
        assert res[m]["step_s"][0] > 0 and res[m]["peak_mem_mb"][0] > 0
    assert res["ratios"]["speedup_ratebp_chunked_vs_bptt_at_max_T"] > 0
    assert json.loads(out.read_text())["command"].startswith("python benchmarks/ratebp.py --T 2")


def test_breakdown_counts_the_spike_pass_convolutions(bench, tmp_path):
    out = tmp_path / "b.json"
    res = bench.main(["--T", "2", "--arch", "vggsnn", "--batch", "2", "--steps", "1", "--breakdown",
                      str(out)])
    # VGGSNN on 32x32: the stem conv once per call on the 2 images, the other convs on the T*N = 4 samples
    # (channels 64 -> 128 at 32x32, 128 -> 256 and 256 -> 256 at 16x16, 256 -> 512, 512 -> 512 at 8x8,
    # 512 -> 512 twice at 4x4); the rate pass's convolutions are not counted
    layers = [(64, 128, 32), (128, 256, 16), (256, 256, 16), (256, 512, 8), (512, 512, 8), (512, 512, 4),
              (512, 512, 4)]
    expected = 2 * 64 * 3 * 9 * 32 * 32 + sum(4 * cin * cout * 9 * hw * hw for cin, cout, hw in layers)
    assert res["spike_conv_macs"] == expected
    med = res["median_s"]
    assert med["spike_conv"] > 0 and med["rate_forward"] > 0 and med["backward"] > 0
    assert abs(med["spike_pass"] - (med["spike_conv"] + med["spike_pool"] + med["spike_rest"])) < 1e-3
    assert json.loads(out.read_text())["spike_conv_gflops"] > 0
