"""Give a results file that predates provenance records a *backfilled* one, from git history alone.

    python benchmarks/backfill_provenance.py                 # every results JSON lacking one
    python benchmarks/backfill_provenance.py FILE.json ...   # only these
    python benchmarks/backfill_provenance.py --dry-run       # list what would change, write nothing

For use on files that cannot be regenerated cheaply (runs of hours). The record added under
``"provenance"`` is

.. code-block:: json

    {"backfilled": true,
     "git_commit": "<the commit that last committed the file: git log -1 --format=%H -- FILE>",
     "command": "<the file's own top-level command, as recorded, or null>",
     "note": "recorded before provenance was written; ...",
     "wall_time_s": "<the file's own top-level wall_time_s, when it has one>",
     "recorded_in_file": {"<machine, versions or dates the file itself recorded, copied>": "..."}}

Nothing else is filled in: no versions, CPU or date the file did not record. The file's existing fields are
kept as they are (the JSON is rewritten with its own indentation, atomically). A file that already has a
complete record is left alone; one with an incomplete record of an older form gets a backfilled record
with the old one kept under ``recorded_in_file``. A file git has never committed is refused (commit it
first, or rerun it). ``python benchmarks/verify_results.py`` accepts backfilled records and lists them;
``--strict`` fails on them.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from graphspike_kd.benchmarks.provenance import REQUIRED_KEYS, atomic_write_text  # noqa: E402

NOTE = ("recorded before provenance was written; git_commit is the commit that added this file (its "
        "current content), the code that produced it is at or before it")
#: Top-level fields of older results files that describe the run; copied into ``recorded_in_file``.
RECORDED_FIELDS = ("git_commit", "date_utc", "date", "machine", "python", "torch", "numpy", "cpu_count",
                   "processor", "platform")


def has_provenance(data: dict) -> bool:
    """Whether ``data`` already holds a complete or a backfilled provenance record."""
    rec = data.get("provenance")
    if not isinstance(rec, dict):
        return False
    return rec.get("backfilled") is True or all(k in rec for k in REQUIRED_KEYS)


def last_commit(path: Path, root: Path = ROOT) -> str | None:
    """The full sha of the commit that last changed ``path`` (``None`` if git never committed it)."""
    out = subprocess.run(["git", "log", "-1", "--format=%H", "--", str(path.resolve().relative_to(root))],
                         cwd=root, capture_output=True, text=True, timeout=60)
    if out.returncode:
        raise RuntimeError(f"git log failed in {root}: {out.stderr.strip()}")
    return out.stdout.strip() or None


def backfilled_record(data: dict, commit: str) -> dict:
    """The backfilled record for the results ``data`` last committed at ``commit``."""
    rec: dict = {"backfilled": True, "git_commit": commit, "command": data.get("command"), "note": NOTE}
    if isinstance(data.get("wall_time_s"), (int, float)):
        rec["wall_time_s"] = data["wall_time_s"]
    recorded = {k: data[k] for k in RECORDED_FIELDS if k in data}
    if isinstance(data.get("provenance"), dict):  # an incomplete record of an older form
        recorded["provenance"] = data["provenance"]
    if recorded:
        rec["recorded_in_file"] = recorded
    return rec


def _indent(text: str) -> int | None:
    lines = text.splitlines()
    if len(lines) < 2:
        return None
    return len(lines[1]) - len(lines[1].lstrip(" ")) or None


def backfill(path: Path, root: Path = ROOT, dry_run: bool = False) -> dict | None:
    """Add a backfilled record to the JSON at ``path`` when it lacks one; returns it (``None``: unchanged).

    Raises:
        ValueError: the file is not a JSON object, or git never committed it.
    """
    text = path.read_text(encoding="utf-8")
    data = json.loads(text)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: not a JSON object")
    if has_provenance(data):
        return None
    commit = last_commit(path, root)
    if commit is None:
        raise ValueError(f"{path}: git has never committed this file; commit it first or rerun it")
    rec = backfilled_record(data, commit)
    if not dry_run:
        out = json.dumps({**data, "provenance": rec}, indent=_indent(text))
        atomic_write_text(path, out + ("\n" if text.endswith("\n") else ""))
    return rec


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("files", nargs="*", type=Path, help="default: every JSON under benchmarks/results/")
    p.add_argument("--root", type=Path, default=ROOT, help="repository root (default: this checkout)")
    p.add_argument("--dry-run", action="store_true", help="list what would change; write nothing")
    args = p.parse_args(argv)
    root = args.root.resolve()
    files = [f.resolve() for f in args.files] or sorted((root / "benchmarks" / "results").rglob("*.json"))
    changed, errors = 0, 0
    for path in files:
        try:
            rec = backfill(path, root, args.dry_run)
        except (OSError, ValueError, RuntimeError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            errors += 1
            continue
        if rec is not None:
            changed += 1
            print(f"{'would backfill' if args.dry_run else 'backfilled'} {path.relative_to(root)} "
                  f"(git_commit {rec['git_commit'][:12]})")
    print(f"{changed} file(s) {'to backfill' if args.dry_run else 'backfilled'}, "
          f"{len(files) - changed - errors} already with provenance, {errors} error(s)")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
