"""Is this tree slower than an earlier revision? Training and single-window latency, both measured in one run.

    bench-venv/bin/python benchmarks/bench_versions.py --base REV [--rounds 3] [--sizes tiny,poyo-1.3M] [--allow-load]

Checks out REV into a temporary git worktree, then alternates, `--rounds` times, one run of
`bench_speed_reference.py --no-doc` from REV's tree and one from this tree (each imports its own spiketok),
so drift on the machine hits both alike. Compares spiketok's own training steps/s and latency (wall and
CPU time) between the two, and the same figures as ratios to torch-brain measured beside them. The goal:
no slower than REV by more than 5%. Writes the `versions` section of docs/benchmarks.md (not when loaded,
unless --allow-load).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from docsection import add_doc_args, write_section
from provenance import Load, footer, refuse_if_loaded

ROOT = Path(__file__).resolve().parents[1]
START, END = "<!-- versions:start -->", "<!-- versions:end -->"
TOLERANCE = 0.05


def measure(tree: Path, out: Path, sizes: str) -> dict:
    """One bench_speed_reference run importing spiketok from `tree`."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    cmd = [
        sys.executable,
        str(tree / "benchmarks" / "bench_speed_reference.py"),
        "--no-doc",
        "--no-memory",
        "--sizes",
        sizes,
        "--steps",
        "5",
        "--repeats",
        "3",
        "--latency-calls",
        "100",
        "--json",
        str(out),
    ]
    subprocess.run(cmd, check=True, env=env, cwd=tree, stdout=subprocess.DEVNULL)
    return json.loads(out.read_text())


def figures(run: dict, size: str) -> dict[str, float]:
    r = run["sizes"][size]
    return {
        "train_steps_per_s": r["train"]["steps_per_s"]["spiketok"],
        "train_steps_per_cpu_s": r["train"]["steps_per_cpu_s"]["spiketok"],
        "train_ratio": r["train"]["ratio"],
        "latency_ms": r["latency"]["spiketok"]["median_ms"],
        "latency_cpu_ms": r["latency"]["spiketok"]["cpu_median_ms"],
        "latency_ratio": r["latency"]["ratio_median"],
    }


def render(base: str, head: str, sizes: list[str], old: list[dict], new: list[dict], load: Load, argv) -> str:
    lines = [
        "## This tree against an earlier revision (training and latency)",
        "",
        f"spiketok at `{head}` (this tree) against `{base}`, each timed by its own `bench_speed_reference.py` "
        f"in alternating runs ({len(old)} each, medians shown). Higher steps/s and lower latency are better; "
        f"'change' is this tree against the base. The goal (no slower than {TOLERANCE:.0%}) is judged on the "
        "ratios to torch-brain, timed in the same process beside each tree: between separate runs the machine "
        "itself drifts by more than 5% (measured below), and the ratio divides that drift out.",
        "",
        "| size | figure | base | this tree | change | goal |",
        "|---|---|---|---|---|---|",
    ]
    verdicts = []
    for size in sizes:
        o = {k: float(np.median([figures(r, size)[k] for r in old])) for k in figures(old[0], size)}
        n = {k: float(np.median([figures(r, size)[k] for r in new])) for k in figures(new[0], size)}
        for key, label, higher in (
            ("train_steps_per_s", "training steps/s (wall)", True),
            ("train_steps_per_cpu_s", "training steps/s (CPU time)", True),
            ("train_ratio", "training, ratio to torch-brain", True),
            ("latency_ms", "single-window latency, ms (wall)", False),
            ("latency_cpu_ms", "single-window latency, ms (CPU time)", False),
            ("latency_ratio", "latency, ratio to torch-brain", False),
        ):
            change = n[key] / o[key] - 1
            slower = -change if higher else change
            if "ratio" in key:  # the verdict: divided by the reference timed beside it, the machine's drift cancels
                ok = slower <= TOLERANCE
                verdicts.append(ok)
                goal = "met" if ok else "**missed**"
            else:
                goal = "(see the ratio)"
            lines.append(f"| `{size}` | {label} | {o[key]:.3g} | {n[key]:.3g} | {change:+.1%} | {goal} |")
    noise = []
    for size in sizes:  # the reference's code is the same in both sets of runs: its change is the machine's drift
        for part, key in (("train", "steps_per_s"), ("latency", "median_ms")):
            pick = (
                (lambda r, size=size, part=part, key=key: r["sizes"][size][part][key]["reference"])
                if part == "train"
                else (lambda r, size=size, part=part, key=key: r["sizes"][size][part]["reference"][key])
            )
            noise.append(abs(np.median([pick(r) for r in new]) / np.median([pick(r) for r in old]) - 1))
    lines += [
        "",
        f"No slower than the base within {TOLERANCE:.0%} on **{sum(verdicts)} of {len(verdicts)}** ratios. "
        f"The reference (the same torch-brain code in every run) moved by up to {max(noise):.1%} between the "
        "two sets of runs: the machine's own drift.",
        "",
    ]
    lines += footer(load, ("torch", "spiketok"), "torch on 1 thread", argv=argv).splitlines()
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", required=True, help="git revision to compare against")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--sizes", default="tiny,poyo-1.3M")
    ap.add_argument("--no-doc", action="store_true")
    add_doc_args(ap, timing=True)
    args = ap.parse_args()
    load = Load()
    head = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()
    head += " (with uncommitted changes)" if dirty else ""
    base = subprocess.run(
        ["git", "rev-parse", "--short", args.base], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()
    old, new = [], []
    with tempfile.TemporaryDirectory() as tmp:
        tree = Path(tmp) / "base"
        subprocess.run(
            ["git", "worktree", "add", "--detach", str(tree), base], cwd=ROOT, check=True, stdout=subprocess.DEVNULL
        )
        try:
            for k in range(args.rounds):
                old.append(measure(tree, Path(tmp) / f"old{k}.json", args.sizes))
                new.append(measure(ROOT, Path(tmp) / f"new{k}.json", args.sizes))
                print(f"round {k + 1}/{args.rounds} done", flush=True)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=ROOT, check=False)
    load.stop()
    section = render(base, head, args.sizes.split(","), old, new, load, sys.argv)
    print(section)
    if not args.no_doc and refuse_if_loaded(load, args.allow_load, args.doc):
        write_section(section, START, END, args.doc)
    elif not args.no_doc:
        sys.exit(3)


if __name__ == "__main__":
    main()
