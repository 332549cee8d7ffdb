"""No absolute machine path (a temporary folder, a checkout, a venv, a home) in benchmarks/, docs/ or the README;
and the benchmark footer's command line is made relative."""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PATTERN = re.compile(r"(?<![\w.])/(tmp|work|home|root|usr|opt|var|mnt|scratch)/|site-packages")
SECTION = re.compile(r"<!-- ([\w:-]+):start -->")


def hits(path: Path) -> list[str]:
    """Lines of `path` with an absolute machine path, as 'path:line: text'."""
    return [
        f"{path.relative_to(ROOT)}:{i}: {line.strip()[:120]}"
        for i, line in enumerate(path.read_text(errors="replace").splitlines(), 1)
        if PATTERN.search(line)
    ]


def doc_sections_with_paths(doc: Path) -> list[str]:
    """Names of the sections of docs/benchmarks.md (by their start markers) that hold a machine path."""
    names, current = [], "top"
    for line in doc.read_text().splitlines():
        m = SECTION.search(line)
        if m:
            current = m.group(1)
        if PATTERN.search(line) and current not in names:
            names.append(current)
    return names


def test_benchmarks_and_readme_hold_no_machine_path() -> None:
    files = [
        ROOT / "README.md",
        *sorted((ROOT / "benchmarks").rglob("*.py")),
        *sorted((ROOT / "benchmarks").rglob("*.md")),
    ]
    found = [h for f in files for h in hits(f)]
    assert not found, "absolute machine paths:\n" + "\n".join(found)


def test_docs_hold_no_machine_path() -> None:
    files = [p for p in sorted((ROOT / "docs").rglob("*")) if p.suffix in (".md", ".txt", ".html")]
    found = [h for f in files for h in hits(f)]
    assert not found, "absolute machine paths:\n" + "\n".join(found)
    assert not doc_sections_with_paths(ROOT / "docs" / "benchmarks.md")


def test_footer_command_is_relative(tmp_path: Path) -> None:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        from provenance import Load, command, shown_path
    finally:
        sys.path.pop(0)
    argv = [
        str(ROOT / "benchmarks" / "bench_scaling.py"),
        "--json",
        str(tmp_path / "s.json"),
        "--quick",
        f"--doc={ROOT / 'docs' / 'x.md'}",
        f"single={ROOT.parent / 'shared' / 'data' / 'a.nwb'}",
    ]
    assert command(argv) == (
        "python benchmarks/bench_scaling.py --json WORK/s.json --quick --doc=docs/x.md single=../shared/data/a.nwb"
    )
    assert shown_path("relative/path") == "relative/path"
    idle, busy = Load(before=0.2, after=1.1, own=1.0), Load(before=1.5, after=1.2, own=1.0)
    assert idle.idle and idle.sentence().startswith("Machine idle")
    assert not busy.idle and "timings are not comparable" in busy.sentence()
    assert "accuracy figures are unaffected" in busy.sentence(timing=False)
