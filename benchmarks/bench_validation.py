"""Does validation look like the test? Validation R² beside test R² under each split method.

    python benchmarks/bench_validation.py [--jobs 2] [--work DIR] [--files NAME ...]

Every automatic choice (early stopping, the best checkpoint, the window pilots, the start) rests on the
validation split, so its R² should agree with the test R² of the model it chose. Each shared recording
except the sealed one is prepared twice, with the default `--split interleaved` and with the chronological
`--split blocks`; on each, spiketok trains from scratch with a fixed budget (SETTINGS: the same for every file,
so only the split differs) and is scored on its valid and test splits with `spiketok evaluate --split`,
beside `spiketok baseline --model mlp` (its validation R² is what it chose on, from its JSON's `fit`).
The section in docs/benchmarks.md is written from the JSON files each step stores in WORK.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import provenance
from bench_recipe import DATA, PREPARE, RAT, SEALED, run, spiketok
from bench_recipe import PRIMATE as ALL_PRIMATE
from docsection import write_section

START, END = "<!-- validation:start -->", "<!-- validation:end -->"
SPLITS = ("interleaved", "blocks")
PRIMATE = [f for f in ALL_PRIMATE if f != SEALED]  # the sealed file: not even its validation split is read here
SETTINGS = ["model.window=1", "max_steps=1000", "init=none"]  # one budget for all: the split is what differs


def job(name: str, split: str, work: Path) -> None:
    """Prepare one file with one split method, train, score valid and test, run the MLP baseline."""
    folder = work / split / name
    folder.mkdir(parents=True, exist_ok=True)
    log = folder / "log.txt"
    data = folder / f"{name}.h5"
    if not data.exists():
        run(spiketok("prepare", str(DATA / f"{name}.nwb"), "--out", str(folder), "--split", split, *PREPARE[name]), log)
    result = folder / "spiketok.json"
    if not result.exists():
        t0, load_start = time.time(), os.getloadavg()[0]
        run_dir = folder / "run"
        run(["rm", "-rf", str(run_dir)], log)
        run(spiketok("train", "--data", str(data), "--out", str(run_dir), "--no-progress", *SETTINGS), log)
        scores = {}
        for which in ("valid", "test"):
            out = folder / f"eval-{which}.json"
            out.unlink(missing_ok=True)
            run(
                spiketok(
                    "evaluate", str(run_dir / "model.ckpt"), "--data", str(data), "--split", which, "--json", str(out)
                ),
                log,
            )
            scores[which] = json.loads(out.read_text())["mean_r2"]
        result.write_text(
            json.dumps(
                {
                    **scores,
                    "commit": provenance.start_commit(),
                    "minutes": (time.time() - t0) / 60,
                    "load": [load_start, os.getloadavg()[0]],  # 1-minute load average as the run began and ended
                }
            )
        )
    mlp = folder / "mlp.json"
    if not mlp.exists():
        run(spiketok("baseline", "--model", "mlp", "--data", str(data), "--json", str(mlp)), log)


def row(name: str, split: str, work: Path) -> tuple[str, float, float, float, float]:
    folder = work / split / name
    ours = json.loads((folder / "spiketok.json").read_text())
    (mlp,) = json.loads((folder / "mlp.json").read_text())["sessions"].values()
    return name, ours["valid"], ours["test"], mlp["fit"]["valid_r2"], mlp["r2"]


def write_doc(work: Path, files: list[str], load: provenance.Load) -> None:
    lines = [
        "## Validation against test: does the validation split look like the test?",
        "",
        "Each file prepared with the default `--split interleaved` (runs of ten trials of one condition, "
        "or 30 s blocks, dealt 7 train / 1 valid / 2 test) and with the chronological `--split blocks` (ten "
        "time blocks, the 3rd and 8th test, one other valid). spiketok trains from scratch with "
        f"`{' '.join(SETTINGS)}` (one budget for every file, so only the split differs) and is scored on "
        "both splits; the MLP baseline (`spiketok baseline --model mlp`) beside it, its validation R² the "
        "one it chose on. The gap is validation R² minus test R²: near 0 when validation can stand in for "
        "the test. "
        "`m1_dream_stevenson2011` is sealed and not run here.",
        "",
    ]
    summary = []
    for split in SPLITS:
        rows = [row(f, split, work) for f in files]
        lines += [
            f"### `--split {split}`",
            "",
            "| file | spiketok valid R² | spiketok test R² | gap | MLP valid R² | MLP test R² | gap |",
            "|---|---|---|---|---|---|---|",
        ]
        lines += [
            f"| {n} | {v:.3f} | {t:.3f} | {v - t:+.3f} | {mv:.3f} | {mt:.3f} | {mv - mt:+.3f} |"
            for n, v, t, mv, mt in rows
        ]
        gaps = [abs(v - t) for _, v, t, _, _ in rows]
        summary.append(
            f"`--split {split}`: median |gap| {statistics.median(gaps):.3f} for spiketok "
            f"(largest {max(gaps):.3f}, {max(rows, key=lambda r: abs(r[1] - r[2]))[0]}), "
            f"{statistics.median(abs(mv - mt) for *_, mv, mt in rows):.3f} for the MLP"
        )
        lines.append("")
    stored = [json.loads((work / split / f / "spiketok.json").read_text()) for split in SPLITS for f in files]
    minutes = sum(r["minutes"] for r in stored)
    loads = [v for r in stored for v in r.get("load", [])]
    unrecorded = sum("load" not in r for r in stored)
    load_cell = (
        f"1-minute load average {min(loads):.1f} to {max(loads):.1f} at the runs' starts and ends" if loads else ""
    )
    if unrecorded:
        load_cell += (
            f"{'; ' if loads else ''}not recorded for {unrecorded} of {len(stored)} runs (stored before runs kept it)"
        )
    lines += [
        "Summary, computed from the tables: " + "; ".join(summary) + ".",
        "",
        provenance.footer(
            load,
            ("torch", "numpy"),
            "1 torch thread per job",
            timing=False,
            commit=provenance.commits_cell([r["commit"] for r in stored]),
            rows=[
                (
                    "spiketok training and scoring",
                    f"{minutes:.0f} min over {len(stored)} runs "
                    "(stored in WORK: a later call reads finished runs back)",
                ),
                ("load while the runs trained", load_cell + " (the load line below is this call's)"),
            ],
        ),
    ]
    write_section("\n".join(lines), START, END)
    print("\n".join(lines))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", nargs="*", default=PRIMATE + RAT)
    ap.add_argument("--jobs", type=int, default=2, help="jobs run side by side")
    ap.add_argument("--work", type=Path, default=Path("bench-work/validation"))
    args = ap.parse_args()
    if not DATA.exists():
        sys.exit(f"no {DATA}: the real recordings are not here")
    unknown = set(args.files) - set(PREPARE)
    if unknown:
        sys.exit(f"unknown files {sorted(unknown)}; choose from {list(PREPARE)} (the sealed file is not one)")
    load = provenance.Load()
    with ThreadPoolExecutor(args.jobs) as pool:
        for f in [pool.submit(job, name, split, args.work) for name in args.files for split in SPLITS]:
            f.result()
    if set(args.files) == set(PRIMATE + RAT):  # every file but the sealed one
        write_doc(args.work, args.files, load.stop())
    else:
        print("a subset of the files: results stored in WORK; run with every file to write the section")


if __name__ == "__main__":
    main()
