"""``benchmarks/regenerate.py``: step order and selection, estimates, the recorded commands, and a run that
stops at the first failing step and still re-renders."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def regen(load_benchmark_script):
    return load_benchmark_script("regenerate")


def _names(steps):
    return [s.name for s in steps]


def test_dry_run_order_runs_then_plots_then_render(regen, capsys):
    assert regen.main(["--dry-run"]) == 0
    out = capsys.readouterr().out.splitlines()
    heads = [line.split()[1] for line in out if line[:4].strip().rstrip(".").isdigit()]
    assert heads[0] == "pkd-cora-paper-5"
    assert heads[-3:] == ["plot-pkd", "render-tables", "verify-results"]
    steps = {s.name: s for s in regen.build_steps()}
    phases = [steps[h].phase for h in heads]
    assert phases == sorted(phases)  # every run before every plot before the rendering
    assert out[-1].startswith(f"total: {len(heads)} steps, ~")
    assert not any(steps[h].tier != regen.DEFAULT for h in heads)  # no long or optional step by default
    speed = {"losses", "neurons", "ratebp", "ratebp-cpp", "ratebp-cpp-breakdown", "annotator-throughput"}
    assert speed | {"snn-digits-esd", "pkd-wisconsin-strict-5"} <= set(heads)


def test_only_groups_selects_those_groups_and_the_plot_and_render(regen):
    steps = regen.build_steps()
    sel = regen.select(steps, only=["pkd-headline", "snn-digits", "benchmarks-speed"])
    groups = [s.group for s in sel]
    assert set(groups) == {"pkd-headline", "snn-digits", "benchmarks-speed", "plots", "render"}
    assert groups.count("pkd-headline") == 12 and groups.count("snn-digits") == 8
    assert _names(sel)[-3:] == ["plot-pkd", "render-tables", "verify-results"]
    assert _names(regen.select(steps, only=["losses"])) == ["losses", "render-tables", "verify-results"]


def test_long_and_optional_steps_need_asking(regen):
    steps = regen.build_steps()
    default = set(_names(regen.select(steps)))
    assert not {"snn-digits-resnet18-esd", "adaspec", "pkd-scale", "pkd-cora-paper-1"} & default
    long = set(_names(regen.select(steps, include_long=True)))
    assert {"snn-digits-resnet18-esd", "adaspec", "federated", "kd-detection", "pkd-scale"} <= long
    assert "pkd-cora-paper-1" in _names(regen.select(steps, include_optional=True))
    assert "adaspec" in _names(regen.select(steps, only=["adaspec"]))  # named explicitly


def test_skip_and_unknown_names(regen, capsys):
    steps = regen.build_steps()
    sel = _names(regen.select(steps, skip=["neurons", "pkd-headline"]))
    assert "neurons" not in sel and not any(n.startswith("pkd-") for n in sel) and "plot-pkd" not in sel
    with pytest.raises(ValueError, match="unknown step or group 'nope'"):
        regen.select(steps, only=["nope"])
    with pytest.raises(SystemExit):
        regen.main(["--only", "nope", "--dry-run"])
    assert "unknown step or group 'nope'" in capsys.readouterr().err


def test_estimates_come_from_the_recorded_wall_time(regen, tmp_path):
    (tmp_path / "a.json").write_text(json.dumps({"wall_time_s": 42.5}))
    (tmp_path / "b.json").write_text(json.dumps({"provenance": {"wall_time_s": 7.0}}))
    (tmp_path / "c.json").write_text(json.dumps({"x": 1}))
    mk = lambda out: regen.Step("s", "g", "python x.py", out, 99.0)  # noqa: E731
    assert regen.estimate(mk("a.json"), tmp_path) == (42.5, "recorded")
    assert regen.estimate(mk("b.json"), tmp_path) == (7.0, "recorded")
    assert regen.estimate(mk("c.json"), tmp_path) == (99.0, "est.")
    assert regen.estimate(mk("missing.json"), tmp_path) == (99.0, "est.")


#: steps whose command deliberately differs from what their file records: the Cora cell is the README's
#: command, neurons adds T = 64, the repeats and the file without a command now write to benchmarks/results
CHANGED = {"pkd-cora-paper-5", "neurons", "ratebp-cpp-repeat1", "ratebp-cpp-repeat2", "distill-digits"}


def test_commands_are_the_recorded_ones(regen):
    checked = 0
    for step in regen.build_steps():
        path = ROOT / step.output if step.output else None
        if step.name in CHANGED or path is None or not path.exists():
            continue
        recorded = json.loads(path.read_text()).get("command")
        if not isinstance(recorded, str):
            continue
        recorded = recorded.replace("docs/results/", "benchmarks/results/")
        assert shlex.split(step.command) == shlex.split(recorded), step.name
        checked += 1
    assert checked >= 30
    readme = (ROOT / "README.md").read_text()
    assert f"&& {regen.README_PKD}\n" in readme
    cora = {s.name: s for s in regen.build_steps()}["pkd-cora-paper-5"].command
    assert cora == f"{regen.README_PKD} --output benchmarks/results/pkd_cora_paper_5.json"


def test_pkd_cells_use_the_grid_command_line(regen, load_benchmark_script, monkeypatch):
    """The same argument list as ``benchmarks/pkd_grid.py`` builds for a cell (run from the root)."""
    import graphspike_kd.benchmarks.pkd as pkd

    grid = load_benchmark_script("pkd_grid")
    seen = []
    monkeypatch.setattr(pkd, "main", seen.append)
    monkeypatch.chdir(ROOT)
    grid.run_grid(["texas"], [3], ["strict"], [], True, ROOT / "benchmarks" / "results")
    assert shlex.split(regen.pkd_cell_command("texas", "strict", 3))[3:] == seen[0]


def test_run_stops_at_the_first_failure_and_still_renders(regen, tmp_path, capsys):
    py = shlex.quote(sys.executable)
    steps = [
        regen.Step("ok", "g", f"{py} -c \"open('ok', 'w').write('1')\""),
        regen.Step("bad", "g", f"{py} -c \"raise SystemExit(3)\""),
        regen.Step("never", "g", f"{py} -c \"open('never', 'w').write('1')\""),
        regen.Step("render", "render", f"{py} -c \"open('rendered', 'w').write('1')\"", phase=regen.RENDER),
    ]
    assert regen.run(steps, tmp_path) == 1
    assert (tmp_path / "ok").exists() and (tmp_path / "rendered").exists()
    assert not (tmp_path / "never").exists()
    err = capsys.readouterr().err
    assert "step bad failed (exit 3)" in err and "not run: never" in err
    assert regen.run(steps[:1] + steps[3:], tmp_path) == 0
