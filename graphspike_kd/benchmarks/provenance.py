"""Provenance of a results file: which command, code, packages and machine produced it.

Every results file under ``benchmarks/results/`` carries a ``"provenance"`` record made by :func:`collect`
and is written by :func:`write_json`, atomically (a temporary file in the target's folder, flushed and
fsynced, then ``os.replace``: a reader sees the old file or the complete new one, and a failed write
leaves the old file as it was and no temporary file behind)::

    from graphspike_kd.benchmarks import provenance

    started = provenance.now()
    ...                                              # the measurement
    provenance.write_json("benchmarks/results/x.json", {"command": ..., "rows": rows}, started=started)

The record holds

=================  ====================================================================================
``command``        the exact command line, shell-quoted (default: ``sys.argv`` as ``python -m module ...``
                   when run with ``-m``, else ``python script ...``)
``git_commit``     full sha of ``HEAD`` of the checkout the package was imported from (``None`` outside a
                   git checkout, e.g. an installed wheel, with the reason in ``git_note``)
``dirty``          whether tracked files differ from ``HEAD``, **ignoring** the results folder
                   ``benchmarks/results/`` and the Markdown files whose tables are rendered from it
                   (``README.md``, ``benchmarks/README.md``, ``docs/**.md``), so a regeneration run that
                   already rewrote earlier results still counts as clean; ``dirty_paths`` lists the rest
``packages``       versions of python, torch, torch_geometric and numpy (``None`` when not installed), and
                   of spikingjelly / snntorch when the process imported them; read from the installed
                   distributions' metadata, nothing is imported to version it
``torch_threads``  ``torch.get_num_threads()`` when torch is imported, else ``None``
``cpu_model``      ``model name`` of ``/proc/cpuinfo`` (else ``platform.processor()``)
``cpu_count``      logical cores (``os.cpu_count()``)
``gpu``            ``torch.cuda.get_device_name()`` when torch is imported and CUDA available, else ``None``
``platform``       ``platform.platform()`` (OS, kernel, architecture; no host name)
``date_utc``       start of the run (``started``, else the time of the call), ISO 8601 in UTC
``wall_time_s``    seconds since ``started`` (``None`` without it)
=================  ====================================================================================

``python -m graphspike_kd.benchmarks.provenance`` prints the record this checkout and machine would give.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import importlib.metadata
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from graphspike_kd._atomic import atomic_savefig, atomic_write_bytes, atomic_write_text

__all__ = [
    "CORE_PACKAGES",
    "OPTIONAL_PACKAGES",
    "REQUIRED_KEYS",
    "RESULTS_DIR",
    "atomic_savefig",
    "atomic_write_bytes",
    "atomic_write_text",
    "collect",
    "command_line",
    "git_state",
    "is_results_path",
    "main",
    "now",
    "write_json",
]

#: Packages whose versions every record holds (``None`` when not installed).
CORE_PACKAGES: tuple[str, ...] = ("torch", "torch_geometric", "numpy")
#: Packages recorded only when the process imported them.
OPTIONAL_PACKAGES: tuple[str, ...] = ("spikingjelly", "snntorch")
#: Keys every (non-backfilled) provenance record has.
REQUIRED_KEYS: tuple[str, ...] = (
    "command", "git_commit", "dirty", "packages", "torch_threads", "cpu_model", "cpu_count", "gpu",
    "platform", "date_utc", "wall_time_s",
)
#: The results folder, relative to the repository root.
RESULTS_DIR = "benchmarks/results/"
_RENDERED_DOCS = ("README.md", "benchmarks/README.md")
_GIT_TIMEOUT_S = 20
# The checkout this module was imported from (``graphspike_kd/benchmarks/provenance.py`` -> repo root).
_PACKAGE_ROOT = Path(__file__).resolve().parents[2]


def now() -> float:
    """The current time (``time.time()``), to pass as ``started`` once the run begins."""
    return time.time()


# ------------------------------------------------------------------------------------------ atomic writes
# atomic_write_bytes, atomic_write_text and atomic_savefig live in graphspike_kd._atomic (the spiking
# trainer writes through them too) and are re-exported here.


# ------------------------------------------------------------------------------------------------ command
def command_line(argv: Sequence[str] | None = None, module: str | None = None) -> str:
    """The command that started this process, shell-quoted.

    Args:
        argv: the arguments (default ``sys.argv``); ``argv[0]`` is the program.
        module: the module run with ``python -m`` (default: the ``__main__`` module's spec name, which
            Python sets under ``-m`` only). With a module the command is ``python -m module argv[1:]``;
            without, ``python argv[0] argv[1:]`` with ``argv[0]`` relative to the working directory when
            it lies below it.
    """
    if argv is None:
        argv = list(sys.argv)
        if module is None:
            spec = getattr(sys.modules.get("__main__"), "__spec__", None)
            module = getattr(spec, "name", None)
            if module and module.endswith(".__main__"):
                module = module[: -len(".__main__")]
    argv = [str(a) for a in argv]
    rest = argv[1:]
    if module:
        return shlex.join(["python", "-m", module, *rest])
    program = argv[0] if argv else ""
    with contextlib.suppress(ValueError, OSError):
        p = Path(program)
        if p.is_absolute():
            program = str(p.relative_to(Path.cwd()))
    return shlex.join(["python", program, *rest])


# -------------------------------------------------------------------------------------------------- git
def is_results_path(rel: str) -> bool:
    """Whether a repository-relative path is a results file or a Markdown file rendered from results
    (``benchmarks/results/**``, ``README.md``, ``benchmarks/README.md``, ``docs/**.md``): changes to
    these do not make a checkout dirty."""
    rel = rel.replace(os.sep, "/")
    return (rel.startswith(RESULTS_DIR) or rel in _RENDERED_DOCS
            or (rel.startswith("docs/") and rel.endswith(".md")))


def _git(args: list[str], cwd: Path) -> str:
    out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=_GIT_TIMEOUT_S)
    if out.returncode:
        raise RuntimeError(out.stderr.strip() or f"git {' '.join(args)} exited {out.returncode}")
    return out.stdout


def git_state(repo_dir: str | os.PathLike | None = None, *, anchor: str | os.PathLike | None = None
              ) -> dict[str, Any]:
    """``{"git_commit", "dirty", "dirty_paths", "git_note"}`` of the checkout at ``repo_dir``.

    Args:
        repo_dir: a folder inside the checkout (default: the checkout this package was imported from).
        anchor: a file that must be tracked by that checkout for its commit to describe the running code
            (default: this module when ``repo_dir`` is the default, else none). An installed wheel inside
            some unrelated git folder (a virtual environment in a checkout) then records no commit.

    Outside a checkout, or without git, the commit and ``dirty`` are ``None`` and ``git_note`` says why.
    """
    if repo_dir is None:
        repo_dir = _PACKAGE_ROOT
        if anchor is None:
            anchor = Path(__file__).resolve()
    repo_dir = Path(repo_dir)
    state: dict[str, Any] = {"git_commit": None, "dirty": None, "dirty_paths": [], "git_note": None}
    try:
        top = Path(_git(["rev-parse", "--show-toplevel"], repo_dir).strip())
        if anchor is not None:
            rel = Path(anchor).resolve().relative_to(top.resolve())
            _git(["ls-files", "--error-unmatch", "--", str(rel)], top)
        state["git_commit"] = _git(["rev-parse", "HEAD"], top).strip()
        status = _git(["status", "--porcelain=v1", "-z", "--untracked-files=no"], top)
    except (OSError, subprocess.SubprocessError, RuntimeError, ValueError) as exc:
        state["git_commit"] = None
        state["git_note"] = f"not run from a git checkout ({type(exc).__name__}: {str(exc)[:200]})"
        return state
    paths: list[str] = []
    entries = status.split("\0")
    i = 0
    while i < len(entries):
        entry = entries[i]
        i += 1
        if len(entry) < 4:
            continue
        code, path = entry[:2], entry[3:]
        if "R" in code or "C" in code:  # renames/copies: the source path follows
            i += 1
        if not is_results_path(path):
            paths.append(path)
    state["dirty"] = bool(paths)
    state["dirty_paths"] = sorted(paths)
    return state


# ------------------------------------------------------------------------------------------------ record
def _version(dist: str) -> str | None:
    for name in (dist, dist.replace("_", "-")):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            return importlib.metadata.version(name)
    return None


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def _iso(t: float) -> str:
    return datetime.datetime.fromtimestamp(t, datetime.timezone.utc).isoformat(timespec="seconds")


def collect(command: str | Sequence[str] | None = None, *, started: float | None = None,
            packages: Iterable[str] = CORE_PACKAGES, optional_packages: Iterable[str] = OPTIONAL_PACKAGES,
            repo_dir: str | os.PathLike | None = None) -> dict[str, Any]:
    """The provenance record of the current process (keys: see the module docstring).

    Args:
        command: the command line (a string, or an argv list to shell-quote); default
            :func:`command_line` of ``sys.argv``.
        started: ``time.time()`` when the run began (:func:`now`); gives ``date_utc`` and
            ``wall_time_s``. Default ``None``: the date of this call and no wall time.
        packages: distributions always versioned (default :data:`CORE_PACKAGES`), besides python.
        optional_packages: distributions versioned only when imported by this process (default
            :data:`OPTIONAL_PACKAGES`).
        repo_dir: the checkout whose commit to record (default: the one this package was imported from).
    """
    end = time.time()
    if command is None:
        command = command_line()
    elif not isinstance(command, str):
        command = shlex.join([str(c) for c in command])
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in packages:
        versions[name] = _version(name)
    for name in optional_packages:
        if name in sys.modules:
            versions[name] = _version(name)
    torch = sys.modules.get("torch")
    threads = gpu = None
    if torch is not None:
        with contextlib.suppress(Exception):
            threads = int(torch.get_num_threads())
        with contextlib.suppress(Exception):
            if torch.cuda.is_available():
                gpu = torch.cuda.get_device_name()
    record: dict[str, Any] = {"command": command}
    record.update(git_state(repo_dir))
    record.update({
        "packages": versions, "torch_threads": threads, "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(), "gpu": gpu, "platform": platform.platform(),
        "date_utc": _iso(started if started is not None else end),
        "wall_time_s": round(end - started, 3) if started is not None else None,
    })
    return record


def write_json(path: str | os.PathLike, payload: dict[str, Any], *,
               command: str | Sequence[str] | None = None, started: float | None = None,
               indent: int | None = 2, repo_dir: str | os.PathLike | None = None,
               **collect_kwargs: Any) -> dict[str, Any]:
    """Write ``payload`` plus a ``"provenance"`` record (:func:`collect`) as JSON to ``path``, atomically.

    The payload is serialised before anything touches the disk, so a value JSON cannot hold leaves the
    old file as it was. A top-level ``"command"`` is added from the record when the payload has none.

    Args:
        path: the output file (parents are created).
        payload: the results; not modified.
        command, started, repo_dir, collect_kwargs: passed to :func:`collect`.
        indent: JSON indentation (default 2; ``None``: one line).

    Returns:
        The dictionary written.
    """
    record = collect(command, started=started, repo_dir=repo_dir, **collect_kwargs)
    out = dict(payload)
    out.setdefault("command", record["command"])
    out["provenance"] = record
    text = json.dumps(out, indent=indent) + "\n"
    atomic_write_text(path, text)
    return out


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Print the provenance record of this checkout and machine as JSON (``--command`` sets its command)."""
    p = argparse.ArgumentParser(prog="python -m graphspike_kd.benchmarks.provenance",
                                description="Print the provenance record a results file written now "
                                "would carry.")
    p.add_argument("--command", default=None, help="the command to record (default: this one)")
    args = p.parse_args(argv)
    record = collect(args.command)
    print(json.dumps(record, indent=2))
    return record


if __name__ == "__main__":
    main()
