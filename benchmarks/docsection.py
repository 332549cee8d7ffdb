"""Write one benchmark's section of docs/benchmarks.md between its own markers, leaving the rest intact."""

from __future__ import annotations

from pathlib import Path

DOC = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"


def write_section(section: str, start: str, end: str, doc: Path = DOC) -> None:
    """Replace the text between `start` and `end` with `section` (appended when the markers are absent)."""
    block = f"{start}\n{section.strip()}\n{end}"
    text = doc.read_text() if doc.exists() else "# Benchmarks\n"
    if start in text and end in text:
        head, rest = text.split(start, 1)
        text = head + block + rest.split(end, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text(text)
