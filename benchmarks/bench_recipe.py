"""The default recipe on real recordings: `spiketok train` with no overrides against the best baseline.

    python benchmarks/bench_recipe.py [--files NAME ...] [--seeds 3] [--jobs 2] [--redo train|baselines]
        [--work DIR] [--doc-only]

Each of the eight files in ../shared/data is prepared, trained ALONE with the default command (no window,
no steps, no other setting; seed K > 0 adds only `seed=K`), scored with `spiketok evaluate`, and compared with
`spiketok baseline --model ridge|gru|mlp --seed K` on the same test split; a file's figures are means over the
seeds. The goal (issue 30): the default above the best baseline by at least GOAL on every file.
`m1_dream_stevenson2011` is sealed: it runs last, after every other file, and once: a stored result of it is
never run again (`--redo` leaves it alone), so it is scored once and published as it came out.
Every step stores its JSON in WORK, so an interrupted run continues where it stopped and `--redo` repeats one
kind of step. The section in docs/benchmarks.md is written from those JSON files, with the load average
measured before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import date
from pathlib import Path

import provenance
from docsection import write_section

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
START, END = "<!-- recipe:start -->", "<!-- recipe:end -->"
SEALED = "m1_dream_stevenson2011"  # tuned on by no one: scored once, at the end
PRIMATE = [
    "m1_chewie_2013-10-03",
    "m1_chewie_2013-12-19",
    "m1_mihi_2014-03-03",
    "m1_chewie_2016-10-11",
    "s1_area2_spykesml",
    SEALED,
]
MACAQUE = PRIMATE[:3]  # the three 2013-2014 macaque sessions (earlier studies' set)
RAT = ["hc_linear_track", "hc_w_maze"]
FILES = [f for f in PRIMATE + RAT if f != SEALED] + [SEALED]  # the sealed file last
PREPARE = {
    **{f: ["--behavior", "hand_velocity"] for f in PRIMATE},
    **{f: ["--behavior", "led", "--keep-moving", "5"] for f in RAT},
}
BASELINES = ("ridge", "gru", "mlp")
GOAL = 0.02  # the margin over the best baseline the default should reach on every file (issue 30)


def spiketok(*args: str) -> list[str]:
    return [sys.executable, "-m", "spiketok.cli", *args]


def run(cmd: list[str], log: Path) -> None:
    """Run a step with one torch thread (jobs run side by side), its output into `log`."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    with open(log, "a") as f:
        f.write("$ " + " ".join(cmd) + "\n")
        f.flush()
        subprocess.run(cmd, check=True, stdout=f, stderr=subprocess.STDOUT, env=env)


def prepare(work: Path) -> dict[str, Path]:
    out = work / "prepared"
    paths = {f: out / f"{f}.h5" for f in PREPARE}
    for f, args in PREPARE.items():
        if not paths[f].exists():
            run(spiketok("prepare", str(DATA / f"{f}.nwb"), "--out", str(out), *args), work / "prepare.log")
    return paths


def seed_folder(work: Path, name: str, seed: int) -> Path:
    return work / name / f"seed-{seed}"


def job(name: str, path: Path, seed: int, work: Path, redo: set[str], baselines: bool = True) -> None:
    """Train with the defaults (seed `seed`), evaluate, and run the three baselines for one file and seed."""
    folder = seed_folder(work, name, seed)
    folder.mkdir(parents=True, exist_ok=True)
    if name == SEALED and (folder / "spiketok.json").exists():
        redo = set()  # the sealed file is scored once
    log = folder / "log.txt"
    data = ["--data", str(path)]
    result = folder / "spiketok.json"
    if "train" in redo or not result.exists():
        run_dir = folder / "run"
        subprocess.run(["rm", "-rf", str(run_dir)], check=True)
        t0 = time.time()
        run(spiketok("train", *data, "--out", str(run_dir), "--no-progress", *([f"seed={seed}"] if seed else [])), log)
        minutes = (time.time() - t0) / 60
        run(spiketok("evaluate", str(run_dir / "model.ckpt"), *data, "--json", str(folder / "eval.json")), log)
        scores = json.loads((folder / "eval.json").read_text())
        recipe = json.loads((run_dir / "recipe.json").read_text())
        result.write_text(json.dumps({"sessions": scores["sessions"], "recipe": recipe, "minutes": minutes}))
    if not baselines:
        return
    for model in BASELINES:
        out = folder / f"{model}.json"
        if "baselines" in redo or not out.exists():
            run(spiketok("baseline", "--model", model, *data, "--seed", str(seed), "--json", str(out)), log)


def r2_of(path: Path, sid: str) -> float | None:
    if not path.exists():
        return None
    res = json.loads(path.read_text())
    return float(res["sessions"][sid]["r2"])


def begin_study(work: Path, doc_only: bool, prepared_in: Path | None = None) -> tuple[dict[str, Path], tuple, float]:
    """What every study over the shared recordings starts with: check they are here, make WORK, note the load
    average and the start time, and prepare the files (into `prepared_in`, default WORK; nothing with doc_only)."""
    if not DATA.exists():
        sys.exit(f"no {DATA}: the real recordings are not here")
    work.mkdir(parents=True, exist_ok=True)
    load_before, t0 = os.getloadavg(), time.time()
    provenance.start_commit()  # the code this run starts from, for run_table's commit row
    return ({} if doc_only else prepare(prepared_in or work)), load_before, t0


def preset_regularisation() -> str:
    """The tiny preset's dropout and weight decay as this tree ships them."""
    from spiketok.train import load_config

    cfg = load_config("tiny", [])
    return f"model.dropout={cfg.model.dropout} weight_decay={cfg.weight_decay}"


def regularisation(run_dir: Path) -> str:
    """The dropout and weight decay a run's kept model trained with (read from its model file's metadata, which
    holds them whichever start `init: auto` kept)."""
    from spiketok.model.file import read_model_file

    meta = read_model_file(run_dir / "model.ckpt")[1]
    return f"model.dropout={meta.model['dropout']} weight_decay={meta.train.weight_decay}"


def regularisation_note(trained_with: dict[str, list[str]]) -> str:
    """A sentence: which runs trained with which dropout and weight decay, and whether that is the shipped preset.

    `trained_with` maps `regularisation(run)` to the names of the runs that trained with it."""
    shipped = preset_regularisation()
    groups = "; ".join(f"{reg} ({', '.join(runs)})" for reg, runs in sorted(trained_with.items()))
    verdict = (
        "all of them the preset this tree ships"
        if set(trained_with) == {shipped}
        else f"**{'some' if shipped in trained_with else 'none'} of them the preset this tree ships** ({shipped})"
    )
    return (
        f"Regularisation the runs trained with, read from their model files: {groups}; {verdict} "
        "(chosen in the leave-one-file-out section)."
    )


def shipped_sessions() -> set[str]:
    """The sessions the shipped pretrained model trained on (their train splits), read from its file."""
    from spiketok.model.file import read_model_file
    from spiketok.model.pretrained import DEFAULT, resolve_model_path

    return set(read_model_file(resolve_model_path(f"pretrained:{DEFAULT}"))[1].session_ids)


def seed_results(work: Path, name: str) -> list[dict]:
    """Each finished seed of one file: spiketok's R², each baseline's, the start kept, window, minutes."""
    out = []
    for folder in sorted((work / name).glob("seed-*"), key=lambda f: int(f.name.split("-")[1])):
        if not (folder / "spiketok.json").exists():
            continue
        res = json.loads((folder / "spiketok.json").read_text())
        start = folder / "run" / "start.json"
        out.append(
            {
                "seed": int(folder.name.split("-")[1]),
                "r2": float(res["sessions"][name]["r2"]),
                "base": {m: r2_of(folder / f"{m}.json", name) for m in BASELINES},
                "kept": json.loads(start.read_text())["kept"] if start.exists() else "scratch (no comparison)",
                "window": res["recipe"]["settings"].get("model.window", "set"),
                "minutes": res["minutes"],
                "folder": folder,
            }
        )
    return out


def _mean(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return sum(known) / len(known) if len(known) == len(values) and known else None


def write_doc(work: Path, load_before: tuple, load_after: tuple, seconds: float, doc_only: bool = False) -> None:
    fmt = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
    seen = shipped_sessions()
    lines = [
        "## Default recipe on real recordings: `spiketok train` with no overrides",
        "",
        "Each file trained alone with the default command (`spiketok train --data FILE --out RUN`: nothing set "
        "but `seed=K` for seeds after the first), R² on its test split (`spiketok evaluate`), beside `spiketok "
        "baseline --model ridge|gru|mlp --seed K` on the same split; each figure is the mean over the seeds run. "
        f"Goal: above the best baseline by at least {GOAL} on every file. Rat position on moving samples "
        f"(`prepare --keep-moving 5`). `{SEALED}` is sealed: nothing was tuned on it, it ran last and once. "
        "The default compares training from scratch with starting from the shipped model and keeps the better "
        "on validation (`start`); 'shipped model saw it' says whether that model trained on the file's train split.",
        "",
        "| file | seeds | spiketok R² (each seed) | ridge | GRU | MLP | best baseline | margin | goal | start kept "
        "| shipped model saw it | window | minutes (mean) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    met, trained_with, missing = [], {}, []
    for name in FILES:
        runs = seed_results(work, name)
        if not runs:
            missing.append(name)
            continue
        for r in runs:
            trained_with.setdefault(regularisation(r["folder"] / "run"), []).append(f"{name} seed {r['seed']}")
        ours = _mean([r["r2"] for r in runs])
        base = {m: _mean([r["base"][m] for r in runs]) for m in BASELINES}
        known = [v for v in base.values() if v is not None]
        best = max(known) if len(known) == len(BASELINES) else None
        goal = "-" if best is None else ("met" if ours - best >= GOAL else "**missed**")
        met.append(goal == "met")
        kept = ", ".join(f"{k} x{sum(r['kept'] == k for r in runs)}" for k in sorted({r["kept"] for r in runs}))
        windows = ", ".join(sorted({str(r["window"]) for r in runs}))
        each = ", ".join(f"{r['r2']:.3f}" for r in runs)
        lines.append(
            f"| {name}{' (sealed)' if name == SEALED else ''} | {len(runs)} | **{ours:.3f}** "
            f"({each}) | {fmt(base['ridge'])} | {fmt(base['gru'])} | "
            f"{fmt(base['mlp'])} | {fmt(best)} | {'-' if best is None else f'{ours - best:+.3f}'} | {goal} | "
            f"{kept} | {'yes' if name in seen else 'no'} | {windows} | "
            f"{sum(r['minutes'] for r in runs) / len(runs):.1f} |"
        )
    lines += [
        "",
        f"Files where the default is above the best baseline by at least {GOAL}: **{sum(met)} of {len(met)}**"
        + (f" (no result yet for {', '.join(missing)})." if missing else "."),
        "",
    ]
    if trained_with:
        lines += [regularisation_note(trained_with), ""]
    lines += [
        "Each run's training minutes are in the table; the command below is the call that wrote this section, "
        "which reads finished runs back from WORK (runs it had to train count in its minutes).",
        "",
    ]
    lines += run_table(seconds, load_before, load_after, doc_only)
    write_section("\n".join(lines), START, END)
    print("\n".join(lines))


def run_table(
    seconds: float,
    load_before: tuple,
    load_after: tuple,
    doc_only: bool = False,
    load_shown: bool = False,
    commit: str | None = None,
) -> list[str]:
    """The closing table of an accuracy section: date, machine, versions, commit, this command, load averages
    (none when the section is written from stored results; `load_shown`: the section gives the load of the
    run that stored them; `commit`: the commit cell of the results when not this run's alone)."""
    import torch

    command = provenance.command()  # sys.argv with paths relative to the repository (WORK/... outside it)
    head = [
        "| | |",
        "|---|---|",
        f"| date | {date.today()} |",
        f"| machine | {platform.machine()}, {os.cpu_count()} CPU cores, no GPU; jobs side by side, "
        "1 torch thread each |",
        f"| versions | Python {platform.python_version()}, torch {torch.__version__} |",
    ]
    if doc_only:
        return head + [
            f"| commit | {commit or provenance.NOT_RECORDED} |",
            f"| section written by | `{command}` from the results that earlier runs of this script stored "
            f"in WORK{'' if load_shown else '; the load during those runs was not recorded'} |",
        ]
    return head + [
        f"| commit | {commit or provenance.start_commit()} |",
        f"| command | `{command}` ({seconds / 60:.0f} min) |",
        f"| load average (1, 5, 15 min) | before {', '.join(f'{x:.1f}' for x in load_before)}; "
        f"after {', '.join(f'{x:.1f}' for x in load_after)} (accuracy only: no timing is compared) |",
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", nargs="*", default=FILES, help=f"files to run (default all): {', '.join(FILES)}")
    ap.add_argument("--seeds", type=int, default=3, help="seeds per file (0, 1, ...): figures are their means")
    ap.add_argument("--jobs", type=int, default=2, help="jobs run side by side")
    ap.add_argument("--redo", nargs="*", default=[], choices=["train", "baselines"])
    ap.add_argument("--no-baselines", action="store_true", help="train and evaluate spiketok only")
    ap.add_argument("--work", type=Path, default=Path("bench-work/recipe"))
    ap.add_argument("--doc-only", action="store_true", help="write the section from the results in WORK")
    args = ap.parse_args()
    unknown = set(args.files) - set(FILES)
    if unknown:
        sys.exit(f"unknown files {sorted(unknown)}; choose from {FILES}")
    paths, load_before, t0 = begin_study(args.work, args.doc_only)
    if not args.doc_only:
        todo = [(f, k) for f in FILES if f in args.files and f != SEALED for k in range(args.seeds)]
        redo, baselines = set(args.redo), not args.no_baselines
        with ThreadPoolExecutor(args.jobs) as pool:
            for f in [pool.submit(job, n, paths[n], k, args.work, redo, baselines) for n, k in todo]:
                f.result()
            if SEALED in args.files:  # after every other file has finished
                sealed = [(SEALED, k) for k in range(args.seeds)]
                for f in [pool.submit(job, n, paths[n], k, args.work, set(), baselines) for n, k in sealed]:
                    f.result()
    write_doc(args.work, load_before, os.getloadavg(), time.time() - t0, args.doc_only)


if __name__ == "__main__":
    main()
