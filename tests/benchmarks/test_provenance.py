"""``graphspike_kd.benchmarks.provenance``: atomic writes, the git state (dirty outside the results),
the record outside a checkout, and the reconstructed command line."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys

import pytest

from graphspike_kd.benchmarks import provenance


def _git(repo, *args: str) -> str:
    env = dict(os.environ, GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@e", GIT_COMMITTER_NAME="t",
               GIT_COMMITTER_EMAIL="t@e")
    return subprocess.run(["git", *args], cwd=repo, env=env, check=True, capture_output=True,
                          text=True).stdout.strip()


@pytest.fixture
def repo(tmp_path):
    """A git repository with a code file, a results file and a rendered doc, all committed."""
    root = tmp_path / "repo"
    (root / "benchmarks" / "results").mkdir(parents=True)
    (root / "docs").mkdir()
    (root / "code.py").write_text("x = 1\n")
    (root / "benchmarks" / "results" / "r.json").write_text("{}\n")
    (root / "docs" / "results.md").write_text("table\n")
    (root / "README.md").write_text("readme\n")
    _git(root, "init", "-q")
    _git(root, "add", ".")
    _git(root, "commit", "-q", "-m", "init")
    return root


# ----------------------------------------------------------------------------------------- atomic writes
def test_write_json_adds_the_record_and_keeps_the_payload(tmp_path, repo):
    out = tmp_path / "sub" / "r.json"
    payload = {"rows": [1, 2], "command": "python x.py --a"}
    started = provenance.now() - 2.0
    written = provenance.write_json(out, payload, started=started, repo_dir=repo)
    data = json.loads(out.read_text())
    assert data == written and "provenance" not in payload  # the argument is not modified
    assert data["rows"] == [1, 2] and data["command"] == "python x.py --a"
    rec = data["provenance"]
    assert set(provenance.REQUIRED_KEYS) <= set(rec)
    assert rec["git_commit"] == _git(repo, "rev-parse", "HEAD") and len(rec["git_commit"]) == 40
    assert rec["dirty"] is False and rec["dirty_paths"] == []
    assert 2.0 <= rec["wall_time_s"] < 60
    assert rec["packages"]["python"] and "torch" in rec["packages"]
    assert rec["cpu_count"] == os.cpu_count() and isinstance(rec["cpu_model"], str) and rec["cpu_model"]
    assert os.uname().nodename not in rec["platform"]


def test_failing_serialisation_leaves_the_old_file_and_no_temporary(tmp_path, repo):
    out = tmp_path / "r.json"
    out.write_text('{"old": true}\n')
    with pytest.raises(TypeError):
        provenance.write_json(out, {"bad": object()}, repo_dir=repo)
    assert out.read_text() == '{"old": true}\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json", "repo"]


def test_failing_replace_removes_the_temporary(tmp_path, monkeypatch):
    out = tmp_path / "f.bin"
    out.write_bytes(b"old")

    def boom(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(provenance.os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        provenance.atomic_write_bytes(out, b"new")
    assert out.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.bin"]


def test_atomic_savefig_writes_a_png(tmp_path):
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    out = provenance.atomic_savefig(fig, tmp_path / "p.png", dpi=50)
    plt.close(fig)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in tmp_path.iterdir()] == ["p.png"]


# ------------------------------------------------------------------------------------------------- git
def test_changes_to_results_and_rendered_docs_are_not_dirty(repo):
    (repo / "benchmarks" / "results" / "r.json").write_text('{"new": 1}\n')
    (repo / "docs" / "results.md").write_text("new table\n")
    (repo / "README.md").write_text("new readme\n")
    (repo / "untracked.py").write_text("y = 2\n")  # untracked files do not count
    state = provenance.git_state(repo)
    assert state["dirty"] is False and state["dirty_paths"] == [] and state["git_note"] is None


def test_a_modified_code_file_is_dirty_and_listed(repo):
    (repo / "code.py").write_text("x = 2\n")
    (repo / "README.md").write_text("new readme\n")
    state = provenance.git_state(repo)
    assert state["dirty"] is True and state["dirty_paths"] == ["code.py"]
    _git(repo, "add", "code.py")  # staged counts as well
    assert provenance.git_state(repo)["dirty_paths"] == ["code.py"]


@pytest.mark.parametrize(("path", "expected"), [
    ("benchmarks/results/x.json", True), ("benchmarks/results/sub/x.png", True), ("README.md", True),
    ("docs/results-graph.md", True), ("benchmarks/README.md", True), ("benchmarks/pkd_grid.py", False),
    ("docs/conf.py", False), ("graphspike_kd/benchmarks/pkd.py", False), ("src/README.md", False),
])
def test_is_results_path(path, expected):
    assert provenance.is_results_path(path) is expected


def test_outside_a_checkout_the_commit_is_null_with_the_reason(tmp_path):
    folder = tmp_path / "plain"
    folder.mkdir()
    env_ceiling = os.environ.get("GIT_CEILING_DIRECTORIES")
    os.environ["GIT_CEILING_DIRECTORIES"] = str(tmp_path)  # do not find a repository above tmp_path
    try:
        rec = provenance.collect("python x.py", repo_dir=folder)
    finally:
        if env_ceiling is None:
            del os.environ["GIT_CEILING_DIRECTORIES"]
        else:
            os.environ["GIT_CEILING_DIRECTORIES"] = env_ceiling
    assert rec["git_commit"] is None and rec["dirty"] is None
    assert "not run from a git checkout" in rec["git_note"]
    assert rec["command"] == "python x.py" and rec["wall_time_s"] is None
    assert set(provenance.REQUIRED_KEYS) <= set(rec)


def test_an_untracked_anchor_means_no_commit(repo):
    """An installed copy of the package inside some unrelated checkout records no commit."""
    (repo / "venv").mkdir()
    stray = repo / "venv" / "provenance.py"
    stray.write_text("")
    state = provenance.git_state(repo, anchor=stray)
    assert state["git_commit"] is None and "not run from a git checkout" in state["git_note"]
    head = _git(repo, "rev-parse", "HEAD")
    assert provenance.git_state(repo, anchor=repo / "code.py")["git_commit"] == head


# --------------------------------------------------------------------------------------------- command
def test_command_line_of_a_module_is_shell_quoted():
    cmd = provenance.command_line(["/abs/pkd.py", "--dataset", "cora", "--note", "two words"],
                                  module="graphspike_kd.benchmarks.pkd")
    assert cmd == "python -m graphspike_kd.benchmarks.pkd --dataset cora --note 'two words'"
    assert shlex.split(cmd)[-1] == "two words"


def test_command_line_of_a_script_is_relative_to_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    script = tmp_path / "benchmarks" / "losses.py"
    cmd = provenance.command_line([str(script), "--threads", "1"])
    assert cmd == "python benchmarks/losses.py --threads 1"
    assert provenance.command_line(["/elsewhere/x.py"]) == "python /elsewhere/x.py"


def test_command_line_reads_how_the_process_was_started(tmp_path):
    """``python -m module`` and ``python script``, in fresh interpreters."""
    (tmp_path / "pkgx").mkdir()
    (tmp_path / "pkgx" / "__init__.py").write_text("")
    body = "from graphspike_kd.benchmarks import provenance\nprint(provenance.command_line())\n"
    (tmp_path / "pkgx" / "tool.py").write_text(body)
    (tmp_path / "script.py").write_text(body)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), *sys.path]))
    run = lambda *a: subprocess.run([sys.executable, *a], cwd=tmp_path, env=env, capture_output=True,  # noqa: E731
                                    text=True, check=True).stdout.strip()
    assert run("-m", "pkgx.tool", "--x", "a b") == "python -m pkgx.tool --x 'a b'"
    assert run("script.py", "--y", "1") == "python script.py --y 1"
    assert run(str(tmp_path / "script.py")) == "python script.py"


def test_collect_accepts_an_argv_list_and_optional_packages(monkeypatch, repo):
    monkeypatch.setitem(sys.modules, "snntorch", sys.modules.get("snntorch", object()))
    rec = provenance.collect(["python", "a b.py"], repo_dir=repo, optional_packages=("snntorch",))
    assert rec["command"] == "python 'a b.py'"
    assert "snntorch" in rec["packages"]
    rec = provenance.collect("c", repo_dir=repo, optional_packages=("not_imported_pkg_xyz",))
    assert "not_imported_pkg_xyz" not in rec["packages"]


def test_cli_prints_the_record(capsys):
    rec = provenance.main(["--command", "python x.py --y"])
    printed = json.loads(capsys.readouterr().out)
    assert printed == rec and rec["command"] == "python x.py --y"
    assert set(provenance.REQUIRED_KEYS) <= set(rec)


def test_atomic_write_gives_the_usual_mode_and_keeps_an_existing_one(tmp_path):
    umask = os.umask(0o022)
    try:
        new = provenance.atomic_write_text(tmp_path / "new.json", "{}")
        assert new.stat().st_mode & 0o777 == 0o644
        old = tmp_path / "old.json"
        old.write_text("x")
        old.chmod(0o640)
        provenance.atomic_write_text(old, "y")
        assert old.stat().st_mode & 0o777 == 0o640 and old.read_text() == "y"
    finally:
        os.umask(umask)
