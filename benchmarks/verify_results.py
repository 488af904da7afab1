"""Verify that the results in the docs are rendered from recorded, traceable results files.

    python benchmarks/verify_results.py             # exit 1 on any failure, listing each with its file
    python benchmarks/verify_results.py --strict    # backfilled records, dirty runs and unnamed PNGs fail too

Checks, each reported with the file it concerns:

1. **Tables outside markers.** In ``README.md``, ``benchmarks/README.md`` and ``docs/**.md`` every Markdown
   table whose body holds a measured figure lies between ``<!-- name -->`` / ``<!-- /name -->`` markers of
   ``render_tables.py``. A *measured figure* is a cell that is a number with a decimal point, a
   percentage, a ``±`` spread or a ratio like ``2.4x`` (with an optional unit or parenthesised remark;
   code spans are not figures). A table that legitimately holds such cells without being results (a
   table of option defaults, say) is marked by the line ``<!-- not-results -->`` (or
   ``<!-- not-results: reason -->``) right before it. A marker opened but never closed fails as well.
2. **Rendered figures.** Every marked table equals what ``render_tables.py`` renders from its files.
3. **Commits.** Every results JSON's ``provenance.git_commit`` is an ancestor of ``HEAD``
   (``git merge-base --is-ancestor``); a commit unknown to the repository, a missing commit and a shallow
   clone fail (the check needs the full history).
4. **Provenance present.** Every JSON under ``benchmarks/results/`` has a ``provenance`` record with the
   keys of :data:`graphspike_kd.benchmarks.provenance.REQUIRED_KEYS`, or a backfilled record
   (``"backfilled": true`` with ``git_commit``, ``command`` and ``note``; see ``backfill_provenance.py``).

Reported without failing (``--strict`` fails on them): backfilled records (counted and listed), records
of runs made with modified code (``dirty``), and PNGs under ``benchmarks/results/`` whose file name no
results JSON and no Markdown file mentions.

Imports only the standard library and ``render_tables.py``; runs in about a second.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]
NOT_RESULTS = re.compile(r"<!--\s*not-results(?::[^>]*)?\s*-->")
OPEN_MARKER = re.compile(r"<!-- ([a-z0-9][a-z0-9-]*) -->")
CLOSE_MARKER = re.compile(r"<!-- /([a-z0-9][a-z0-9-]*) -->")
_NUM = r"[-+−]?\d[\d,]*(?:\.\d+)?"
_FIGURE_CELL = re.compile(rf"[~≈<>≤≥]?\s*{_NUM}\s*(?:±\s*{_NUM})?\s*(?:%|[x×]|[A-Za-zµ/]+)?\s*(?:\(.*\))?")
_FIGURE_SIGN = re.compile(r"\d\.\d|%|±|\d\s*[x×]")
_SEPARATOR = re.compile(r"\s*\|?\s*:?-+:?\s*(?:\|\s*:?-+:?\s*)*\|?\s*")
#: Keys of every provenance record (kept equal to ``provenance.REQUIRED_KEYS``, which a test checks).
REQUIRED_KEYS = (
    "command", "git_commit", "dirty", "packages", "torch_threads", "cpu_model", "cpu_count", "gpu",
    "platform", "date_utc", "wall_time_s",
)
BACKFILLED_KEYS = ("backfilled", "git_commit", "command", "note")


class Report:
    """What a verification found: ``failures`` fail the run; ``warnings`` and ``backfilled`` (the results
    files with a backfilled record) fail it under ``--strict``."""

    def __init__(self) -> None:
        self.failures: list[str] = []
        self.warnings: list[str] = []
        self.backfilled: list[str] = []

    def extend(self, other: Report) -> None:
        self.failures += other.failures
        self.warnings += other.warnings
        self.backfilled += other.backfilled


def load_render_tables(root: Path = ROOT) -> ModuleType:
    """``benchmarks/render_tables.py`` of ``root`` as a module (a script folder, not a package)."""
    path = root / "benchmarks" / "render_tables.py"
    if str(root) not in sys.path:  # some renderers import the package of this checkout
        sys.path.insert(0, str(root))
    spec = importlib.util.spec_from_file_location("_render_tables_for_verify", path)
    if spec is None or spec.loader is None:
        raise FileNotFoundError(f"{path}: cannot load the table renderer")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ---------------------------------------------------------------------------------------- 1. the tables
def is_figure_cell(cell: str) -> bool:
    """Whether a table cell is a measured figure: a number with a decimal point, a percentage, a ``±``
    spread or a ratio such as ``2.4x``, optionally with a unit and a parenthesised remark. Code spans and
    emphasis marks are ignored."""
    text = re.sub(r"`[^`]*`", "", cell)
    text = re.sub(r"[*_]", "", text).strip()
    return bool(text) and bool(_FIGURE_CELL.fullmatch(text)) and bool(_FIGURE_SIGN.search(text))


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def check_tables(doc: Path, label: str, table_names: set[str] = frozenset()) -> list[str]:
    """Results tables outside markers and markers opened but not closed in one Markdown file.

    A comment ``<!-- name -->`` opens a marked region when ``name`` is in ``table_names`` (the renderers)
    or the file closes it somewhere with ``<!-- /name -->``; other comments are left alone."""
    text = doc.read_text(encoding="utf-8")
    lines = text.splitlines()
    names = set(table_names) | set(CLOSE_MARKER.findall(text))
    problems: list[str] = []
    inside: tuple[str, int] | None = None
    fence = False
    i = 0
    while i < len(lines):
        line = lines[i]
        stripped = line.strip()
        if stripped.startswith("```"):
            fence = not fence
        elif not fence and (m := CLOSE_MARKER.fullmatch(stripped)):
            if inside is None or inside[0] != m.group(1):
                problems.append(f"{label}:{i + 1}: <!-- /{m.group(1)} --> closes no open marker")
            inside = None
        elif not fence and (m := OPEN_MARKER.fullmatch(stripped)) and m.group(1) in names:
            if inside is not None:
                problems.append(f"{label}:{inside[1]}: <!-- {inside[0]} --> is not closed before line "
                                f"{i + 1}")
            inside = (m.group(1), i + 1)
        elif (not fence and inside is None and stripped.startswith("|") and i + 1 < len(lines)
              and _SEPARATOR.fullmatch(lines[i + 1]) and "-" in lines[i + 1]):
            j = i + 2
            figures: list[str] = []
            while j < len(lines) and lines[j].strip().startswith("|"):
                figures += [c for c in _cells(lines[j]) if is_figure_cell(c)]
                j += 1
            before = next((lines[k].strip() for k in range(i - 1, -1, -1) if lines[k].strip()), "")
            if figures and not NOT_RESULTS.fullmatch(before):
                problems.append(
                    f"{label}:{i + 1}: a table with measured figures ({', '.join(figures[:3])}) outside "
                    "<!-- name --> markers: render it with benchmarks/render_tables.py, or mark a table "
                    "that holds no results with <!-- not-results --> on the line before it"
                )
            i = j
            continue
        i += 1
    if inside is not None:
        problems.append(f"{label}:{inside[1]}: <!-- {inside[0]} --> is never closed")
    return problems


# -------------------------------------------------------------------------------------- 2. the figures
def check_rendered(doc: Path, label: str, results: Path, rt: ModuleType) -> list[str]:
    """Marked tables whose text differs from what their results files render to."""
    text = doc.read_text(encoding="utf-8")
    problems = []
    for match in rt.MARKER.finditer(text):
        name = match.group(1)
        if name not in rt.RENDERERS:
            problems.append(f"{label}: <!-- {name} --> has no renderer in render_tables.py")
            continue
        fn, files = rt.RENDERERS[name]
        try:
            rendered = fn(results).rstrip()
        except Exception as exc:  # noqa: BLE001 - any renderer error is this table's failure, reported
            problems.append(f"{label}: table {name}: cannot render from {', '.join(files)}: {exc}")
            continue
        if match.group(2).rstrip() != rendered:
            line = text.count("\n", 0, match.start()) + 1
            problems.append(f"{label}:{line}: table {name} differs from its files ({', '.join(files)}); "
                            "python benchmarks/render_tables.py rewrites it")
    return problems


# ------------------------------------------------------------------------------------ 3-4. provenance
def _git(root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=60)


class Ancestry:
    """``git merge-base --is-ancestor COMMIT HEAD`` with a cache (one call per distinct commit)."""

    def __init__(self, root: Path):
        self.root = root
        self.cache: dict[str, str | None] = {}
        top = _git(root, "rev-parse", "--is-shallow-repository")
        self.error = None
        if top.returncode:
            self.error = f"{root} is not a git checkout ({top.stderr.strip()})"
        elif top.stdout.strip() == "true":
            self.error = ("the clone is shallow: the commit check needs the full history "
                          "(git fetch --unshallow)")

    def problem(self, commit: str) -> str | None:
        """``None`` when ``commit`` is an ancestor of HEAD, else why not."""
        if commit not in self.cache:
            if not re.fullmatch(r"[0-9a-f]{40}", commit):
                self.cache[commit] = f"git_commit {commit!r} is not a full sha"
            else:
                out = _git(self.root, "merge-base", "--is-ancestor", commit, "HEAD")
                self.cache[commit] = (
                    None if out.returncode == 0
                    else f"git_commit {commit[:12]} is not an ancestor of HEAD" if out.returncode == 1
                    else f"git_commit {commit[:12]} is unknown to this repository"
                )
        return self.cache[commit]


def check_provenance(results: Path, root: Path) -> Report:
    """Checks 3 and 4 over every JSON under ``results``."""
    report = Report()
    ancestry = Ancestry(root)
    if ancestry.error:
        report.failures.append(ancestry.error)
    for path in sorted(results.rglob("*.json")):
        label = path.relative_to(root).as_posix() if path.is_relative_to(root) else str(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            report.failures.append(f"{label}: not readable JSON ({exc})")
            continue
        rec = data.get("provenance") if isinstance(data, dict) else None
        if not isinstance(rec, dict):
            report.failures.append(f"{label}: no provenance record (rerun it, or python "
                                   "benchmarks/backfill_provenance.py for a file that cannot be rerun)")
            continue
        backfilled = rec.get("backfilled") is True
        missing = [k for k in (BACKFILLED_KEYS if backfilled else REQUIRED_KEYS) if k not in rec]
        if missing:
            report.failures.append(f"{label}: provenance lacks {', '.join(missing)}")
            continue
        commit = rec["git_commit"]
        if not isinstance(commit, str):
            report.failures.append(f"{label}: provenance has no git_commit ({rec.get('git_note') or 'null'})")
        elif not ancestry.error and (why := ancestry.problem(commit)):
            report.failures.append(f"{label}: {why}")
        if backfilled:
            report.backfilled.append(label)
        elif rec.get("dirty"):
            paths = ", ".join(rec.get("dirty_paths") or [])
            report.warnings.append(f"{label}: produced with modified code ({paths})")
    return report


def check_pngs(results: Path, docs: list[Path], root: Path) -> list[str]:
    """PNGs under ``results`` that no results JSON and no Markdown file names."""
    texts = [p.read_text(encoding="utf-8", errors="replace") for p in (*results.rglob("*.json"), *docs)]
    out = []
    for png in sorted(results.rglob("*.png")):
        if not any(png.name in t for t in texts):
            label = png.relative_to(root).as_posix() if png.is_relative_to(root) else str(png)
            out.append(f"{label}: no results JSON or Markdown file names this PNG")
    return out


# -------------------------------------------------------------------------------------------- driver
def verify(root: Path = ROOT, results: Path | None = None, docs: list[Path] | None = None) -> Report:
    """Run every check on the repository at ``root`` (results default ``root/benchmarks/results``, docs
    default ``render_tables.documents(root)``)."""
    rt = load_render_tables(root)
    results = results or root / "benchmarks" / "results"
    docs = [d for d in (docs if docs is not None else rt.documents(root)) if d.exists()]
    report = Report()
    for doc in docs:
        label = doc.relative_to(root).as_posix() if doc.is_relative_to(root) else str(doc)
        report.failures += check_tables(doc, label, set(rt.RENDERERS))
        report.failures += check_rendered(doc, label, results, rt)
    report.extend(check_provenance(results, root))
    report.warnings += check_pngs(results, docs, root)
    return report


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", type=Path, default=ROOT, help="repository root (default: this checkout)")
    p.add_argument("--results", type=Path, default=None, help="default: ROOT/benchmarks/results")
    p.add_argument("--strict", action="store_true",
                   help="also fail on backfilled records, dirty runs and PNGs no file names")
    p.add_argument("docs", nargs="*", type=Path,
                   help="Markdown files (default: README.md, benchmarks/README.md, docs/**.md)")
    args = p.parse_args(argv)
    root = args.root.resolve()
    report = verify(root, args.results.resolve() if args.results else None,
                    [d.resolve() for d in args.docs] or None)
    for line in report.failures:
        print(f"FAIL {line}")
    for line in report.warnings:
        print(f"{'FAIL' if args.strict else 'warn'} {line}")
    if report.backfilled:
        print(f"{'FAIL' if args.strict else 'note'} {len(report.backfilled)} results file(s) carry a "
              "backfilled provenance record (recorded before provenance was written): "
              + ", ".join(report.backfilled))
    failed = bool(report.failures) or (args.strict and bool(report.warnings or report.backfilled))
    n = len(report.failures) + (len(report.warnings) + bool(report.backfilled) if args.strict else 0)
    print(f"verify_results: {'FAILED, ' + str(n) + ' problem(s)' if failed else 'ok'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
