"""User documentation: no development history, relative links resolve, tables come from results files."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", ROOT / "CHANGELOG.md", ROOT / "benchmarks" / "README.md",
        *sorted((ROOT / "docs").rglob("*.md"))]

# Words that belong to the development process (git log, issue tracker), not to user documentation. Each
# pattern is narrow enough not to hit technical text (ESD's "branches", "the logit branch", "specification
# of a surrogate"); test_history_patterns_are_precise pins both sides.
HISTORY = {
    "issue reference": r"\bissues?\s*#?\d+\b|\b(next|previous|this|that|open|later|earlier|the) issue\b",
    "git branch": r"\b(git|feature|main|master|development|dev|merged?) branch(es)?\b"
    r"|\b(on|from|in) the [a-z0-9]+-[a-z0-9-]+ branch\b|\bbranch(ed)? (off|from) (main|master)\b",
    "session": r"\bsessions?\b",
    "work log": r"\bwork[- ]?logs?\b",
    "the spec": r"\bthe spec\b|\bspec's\b|\bspec §|\bspecs/",
    "the brief": r"\bthe brief\b",
    "milestone": r"\bmilestones?\b",
    "to-do marker": r"\b(TODO|FIXME|XXX)\b",
    "goal tracking": r"\bgoals?\b[^\n]{0,80}?\b(met|reached)\b",
    "status of a run": r"\bnot (yet )?run yet\b|\bno GPU (was|has been) (lent|available)\b",
}
HISTORY_RE = {name: re.compile(p, re.I if name != "to-do marker" else 0) for name, p in HISTORY.items()}


def history_hits(text: str) -> list[str]:
    hits = []
    for lineno, line in enumerate(text.splitlines(), 1):
        for name, pattern in HISTORY_RE.items():
            m = pattern.search(line)
            if m:
                hits.append(f"line {lineno}: {name}: {m.group(0)!r}")
    return hits


@pytest.mark.parametrize("path", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_development_history(path):
    hits = history_hits(path.read_text(encoding="utf-8"))
    assert not hits, f"{path.relative_to(ROOT)} speaks of development history:\n" + "\n".join(hits)


def test_history_patterns_are_precise():
    for text in ("see issue 12", "the next issue", "on the graph-annotators branch", "git branch",
                 "session 3", "a work log", "the spec writes", "the spec's measurement", "the brief forbids",
                 "milestone 2", "TODO: fix", "Goal: 2x. NOT reached", "the goal is not met",
                 "not run yet", "no GPU was available"):
        assert history_hits(text), text
    for text in ("ESD adds ReLU branches on the stages", "the logit branch, where the margin",
                 "the depthwise-separable branch", "an issuer of tokens", "specification", "briefly trained",
                 "met at T = 16", "todo list", "the goal of distillation"):
        assert not history_hits(text), text


LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"```.*?```", re.S)


def github_anchor(heading: str) -> str:
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text = FENCE.sub("", path.read_text(encoding="utf-8"))
    return {github_anchor(m.group(1)) for m in re.finditer(r"^#{1,6} (.+)$", text, flags=re.M)}


@pytest.mark.parametrize("path", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(path):
    broken = []
    for target in LINK.findall(FENCE.sub("", path.read_text(encoding="utf-8"))):
        if re.match(r"[a-z]+:", target):
            continue
        file_part, _, anchor = target.partition("#")
        dest = path if not file_part else (path.parent / file_part).resolve()
        if not dest.exists():
            broken.append(f"{target}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{target}: no heading with anchor #{anchor} in {dest.name}")
    assert not broken, f"{path.relative_to(ROOT)}: " + "; ".join(broken)


def test_docs_link_every_docs_page():
    index = (ROOT / "docs" / "index.md").read_text(encoding="utf-8")
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for page in sorted((ROOT / "docs").glob("*.md")):
        if page.name != "index.md":
            assert f"({page.name})" in index, f"docs/index.md does not link {page.name}"
            assert page.name.startswith("results-") or f"(docs/{page.name})" in readme, page.name


def test_one_results_folder():
    stray = [p for p in (ROOT / "docs").rglob("*") if p.is_file() and p.suffix != ".md"]
    assert not stray, f"results files belong in benchmarks/results/, found {stray}"


def test_tables_are_rendered_from_results_files():
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "render_tables.py"), "--check"],
                         capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]


def _render_check(*paths: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "benchmarks" / "render_tables.py"), "--check",
                           *map(str, paths)], capture_output=True, text=True, cwd=ROOT)


def test_render_check_fails_on_a_tampered_figure_and_an_unknown_table(tmp_path):
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    start = readme.index("<!-- headline -->")
    table = readme[start:readme.index("<!-- /headline -->") + len("<!-- /headline -->")]
    good = tmp_path / "good.md"
    good.write_text(f"intro\n{table}\noutro\n", encoding="utf-8")
    assert _render_check(good).returncode == 0
    tampered = tmp_path / "tampered.md"
    figure = re.search(r"\d+\.\d\d", table).group(0)
    changed = f"{float(figure) + 1:.2f}"
    tampered.write_text(good.read_text(encoding="utf-8").replace(figure, changed, 1), encoding="utf-8")
    out = _render_check(tampered)
    assert out.returncode == 1 and f"-{changed}" not in out.stdout and changed in out.stdout
    unknown = tmp_path / "unknown.md"
    unknown.write_text("<!-- no-such-table -->\n| a |\n<!-- /no-such-table -->\n", encoding="utf-8")
    out = _render_check(unknown)
    assert out.returncode == 1 and "no renderer for <!-- no-such-table -->" in out.stderr
