"""Write one benchmark's section of docs/benchmarks.md between its own markers, leaving the rest intact.

The page written is `--doc PATH` where a script takes it, else $SPIKETOK_BENCH_DOC, else docs/benchmarks.md
(so `run_all.py --doc PATH` redirects every script, those without a --doc option too).

Only full runs reach the page: a smoke run (`--quick`) writes its section to benchmarks/out/quick.md
(gitignored) instead, and keeps its work files apart from a full run's (`smoke_work`). A section whose
recorded command carries `--quick` is sent there whatever the script asked (`write_section`), and
tests/test_benchmark_page.py fails when one is on the page.

Beside the page, docs/benchmarks-code.json lists for each section the files of spiketok/ its run imported
(`provenance.code_read`), with the commit the section records: a later change to other files leaves the
section current.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path

import provenance  # sets $SPIKETOK_MODULE_LOG before a run starts child processes

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "benchmarks.md"
SCRATCH = ROOT / "benchmarks" / "out" / "quick.md"  # where smoke runs write (gitignored)
ENV = "SPIKETOK_BENCH_DOC"
UNMEASURED = "**Not measured on this code yet.**"  # how a section that holds no measurement begins
MARKER = re.compile(r"<!-- ([\w:-]+):start -->")
COMMAND = re.compile(r"`(python [^`]*)`")  # a command as a section records it
IMAGE = re.compile(r"\]\((img/[^)\s]+)\)")
CODE = "benchmarks-code.json"  # beside the page: section -> {"commit", "tree", "files"} (the code it read)


def doc_path() -> Path:
    """The page to write: $SPIKETOK_BENCH_DOC when set, else docs/benchmarks.md."""
    return Path(os.environ.get(ENV) or DOC)


def is_page(doc: Path) -> bool:
    """Whether `doc` is docs/benchmarks.md itself (the published page)."""
    return Path(os.path.abspath(doc)).resolve() == DOC.resolve()


def page_for(doc: Path, smoke: bool) -> Path:
    """Where a run writes its section: a smoke run's goes to benchmarks/out/quick.md instead of the page."""
    return SCRATCH if smoke and is_page(doc) else doc


def smoke_work(work: Path, smoke: bool) -> Path:
    """A smoke run's work folder, beside a full run's (`WORK-quick`): its cached models and stored results
    must never be read back by a full run."""
    return work.with_name(work.name + "-quick") if smoke else work


def commands(text: str) -> list[str]:
    """The commands (`python ...` in backquotes) a section records."""
    return COMMAND.findall(text)


def is_smoke(text: str) -> bool:
    """Whether a section records a smoke command (one that carries --quick)."""
    return any(re.search(r"(^|\s)--quick(\s|=|$)", c) for c in commands(text))


def sections(text: str) -> dict[str, str]:
    """Name -> text between its markers, for the innermost sections of a page (a section holding others,
    as `fewshot` holds `fewshot:simulated` and `fewshot:real`, is left out: its parts are listed)."""
    found = {}
    for m in MARKER.finditer(text):
        name = m.group(1)
        end = text.find(f"<!-- {name}:end -->", m.end())
        if end < 0:
            continue
        body = text[m.end() : end]
        if not MARKER.search(body):
            found[name] = body.strip()
    return found


def add_doc_args(parser: argparse.ArgumentParser, timing: bool = False) -> None:
    """--doc PATH (and, for timing benchmarks, --allow-load)."""
    parser.add_argument(
        "--doc",
        type=Path,
        default=doc_path(),
        help=f"page to write the section into (default: ${ENV} or docs/benchmarks.md; "
        f"a --quick run: {SCRATCH.relative_to(ROOT)})",
    )
    if timing:
        parser.add_argument(
            "--allow-load",
            action="store_true",
            help="write the doc even when the machine was loaded (the section says so in bold)",
        )


def write_section(section: str, start: str, end: str, doc: Path | None = None) -> Path:
    """Replace the text between `start` and `end` with `section` (appended when the markers are absent);
    returns the page written, which is never docs/benchmarks.md for a section that records a smoke command."""
    doc = page_for(doc_path() if doc is None else doc, is_smoke(section))
    if doc == SCRATCH:
        print(f"a smoke run: its section goes to {SCRATCH.relative_to(ROOT)}, not the benchmark page", file=sys.stderr)
    block = f"{start}\n{section.strip()}\n{end}"
    text = doc.read_text() if doc.exists() else "# Benchmarks\n"
    if start in text and end in text:
        head, rest = text.split(start, 1)
        text = head + block + rest.split(end, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text(text)
    record_code(doc, MARKER.search(start).group(1), section)
    return doc


def code_records(doc: Path) -> dict[str, dict]:
    """Section -> {"commit", "tree", "files"}: the code each section's run read (`CODE` beside the page)."""
    path = doc.parent / CODE
    return json.loads(path.read_text()) if path.exists() else {}


def record_code(doc: Path, name: str, section: str) -> None:
    """Store, beside the page, the spiketok files this run imported under the commit `section` records; a section
    that records no single commit (unmeasured, or built from runs of several commits) keeps no list."""
    records = code_records(doc)
    recorded = provenance.recorded_commit(section)
    if recorded:
        commit, tree = recorded
        records[name] = {"commit": commit, "tree": tree, "files": provenance.code_read()}
    else:
        records.pop(name, None)
    (doc.parent / CODE).write_text(json.dumps(dict(sorted(records.items())), indent=1) + "\n")


def unmeasured(heading: str, command: str, writer: str) -> str:
    """A section that holds no measurement: its heading, then that it has not been measured on this code
    yet and the command that measures it."""
    return (
        f"{heading}\n\n{UNMEASURED} The figures here came from a smoke run or older code, so they were "
        f"taken down; `{command}` measures this section (on an idle machine). Written by `{writer}`."
    )


def write_unmeasured(start: str, end: str, command: str, writer: str, doc: Path | None = None) -> list[Path]:
    """Replace a section of the page with `unmeasured(...)` under its own heading; delete the pictures only
    that section showed (img/ beside the page). Returns the pictures deleted."""
    doc = doc_path() if doc is None else doc
    text = doc.read_text()
    if start not in text or end not in text:
        raise ValueError(f"{doc} has no section between {start} and {end}")
    old = text.split(start, 1)[1].split(end, 1)[0]
    heading = next((line for line in old.splitlines() if line.startswith("#")), "## (untitled)")
    write_section(unmeasured(heading, command, writer), start, end, doc)
    still = set(IMAGE.findall(doc.read_text()))
    gone = [doc.parent / p for p in dict.fromkeys(IMAGE.findall(old)) if p not in still]
    for path in gone:
        path.unlink(missing_ok=True)
    return gone
