"""Rebuild docs/benchmarks.md: run every benchmark script in turn, each writing its own section.

    python benchmarks/run_all.py [--quick] [--doc PATH] [--allow-load] [--only NAME ...]
    python benchmarks/run_all.py --unmeasured --only NAME ...

Timing benchmarks run first (they refuse to write on a loaded machine unless --allow-load), then the
accuracy ones. --quick runs each script with its smallest settings (a smoke run; the scripts without a
quick mode are long and skipped) and writes benchmarks/out/quick.md, never docs/benchmarks.md. Scripts
that fail are listed at the end; the exit status is 1 if any failed. --doc PATH sends every section to
PATH (through $SPIKETOK_BENCH_DOC, which scripts without a --doc option honour too) instead of
docs/benchmarks.md. --unmeasured runs nothing: it replaces the sections named (under their own headings)
with a line saying they have not been measured on this code yet and the full command that measures each,
and deletes the pictures only they showed.
"""

from __future__ import annotations

import argparse
import importlib
import os
import subprocess
import sys
import time
from pathlib import Path

from docsection import ENV, SCRATCH, write_unmeasured

HERE = Path(__file__).resolve().parent
OWN_VENV = {"speed_reference": HERE.parent / "bench-venv" / "bin" / "python"}  # see bench_speed_reference.py
TIMING = {"window_reads", "speed_reference", "streaming", "runtimes", "scaling", "recurrent"}  # take --allow-load
# name -> (script and arguments of the full run, arguments of the quick run or None: long, skipped in --quick)
BENCHMARKS: dict[str, tuple[list[str], list[str] | None]] = {
    "window_reads": (["bench_window_reads.py"], ["bench_window_reads.py", "--quick"]),
    "speed_reference": (
        ["bench_speed_reference.py", "--profile", "--published-dropout"],
        ["bench_speed_reference.py", "--quick", "--sizes", "tiny"],
    ),
    "streaming": (["bench_streaming.py"], ["bench_streaming.py", "--quick"]),
    "runtimes": (["bench_export_latency.py"], ["bench_export_latency.py", "--quick"]),
    "scaling": (["bench_scaling.py"], ["bench_scaling.py", "--quick"]),
    "accuracy_baselines": (
        ["bench_accuracy_baselines.py", "--fresh"],
        ["bench_accuracy_baselines.py", "--quick", "--fresh", "--only", "simulator"],
    ),
    "fewshot_simulated": (
        ["bench_fewshot.py", "--simulated", "--pretrain-steps", "600", "--pretrain-batch", "16"],
        ["bench_fewshot.py", "--simulated", "--quick"],
    ),
    "fewshot_real": (
        ["bench_fewshot.py", "--real", "--pretrain-steps", "500", "--pretrain-minutes", "12"],
        ["bench_fewshot.py", "--real", "--quick"],
    ),
    "real_data": (["bench_real_data.py"], ["bench_real_data.py", "--quick"]),
    "recipe": (["bench_recipe.py"], None),
    "transfer": (["bench_transfer.py"], None),
    "lofo": (["bench_lofo.py", "--recipe-work", "bench-work/recipe"], None),
    "ensemble": (["bench_ensemble.py"], None),  # after lofo: its runs are the ensembles' seed 0
    "validation": (["bench_validation.py"], None),
    "versions": (["bench_versions.py", "--base", "HEAD~1"], None),  # this code against its previous commit
    "recurrent": (
        ["bench_recurrent.py", "--recipe-work", "bench-work/recipe"],  # latency part first, then accuracy
        ["bench_recurrent.py", "--quick"],
    ),
}


def markers(name: str) -> tuple[str, str]:
    """The start and end markers of a benchmark's section, read from its script (a few-shot kind's part)."""
    module = importlib.import_module(Path(BENCHMARKS[name][0][0]).stem)
    if name.startswith("fewshot_"):
        return module.part_markers(name.removeprefix("fewshot_"))
    return module.START, module.END


def mark_unmeasured(names: list[str], doc: Path | None) -> None:
    """Replace each named section with the line that says it has not been measured on this code yet."""
    for name in names:
        command = " ".join(["python", f"benchmarks/{BENCHMARKS[name][0][0]}", *BENCHMARKS[name][0][1:]])
        start, end = markers(name)
        gone = write_unmeasured(start, end, command, f"python benchmarks/run_all.py --unmeasured --only {name}", doc)
        print(
            f"== {name}: marked not measured on this code yet"
            + (f"; deleted {', '.join(p.name for p in gone)}" if gone else "")
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smallest settings of each script (a smoke run)")
    ap.add_argument("--doc", type=Path, help="write every section here instead of docs/benchmarks.md")
    ap.add_argument("--allow-load", action="store_true", help="passed to the timing benchmarks")
    ap.add_argument("--only", nargs="*", choices=list(BENCHMARKS), help="run only these")
    ap.add_argument(
        "--unmeasured",
        action="store_true",
        help="run nothing: mark the --only sections as not measured on this code yet, each with its full command",
    )
    args = ap.parse_args()
    if args.unmeasured:
        if not args.only:
            ap.error("--unmeasured needs --only NAME ...: the sections to take down")
        mark_unmeasured(args.only, args.doc)
        return
    env = dict(os.environ)
    if args.doc or args.quick:  # a smoke run never writes the page
        env[ENV] = str((args.doc or SCRATCH).resolve())
    failed, skipped, done = [], [], []
    for name, (full, quick) in BENCHMARKS.items():
        if args.only and name not in args.only:
            continue
        cmd = quick if args.quick else full
        if cmd is None:
            skipped.append(name)
            print(f"== {name}: long, skipped in --quick", flush=True)
            continue
        python = sys.executable
        if name in OWN_VENV and OWN_VENV[name].exists():  # torch-brain lives only in the benchmark's own venv
            python = str(OWN_VENV[name])
        cmd = [python, str(HERE / cmd[0]), *cmd[1:]]
        if args.allow_load and name in TIMING:
            cmd.append("--allow-load")
        print(f"== {name}: {' '.join(cmd[1:])}", flush=True)
        t = time.monotonic()
        rc = subprocess.run(cmd, env=env, cwd=HERE.parent, check=False).returncode
        minutes = (time.monotonic() - t) / 60
        (failed if rc else done).append(f"{name} ({minutes:.1f} min{f', exit {rc}' if rc else ''})")
    print("\nwritten: " + (", ".join(done) or "none"))
    if skipped:
        print("long, skipped in --quick: " + ", ".join(skipped))
    if failed:
        print("FAILED (their sections were not rewritten): " + ", ".join(failed))
        sys.exit(1)


if __name__ == "__main__":
    main()
