"""docs/benchmarks.md publishes full runs of the code it describes: no section records a smoke command
(`--quick`), every measured section records the commit it ran on, and none is older than the code it
measures (the last commit that changed spiketok/). A smoke run writes benchmarks/out/quick.md instead."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "benchmarks.md"
sys.path.insert(0, str(ROOT / "benchmarks"))
try:
    import docsection
    from provenance import Load, footer, recorded_commit
finally:
    sys.path.pop(0)

SECTIONS = docsection.sections(PAGE.read_text())
MEASURED = [name for name, body in SECTIONS.items() if docsection.UNMEASURED not in body]


def git(*args: str) -> str | None:
    """`git ARGS` in the checkout: its output, or None when it fails."""
    try:
        done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def test_the_page_has_its_sections() -> None:
    assert {"window-reads", "real-data", "recipe", "fewshot:simulated", "fewshot:real"} <= set(SECTIONS), list(SECTIONS)


def test_no_section_records_a_smoke_command() -> None:
    smoke = {
        name: [c for c in docsection.commands(body) if "--quick" in c]
        for name, body in SECTIONS.items()
        if docsection.is_smoke(body)
    }
    assert not smoke, f"sections written by smoke runs (run the full command, or mark them unmeasured): {smoke}"


def test_an_unmeasured_section_names_the_full_command_that_measures_it() -> None:
    for name, body in SECTIONS.items():
        if docsection.UNMEASURED in body:
            scripts = [c.split()[1] for c in docsection.commands(body) if c.split()[1] != "benchmarks/run_all.py"]
            assert scripts and all((ROOT / s).is_file() for s in scripts), (name, body)
            assert body.startswith("#"), f"{name}: the section keeps its heading"


@pytest.mark.parametrize("name", MEASURED)
def test_a_measured_section_records_the_commit_it_ran_on(name: str) -> None:
    assert recorded_commit(SECTIONS[name]), f"{name}: no `| commit | <40 hex digits> |` row in its footer"


@pytest.mark.parametrize("name", MEASURED)
def test_a_section_is_not_older_than_the_code_it_measures(name: str) -> None:
    """The section's commit is the last commit that changed spiketok/ or a later one; or, when it ran with
    uncommitted changes to spiketok/, the tree of spiketok/ it ran is the one committed now."""
    last = git("log", "-1", "--format=%H", "--", "spiketok/")
    if not last:
        pytest.skip("not a git checkout (or no git): cannot tell which commit last changed spiketok/")
    recorded = recorded_commit(SECTIONS[name])
    assert recorded, f"{name}: no commit recorded, so nothing shows it measured the code of {last[:12]}"
    commit, tree = recorded
    if tree is not None:
        assert tree == git("rev-parse", f"{last}:spiketok"), (
            f"{name} ran on uncommitted code (tree {tree[:12]}) that differs from spiketok/ at {last[:12]}"
        )
        return
    if git("cat-file", "-e", f"{commit}^{{commit}}") is None:
        pytest.skip(f"{name}'s commit {commit[:12]} is not in this checkout (a shallow clone?)")
    assert git("merge-base", "--is-ancestor", last, commit) is not None, (
        f"{name} ran on {commit[:12]}, older than {last[:12]}, the last commit that changed spiketok/: run it again"
    )


def test_a_smoke_section_goes_to_the_scratch_page(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    page, scratch = tmp_path / "docs" / "benchmarks.md", tmp_path / "out" / "quick.md"
    page.parent.mkdir()
    page.write_text("# Benchmarks\n\n<!-- x:start -->\nfull\n<!-- x:end -->\n")
    monkeypatch.setattr(docsection, "DOC", page)
    monkeypatch.setattr(docsection, "SCRATCH", scratch)
    monkeypatch.setattr(docsection, "ROOT", tmp_path)
    smoke = "## X\n\n| command | `python benchmarks/bench_x.py --steps 3 --quick` |"
    assert docsection.write_section(smoke, "<!-- x:start -->", "<!-- x:end -->", page) == scratch
    assert "full" in page.read_text() and "--quick" not in page.read_text()
    assert "--quick" in scratch.read_text()
    full = "## X\n\n| command | `python benchmarks/bench_x.py --quickly` |"  # another option, not --quick
    assert docsection.write_section(full, "<!-- x:start -->", "<!-- x:end -->", page) == page
    assert "--quickly" in page.read_text()
    assert docsection.page_for(page, smoke=True) == scratch and docsection.page_for(tmp_path / "o.md", True) != scratch
    assert docsection.smoke_work(tmp_path / "w", True) == tmp_path / "w-quick"


def test_unmeasured_keeps_the_heading_and_drops_only_its_own_pictures(tmp_path: Path) -> None:
    page = tmp_path / "benchmarks.md"
    (tmp_path / "img").mkdir()
    for name in ("a.png", "shared.png", "b.png"):
        (tmp_path / "img" / name).write_bytes(b"png")
    page.write_text(
        "<!-- a:start -->\n## A\n\n![a](img/a.png) ![s](img/shared.png)\n| command | "
        "`python benchmarks/bench_a.py --quick` |\n<!-- a:end -->\n\n<!-- b:start -->\n## B\n"
        "![b](img/b.png) ![s](img/shared.png)\n<!-- b:end -->\n"
    )
    gone = docsection.write_unmeasured(
        "<!-- a:start -->",
        "<!-- a:end -->",
        "python benchmarks/bench_a.py",
        "python benchmarks/run_all.py --unmeasured --only a",
        page,
    )
    assert gone == [tmp_path / "img" / "a.png"]
    assert sorted(p.name for p in (tmp_path / "img").iterdir()) == ["b.png", "shared.png"]
    body = docsection.sections(page.read_text())["a"]
    assert body.startswith("## A\n\n" + docsection.UNMEASURED) and "`python benchmarks/bench_a.py`" in body
    assert not docsection.is_smoke(body) and "![b](img/b.png)" in page.read_text()


def test_a_footer_records_the_commit_the_run_started_from() -> None:
    if not git("rev-parse", "HEAD"):
        pytest.skip("not a git checkout: no commit to record")
    load = Load(before=0.1, after=0.1, own=1.0)
    commit, _ = recorded_commit(footer(load, ("numpy",)))
    assert commit == git("rev-parse", "HEAD")
    stored = Load.from_dict({"before": 0.1, "after": 0.2})  # a result stored before commits were recorded
    assert recorded_commit(footer(stored, ("numpy",))) is None


def test_bench_real_data_shows_the_settings_it_trains_with() -> None:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        from bench_real_data import settings
    finally:
        sys.path.pop(0)
    # --quick adds max_steps=10 after the group's own max_steps=2500: the run trains (and the page says) 10
    assert settings(["max_minutes=1.0"], ["model.window=4", "max_steps=2500"], ["max_steps=10"]) == [
        "max_minutes=1.0",
        "model.window=4",
        "max_steps=10",
    ]
