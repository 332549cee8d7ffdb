"""The CSV log of a resumed run: Lightning's CSV logger empties logs/metrics.csv when it starts, so the rows
logged before the resume point are kept aside and merged back, in step order, when the run ends."""

from __future__ import annotations

import csv
from pathlib import Path


def _read_rows(path: Path) -> list[dict[str, str]]:
    if not path.exists():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _write_rows(path: Path, rows: list[dict[str, str]]) -> None:
    keys = sorted({k for r in rows for k in r})
    tmp = path.with_suffix(".csv.tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)
    tmp.replace(path)


def stash_csv_log(run_dir: Path, step: int) -> None:
    """Before resuming from `step`: keep the CSV rows logged before it in logs/metrics-earlier.csv; rows after
    it are logged again."""
    logs = run_dir / "logs"
    earlier, current = logs / "metrics-earlier.csv", logs / "metrics.csv"
    rows = [r for r in _read_rows(earlier) + _read_rows(current) if r.get("step") and int(r["step"]) < step]
    if rows:
        _write_rows(earlier, rows)
    current.unlink(missing_ok=True)


def merge_csv_log(run_dir: Path) -> None:
    """After a resumed run: one logs/metrics.csv with the rows of every part, in step order."""
    logs = run_dir / "logs"
    earlier, current = logs / "metrics-earlier.csv", logs / "metrics.csv"
    if earlier.exists():
        _write_rows(current, _read_rows(earlier) + _read_rows(current))
        earlier.unlink()
