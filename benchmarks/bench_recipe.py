"""The default recipe on real recordings: `spiketok train` with no overrides against the best baseline.

    python benchmarks/bench_recipe.py [--files NAME ...] [--jobs 2] [--redo train|baselines] [--work DIR] [--doc-only]

Each of the five files in ../shared/data is prepared, trained ALONE with the default command (no window,
no steps, no other setting), scored with `spiketok evaluate`, and compared with `spiketok baseline
--model ridge|gru|mlp` on the same test split. `macaque-3` trains one model on the three macaque files
together. Every step stores its JSON in WORK, so an interrupted run continues where it stopped and
`--redo` repeats one kind of step. The section in docs/benchmarks.md is written from those JSON files,
with the load average measured before and after.
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
MACAQUE = ["m1_chewie_2013-10-03", "m1_chewie_2013-12-19", "m1_mihi_2014-03-03"]
RAT = ["hc_linear_track", "hc_w_maze"]
PREPARE = {
    **{f: ["--behavior", "hand_velocity"] for f in MACAQUE},
    **{f: ["--behavior", "led", "--keep-moving", "5"] for f in RAT},
}
JOBS = {**{f: [f] for f in MACAQUE + RAT}, "macaque-3": MACAQUE}
BASELINES = ("ridge", "gru", "mlp")


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


def job(name: str, files: list[Path], work: Path, redo: set[str], baselines: bool = True) -> None:
    """Train with the defaults, evaluate, and run the three baselines (each file alone) for one job."""
    folder = work / name
    folder.mkdir(parents=True, exist_ok=True)
    log = folder / "log.txt"
    data = sum((["--data", str(p)] for p in files), [])
    result = folder / "spiketok.json"
    if "train" in redo or not result.exists():
        run_dir = folder / "run"
        subprocess.run(["rm", "-rf", str(run_dir)], check=True)
        t0 = time.time()
        run(spiketok("train", *data, "--out", str(run_dir), "--no-progress"), log)
        minutes = (time.time() - t0) / 60
        run(spiketok("evaluate", str(run_dir / "model.ckpt"), *data, "--json", str(folder / "eval.json")), log)
        scores = json.loads((folder / "eval.json").read_text())
        recipe = json.loads((run_dir / "recipe.json").read_text())
        result.write_text(json.dumps({"sessions": scores["sessions"], "recipe": recipe, "minutes": minutes}))
    if len(files) > 1 or not baselines:
        return
    for model in BASELINES:
        out = folder / f"{model}.json"
        if "baselines" in redo or not out.exists():
            run(spiketok("baseline", "--model", model, *data, "--json", str(out)), log)


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
    """The dropout and weight decay a run trained with (its logs/hparams.yaml)."""
    import yaml

    hp = yaml.safe_load((run_dir / "logs" / "hparams.yaml").read_text())
    return f"model.dropout={hp['model']['dropout']} weight_decay={hp['train']['weight_decay']}"


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
        f"Regularisation the runs trained with, read from their logs/hparams.yaml: {groups}; {verdict} "
        "(chosen in the leave-one-file-out section)."
    )


def write_doc(work: Path, load_before: tuple, load_after: tuple, seconds: float, doc_only: bool = False) -> None:
    lines = [
        "## Default recipe on real recordings: `spiketok train` with no overrides",
        "",
        "Each file trained alone with the default command (`spiketok train --data FILE --out RUN`: no window, "
        "no steps, nothing else set), R² on its test split (`spiketok evaluate`), beside `spiketok baseline "
        "--model ridge|gru|mlp` on the same split. Rat position on moving samples (`prepare --keep-moving 5`). "
        "What the recipe chose is read from each run's `recipe.json`.",
        "",
        "| file | spiketok R² | ridge | GRU | MLP | best baseline | margin | verdict | window "
        "(pilot val R²) | steps | minutes |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    beaten, trained_with = [], {}  # regularisation -> the runs that trained with it
    for name in MACAQUE + RAT:
        folder = work / name
        if not (folder / "spiketok.json").exists():
            continue
        trained_with.setdefault(regularisation(folder / "run"), []).append(name)
        res = json.loads((folder / "spiketok.json").read_text())
        ours = float(res["sessions"][name]["r2"])
        base = {m: r2_of(folder / f"{m}.json", name) for m in BASELINES}
        known = [v for v in base.values() if v is not None]
        best = max(known) if known else None
        verdict = "-" if best is None else ("above" if ours > best else "**below**")
        beaten.append(verdict == "above")
        rec = res["recipe"]
        pilots = ", ".join(f"{w} s: {'-' if r is None else f'{r:.2f}'}" for w, r in rec.get("pilots", {}).items())
        window = rec["settings"].get("model.window", "set")
        steps = json.loads((folder / "run" / "recipe.json").read_text())["settings"].get("max_steps", "set")
        fmt = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
        lines.append(
            f"| {name} | **{ours:.3f}** | {fmt(base['ridge'])} | {fmt(base['gru'])} | {fmt(base['mlp'])} | "
            f"{fmt(best)} | {'-' if best is None else f'{ours - best:+.3f}'} | {verdict} | {window} ({pilots}) | "
            f"{steps} (max) | {res['minutes']:.1f} |"
        )
    multi = work / "macaque-3" / "spiketok.json"
    if multi.exists():
        res = json.loads(multi.read_text())
        lines += [
            "",
            "One model on the three macaque files together (defaults), per session, against the same "
            "per-file baselines:",
            "",
            "| session | spiketok R² (3 sessions) | best baseline | verdict |",
            "|---|---|---|---|",
        ]
        for sid, r in res["sessions"].items():
            known = [v for v in (r2_of(work / sid / f"{m}.json", sid) for m in BASELINES) if v is not None]
            best = max(known) if known else None
            verdict = "-" if best is None else ("above" if r["r2"] > best else "**below**")
            lines.append(f"| {sid} | **{r['r2']:.3f}** | {'-' if best is None else f'{best:.3f}'} | {verdict} |")
        trained_with.setdefault(regularisation(multi.parent / "run"), []).append("the three-session model")
        rec = res["recipe"]
        pilots = ", ".join(f"{w} s: {'-' if r is None else f'{r:.2f}'}" for w, r in rec.get("pilots", {}).items())
        lines.append(
            f"\nThe recipe chose a {rec['settings'].get('model.window', 'set')} s window (pilot validation R²: "
            f"{pilots}) and at most {rec['settings'].get('max_steps', 'set')} steps; {res['minutes']:.1f} min."
        )
    n = len(beaten)
    missing = [f for f in MACAQUE + RAT if not (work / f / "spiketok.json").exists()]
    lines += [
        "",
        f"Files where the default recipe is above the best baseline: **{sum(beaten)} of {n}**"
        + (f" (no result yet for {', '.join(missing)})." if missing else "."),
        "",
    ]
    if trained_with:
        lines += [regularisation_note(trained_with), ""]
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
    ap.add_argument("--files", nargs="*", default=list(JOBS), help=f"jobs to run (default all): {', '.join(JOBS)}")
    ap.add_argument("--jobs", type=int, default=2, help="jobs run side by side")
    ap.add_argument("--redo", nargs="*", default=[], choices=["train", "baselines"])
    ap.add_argument("--no-baselines", action="store_true", help="train and evaluate spiketok only")
    ap.add_argument("--work", type=Path, default=Path("bench-work/recipe"))
    ap.add_argument("--doc-only", action="store_true", help="write the section from the results in WORK")
    args = ap.parse_args()
    unknown = set(args.files) - set(JOBS)
    if unknown:
        sys.exit(f"unknown jobs {sorted(unknown)}; choose from {list(JOBS)}")
    paths, load_before, t0 = begin_study(args.work, args.doc_only)
    if not args.doc_only:
        with ThreadPoolExecutor(args.jobs) as pool:
            futures = [
                pool.submit(job, name, [paths[f] for f in JOBS[name]], args.work, set(args.redo), not args.no_baselines)
                for name in args.files
            ]
            for f in futures:
                f.result()
    write_doc(args.work, load_before, os.getloadavg(), time.time() - t0, args.doc_only)


if __name__ == "__main__":
    main()
