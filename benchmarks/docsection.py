"""Write one benchmark's section of docs/benchmarks.md between its own markers, leaving the rest intact.

The page written is `--doc PATH` where a script takes it, else $SPIKETOK_BENCH_DOC, else docs/benchmarks.md
(so `run_all.py --doc PATH` redirects every script, those without a --doc option too).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

DOC = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"
ENV = "SPIKETOK_BENCH_DOC"


def doc_path() -> Path:
    """The page to write: $SPIKETOK_BENCH_DOC when set, else docs/benchmarks.md."""
    return Path(os.environ.get(ENV) or DOC)


def add_doc_args(parser: argparse.ArgumentParser, timing: bool = False) -> None:
    """--doc PATH (and, for timing benchmarks, --allow-load)."""
    parser.add_argument("--doc", type=Path, default=doc_path(),
                        help=f"page to write the section into (default: ${ENV} or docs/benchmarks.md)")
    if timing:
        parser.add_argument("--allow-load", action="store_true",
                            help="write the doc even when the machine was loaded (the section says so in bold)")


def write_section(section: str, start: str, end: str, doc: Path | None = None) -> None:
    """Replace the text between `start` and `end` with `section` (appended when the markers are absent)."""
    doc = doc_path() if doc is None else doc
    block = f"{start}\n{section.strip()}\n{end}"
    text = doc.read_text() if doc.exists() else "# Benchmarks\n"
    if start in text and end in text:
        head, rest = text.split(start, 1)
        text = head + block + rest.split(end, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text(text)
