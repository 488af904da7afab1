"""``benchmarks/verify_results.py`` and ``benchmarks/backfill_provenance.py`` on a throw-away repository:
a tampered figure, a missing marker, a results table outside markers, a commit that is not an ancestor of
HEAD and a file without provenance each fail; backfilled records pass, listed, and fail ``--strict``."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest

from graphspike_kd.benchmarks import provenance
from tests.conftest import BENCHMARKS

RESULTS_JSON = {"batch": 256, "results": [
    {"classes": 10, "median_us": {"cross_entropy": 135.2},
     "ratio_to_ce": {"kd": 2.24, "dkd": 10.27, "dist": 11.22, "pld": 10.81}},
]}


def _git(repo, *args: str) -> str:
    env = dict(os.environ, GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@e", GIT_COMMITTER_NAME="t",
               GIT_COMMITTER_EMAIL="t@e")
    return subprocess.run(["git", *args], cwd=repo, env=env, check=True, capture_output=True,
                          text=True).stdout.strip()


@pytest.fixture(scope="module")
def verify(load_benchmark_script):
    return load_benchmark_script("verify_results")


@pytest.fixture(scope="module")
def backfill(load_benchmark_script):
    return load_benchmark_script("backfill_provenance")


def _doc(table: str) -> str:
    return f"# Results\n\nSome text.\n\n<!-- losses-cost -->\n{table}\n<!-- /losses-cost -->\n\nMore text.\n"


@pytest.fixture
def repo(tmp_path, verify):
    """A repository with the real renderer, one results file (with a provenance record of HEAD) and a doc
    holding its rendered table; everything committed and verified clean."""
    root = tmp_path / "repo"
    (root / "benchmarks" / "results").mkdir(parents=True)
    (root / "docs").mkdir()
    shutil.copy(BENCHMARKS / "render_tables.py", root / "benchmarks" / "render_tables.py")
    (root / "README.md").write_text("# repo\n\n| option | default |\n|---|---|\n| `lr` | `0.01` |\n")
    _git(root, "init", "-q")
    _git(root, "add", ".")
    _git(root, "commit", "-q", "-m", "code")
    results = root / "benchmarks" / "results"
    provenance.write_json(results / "losses.json", RESULTS_JSON, command="python benchmarks/losses.py",
                          repo_dir=root)
    table = verify.load_render_tables(root).RENDERERS["losses-cost"][0](results)
    (root / "docs" / "results.md").write_text(_doc(table))
    _git(root, "add", ".")
    _git(root, "commit", "-q", "-m", "results")
    return root


def _run(verify, root, *args: str):
    return verify.main(["--root", str(root), *args])


def test_a_clean_repository_passes(verify, repo, capsys):
    report = verify.verify(repo)
    assert report.failures == [] and report.warnings == [] and report.backfilled == []
    assert _run(verify, repo, "--strict") == 0
    assert "verify_results: ok" in capsys.readouterr().out


def test_a_tampered_figure_fails_naming_file_and_table(verify, repo, capsys):
    doc = repo / "docs" / "results.md"
    doc.write_text(doc.read_text().replace("2.24", "2.42"))
    assert _run(verify, repo) == 1
    out = capsys.readouterr().out
    assert "FAIL docs/results.md:5: table losses-cost differs from its files (losses.json)" in out


def test_a_missing_closing_marker_fails(verify, repo, capsys):
    doc = repo / "docs" / "results.md"
    doc.write_text(doc.read_text().replace("<!-- /losses-cost -->\n", ""))
    assert _run(verify, repo) == 1
    out = capsys.readouterr().out
    assert "docs/results.md:5: <!-- losses-cost --> is never closed" in out


def test_a_results_table_outside_markers_fails_unless_marked_not_results(verify, repo, capsys):
    doc = repo / "docs" / "results.md"
    text = doc.read_text()
    table = text.split("<!-- losses-cost -->\n", 1)[1].split("<!-- /losses-cost -->", 1)[0]
    doc.write_text(text + "\n" + table)  # a copy of the table typed in by hand
    assert _run(verify, repo) == 1
    out = capsys.readouterr().out
    assert "docs/results.md:13: a table with measured figures (2.24, 10.27, 11.22) outside" in out
    doc.write_text(text + "\n<!-- not-results: a worked example -->\n" + table)
    assert _run(verify, repo) == 0


def test_markers_removed_leave_a_table_that_fails(verify, repo, capsys):
    doc = repo / "docs" / "results.md"
    text = doc.read_text().replace("<!-- losses-cost -->\n", "")
    doc.write_text(text.replace("<!-- /losses-cost -->\n", ""))
    assert _run(verify, repo) == 1
    assert "outside <!-- name --> markers" in capsys.readouterr().out


def _set_commit(path, commit):
    data = json.loads(path.read_text())
    data["provenance"]["git_commit"] = commit
    path.write_text(json.dumps(data, indent=2) + "\n")


def test_a_commit_that_is_not_an_ancestor_of_head_fails(verify, repo, capsys):
    _git(repo, "checkout", "-q", "-b", "side")
    (repo / "side.txt").write_text("x\n")
    _git(repo, "add", "side.txt")
    _git(repo, "commit", "-q", "-m", "side")
    side = _git(repo, "rev-parse", "HEAD")
    _git(repo, "checkout", "-q", "-")
    _set_commit(repo / "benchmarks" / "results" / "losses.json", side)
    assert _run(verify, repo) == 1
    assert f"benchmarks/results/losses.json: git_commit {side[:12]} is not an ancestor of HEAD" in (
        capsys.readouterr().out)


def test_an_unknown_or_missing_commit_fails(verify, repo, capsys):
    path = repo / "benchmarks" / "results" / "losses.json"
    _set_commit(path, "0123456789abcdef" * 2 + "01234567")
    assert _run(verify, repo) == 1
    assert "is unknown to this repository" in capsys.readouterr().out
    _set_commit(path, None)
    assert _run(verify, repo) == 1
    assert "losses.json: provenance has no git_commit" in capsys.readouterr().out


def test_a_file_without_provenance_or_with_missing_keys_fails(verify, repo, capsys):
    (repo / "benchmarks" / "results" / "other.json").write_text('{"command": "python x.py", "v": 1.5}\n')
    path = repo / "benchmarks" / "results" / "losses.json"
    data = json.loads(path.read_text())
    del data["provenance"]["packages"]
    path.write_text(json.dumps(data))
    assert _run(verify, repo) == 1
    out = capsys.readouterr().out
    assert "FAIL benchmarks/results/other.json: no provenance record" in out
    assert "FAIL benchmarks/results/losses.json: provenance lacks packages" in out


def test_backfill_adds_a_record_from_git_history_only(verify, backfill, repo, capsys):
    old = repo / "benchmarks" / "results" / "old.json"
    old.write_text(json.dumps({"command": "python old.py --x", "wall_time_s": 12.5, "machine": "m1",
                               "acc": [0.5]}, indent=1) + "\n")
    assert _run(verify, repo) == 1  # no provenance yet
    with pytest.raises(ValueError, match="never committed"):
        backfill.backfill(old, repo)
    _git(repo, "add", ".")
    _git(repo, "commit", "-q", "-m", "old results")
    added = _git(repo, "rev-parse", "HEAD")
    _git(repo, "commit", "-q", "--allow-empty", "-m", "later")
    assert backfill.main(["--root", str(repo)]) == 0
    data = json.loads(old.read_text())
    assert data["provenance"] == {
        "backfilled": True, "git_commit": added, "command": "python old.py --x", "note": backfill.NOTE,
        "wall_time_s": 12.5, "recorded_in_file": {"machine": "m1"},
    }
    assert {k: v for k, v in data.items() if k != "provenance"} == {
        "command": "python old.py --x", "wall_time_s": 12.5, "machine": "m1", "acc": [0.5]}
    assert old.read_text().startswith('{\n "command"')  # the file's own indentation is kept
    before = old.read_text()
    assert backfill.backfill(old, repo) is None and old.read_text() == before  # already done
    capsys.readouterr()
    assert _run(verify, repo) == 0
    assert "note 1 results file(s) carry a backfilled provenance record" in capsys.readouterr().out
    assert _run(verify, repo, "--strict") == 1


def test_unnamed_png_is_a_warning_and_fails_strict(verify, repo, capsys):
    (repo / "benchmarks" / "results" / "stray.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    assert _run(verify, repo) == 0
    assert "warn benchmarks/results/stray.png: no results JSON or Markdown file names this PNG" in (
        capsys.readouterr().out)
    assert _run(verify, repo, "--strict") == 1
    (repo / "docs" / "plots.md").write_text("![plot](../benchmarks/results/stray.png)\n")
    assert _run(verify, repo, "--strict") == 0


@pytest.mark.parametrize(("cell", "figure"), [
    ("80.70 ± 0.80", True), ("**80.70**", True), ("85 %", True), ("2.4x", True), ("0.93", True),
    ("1.2 s", True), ("1.35 ms (median)", True), ("135 µs", False), ("12", False), ("`0.01`", False),
    ("GPT-3.5 zero-shot", False), ("spikingjelly 2.0", False), ("τ = 0.05", False), ("–", False),
    ("cupy-cuda12x", False), ("", False),
])
def test_is_figure_cell(verify, cell, figure):
    assert verify.is_figure_cell(cell) is figure


def test_required_keys_match_the_helper(verify):
    assert verify.REQUIRED_KEYS == provenance.REQUIRED_KEYS


def test_the_repository_docs_have_no_results_table_outside_markers(verify):
    """Today's docs: every table with measured figures is rendered (or marked as not results)."""
    rt = verify.load_render_tables()
    problems = [p for doc in rt.documents() for p in verify.check_tables(doc, doc.name, set(rt.RENDERERS))]
    assert problems == []


def test_a_shallow_clone_fails_the_commit_check(verify, repo, tmp_path, capsys):
    _git(repo, "commit", "-q", "--allow-empty", "-m", "later")
    shallow = tmp_path / "shallow"
    _git(tmp_path, "clone", "-q", "--depth", "1", f"file://{repo}", str(shallow))
    assert _run(verify, shallow) == 1
    assert "the clone is shallow" in capsys.readouterr().out
