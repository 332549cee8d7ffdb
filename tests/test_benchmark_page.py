"""docs/benchmarks.md publishes full runs of the code it describes: no section records a smoke command
(`--quick`), every measured section records the commit it ran on, and none is older than the code it
measures (the last commit that changed spiketok/). A smoke run writes benchmarks/out/quick.md instead."""

from __future__ import annotations

import os
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


CODE = docsection.code_records(PAGE)


def changed_since(commit: str, tree: str | None, last: str) -> list[str] | None:
    """The files of spiketok/ that differ between the code a section ran (its commit, or the tree of spiketok/ it
    ran with uncommitted changes) and spiketok/ at `last`; None when git cannot tell."""
    ran = tree if tree is not None else f"{commit}:spiketok"
    names = git("diff", "--name-only", ran, f"{last}:spiketok")
    return None if names is None else [f"spiketok/{n}" for n in names.splitlines() if n]


def stale_files(changed: list[str], read: list[str]) -> list[str]:
    """The changed files that make a section stale: those its run imported, and any file that is not Python
    (configs and shipped models, which code may read without importing them)."""
    return [f for f in changed if f in read or not f.endswith(".py")]


@pytest.mark.parametrize("name", MEASURED)
def test_a_section_is_not_older_than_the_code_it_measures(name: str) -> None:
    """No file of spiketok/ that the section's run imported (docs/benchmarks-code.json) changed since the commit
    it records. A section without that list must be as new as the last commit that changed spiketok/, or have
    run with uncommitted changes whose tree of spiketok/ is the one committed now."""
    last = git("log", "-1", "--format=%H", "--", "spiketok/")
    if not last:
        pytest.skip("not a git checkout (or no git): cannot tell which commit last changed spiketok/")
    recorded = recorded_commit(SECTIONS[name])
    assert recorded, f"{name}: no commit recorded, so nothing shows it measured the code of {last[:12]}"
    commit, tree = recorded
    if tree is None and git("cat-file", "-e", f"{commit}^{{commit}}") is None:
        pytest.skip(f"{name}'s commit {commit[:12]} is not in this checkout (a shallow clone?)")
    changed = changed_since(commit, tree, last)
    assert changed is not None, f"{name}: git could not compare the code it ran ({commit[:12]}) with {last[:12]}"
    code = CODE.get(name)
    if code is not None and (code["commit"], code["tree"]) == (commit, tree):
        stale = stale_files(changed, code["files"])
        assert not stale, f"{name} ran on {commit[:12]}; since then code it ran changed: {stale}. Run it again"
        return
    assert not changed, (
        f"{name} ran on {commit[:12]} and lists no code it read; {len(changed)} files of spiketok/ changed since "
        f"(up to {last[:12]}), e.g. {changed[:3]}: run it again"
    )


def test_only_changes_to_code_a_section_read_make_it_stale(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A section written on the page records the spiketok files its run imported (child processes included);
    a change to a file it imported, or to a file that is not Python, makes it stale, and a change to another
    file does not. The run is a fresh process that imports only docsection, and a child that imports rotary."""
    page = tmp_path / "benchmarks.md"
    page.write_text("<!-- x:start -->\n<!-- x:end -->\n")
    head = "a" * 40
    run = f"""import subprocess, sys
sys.path.insert(0, "benchmarks")
import docsection
from pathlib import Path
subprocess.run([sys.executable, "-c", "import spiketok.model.rotary"], check=True)
docsection.write_section("## X\\n\\n| commit | `{head}` |", "<!-- x:start -->", "<!-- x:end -->", Path({str(page)!r}))
"""
    env = {k: v for k, v in os.environ.items() if k != "SPIKETOK_MODULE_LOG"}  # a fresh run: its own list
    subprocess.run([sys.executable, "-c", run], check=True, cwd=ROOT, env=env)
    record = docsection.code_records(page)["x"]
    assert (record["commit"], record["tree"]) == (head, None)
    assert {"spiketok/__init__.py", "spiketok/model/rotary.py", "spiketok/train/configs/tiny.yaml"} <= set(
        record["files"]
    )
    assert "spiketok/train/tune_space.py" not in record["files"]  # nothing here imported it
    assert stale_files(["spiketok/model/rotary.py", "spiketok/train/tune_space.py"], record["files"]) == [
        "spiketok/model/rotary.py"
    ]
    assert stale_files(["spiketok/model/weights/primate-reaching.md"], []) == [
        "spiketok/model/weights/primate-reaching.md"
    ]
    gone = docsection.unmeasured("## X", "python b.py", "w")
    docsection.write_section(gone, "<!-- x:start -->", "<!-- x:end -->", page)
    assert "x" not in docsection.code_records(page)


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
