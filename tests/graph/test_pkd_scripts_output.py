"""``benchmarks/merge_pkd_results.py`` and ``benchmarks/plot_pkd.py`` check ``--output`` before reading
anything."""

from __future__ import annotations

import pytest


@pytest.mark.parametrize("script", ["merge_pkd_results", "plot_pkd"])
def test_bad_output_fails_before_reading_the_inputs(load_benchmark_script, tmp_path, capsys, script):
    module = load_benchmark_script(script)
    (tmp_path / "plain").write_text("not a folder")
    bad = tmp_path / "plain" / "out.file"
    missing = tmp_path / "never_written.json"  # reading it first would raise FileNotFoundError
    with pytest.raises(SystemExit) as exc:
        module.main([str(missing), "--output", str(bad)])
    assert exc.value.code == 2
    assert f"--output {bad}" in capsys.readouterr().err
