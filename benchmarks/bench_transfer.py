"""Transfer, leave one macaque file out: `spiketok train --init PRETRAINED` against training from scratch.

    python benchmarks/bench_transfer.py [--trials 10 50 all] [--seeds 0 1 2] [--jobs 2] [--work DIR]

For each of the three macaque files: pretrain on the other two with the default command, then train on
N training trials of the left-out file (one draw per --seeds; the file's own valid split for early
stopping, its test split for the score), once from the pretrained model (`--init`) and once from
scratch, both with the default recipe; beside `spiketok baseline --model ridge|gru|mlp` trained on the
same N trials. Steps store their JSON in WORK, so a stopped run continues. Writes its section of
docs/benchmarks.md, with the load average before and after.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import provenance
from bench_recipe import BASELINES, MACAQUE, begin_study, regularisation, regularisation_note, run, run_table, spiketok
from docsection import write_section

from spiketok.adapt.transfer import CHOICE_FILE

START, END = "<!-- transfer:start -->", "<!-- transfer:end -->"
ADAPT_MODES = ("unit-id", "finetune")  # `spiketok adapt` arms: only the new embeddings; then every weight


def restricted(path: Path, n: str, seed: int, out: Path) -> Path:
    """A copy of the session whose train split is N trials drawn with `seed` ('all': the file itself)."""
    if n == "all":
        return path
    from spiketok.adapt.data import select_trials
    from spiketok.data.storage import StoredSession, read_session, write_session

    target = out / f"{path.stem}.h5"
    if not target.exists():
        chosen = select_trials(StoredSession(path), int(n), pick="random", seed=seed)
        session = read_session(path)
        session.splits = {**session.splits, "train": chosen}
        out.mkdir(parents=True, exist_ok=True)
        write_session(session, target)
    return target


def train_and_score(folder: Path, data: list[Path], extra: list[str]) -> dict:
    """`spiketok train` (defaults) then `evaluate` on the test split; cached in folder/result.json."""
    result = folder / "result.json"
    if result.exists():
        return json.loads(result.read_text())
    folder.mkdir(parents=True, exist_ok=True)
    run(["rm", "-rf", str(folder / "run")], folder / "log.txt")
    args = sum((["--data", str(p)] for p in data), [])
    t0 = time.time()
    run(spiketok("train", *args, "--out", str(folder / "run"), "--no-progress", *extra), folder / "log.txt")
    minutes = (time.time() - t0) / 60
    run(
        spiketok("evaluate", str(folder / "run" / "model.ckpt"), *args, "--json", str(folder / "eval.json")),
        folder / "log.txt",
    )
    res = {
        "sessions": json.loads((folder / "eval.json").read_text())["sessions"],
        "minutes": minutes,
        "recipe": json.loads((folder / "run" / "recipe.json").read_text()),
    }
    result.write_text(json.dumps(res))
    return res


def adapt_and_score(folder: Path, pretrained: Path, data: Path, mode: str) -> dict:
    """`spiketok adapt PRETRAINED DATA --mode MODE` (all N training trials) then `evaluate`; cached."""
    result = folder / "result.json"
    if result.exists():
        return json.loads(result.read_text())
    folder.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    run(
        spiketok(
            "adapt", str(pretrained), str(data), "--mode", mode, "--out", str(folder / "model.ckpt"), "--no-evaluate"
        ),
        folder / "log.txt",
    )
    minutes = (time.time() - t0) / 60
    run(
        spiketok("evaluate", str(folder / "model.ckpt"), "--data", str(data), "--json", str(folder / "eval.json")),
        folder / "log.txt",
    )
    res = {"sessions": json.loads((folder / "eval.json").read_text())["sessions"], "minutes": minutes}
    result.write_text(json.dumps(res))
    return res


def arm_folder(work: Path, name: str, n: str, seed: int) -> Path:
    """Where the arms of one draw live: WORK/<file>/n<N> for seed 0, WORK/<file>/n<N>-seed<S> for the others."""
    return work / name / (f"n{n}" if seed == 0 else f"n{n}-seed{seed}")


def pretrain(name: str, paths: dict[str, Path], work: Path, settings: list[str]) -> Path:
    """The model pretrained on the macaque files other than `name` (cached); its checkpoint."""
    train_and_score(work / f"pretrain-without-{name}", [paths[f] for f in MACAQUE if f != name], settings)
    return work / f"pretrain-without-{name}" / "run" / "model.ckpt"


def draw(
    name: str, n: str, seed: int, paths: dict[str, Path], work: Path, settings: list[str], with_adapt: bool
) -> None:
    """Every arm on N trials of `name` drawn with `seed`; `settings` (key=value) go to every train."""
    ckpt = pretrain(name, paths, work, settings)
    data = restricted(paths[name], n, seed, work / f"{name}-{n}-trials-seed{seed}")
    folder = arm_folder(work, name, n, seed)
    train_and_score(folder / "init", [data], ["--init", str(ckpt), *settings])
    train_and_score(folder / "scratch", [data], settings)
    for mode in ADAPT_MODES if with_adapt else ():
        adapt_and_score(folder / mode, ckpt, data, mode)
    for model in BASELINES:
        out = folder / f"{model}.json"
        if not out.exists():
            run(spiketok("baseline", "--model", model, "--data", str(data), "--json", str(out)), folder / "log.txt")


RUN_LOG = "last-run.json"  # in WORK: how many results the last (not --doc-only) run stored, and read back


def stored_results(work: Path) -> set[str]:
    """Every stored result in WORK (arms' result.json, baselines' JSON), as paths relative to WORK."""
    found = [
        *work.glob("pretrain-without-*/result.json"),
        *work.glob("*/n*/*/result.json"),
        *(p for m in BASELINES for p in work.glob(f"*/n*/{m}.json")),
    ]
    return {str(p.relative_to(work)) for p in found}


def _fmt(v: float | None) -> str:
    """A table cell: R² to three decimals, or '-' when not run."""
    return "-" if v is None else f"{v:.3f}"


def _r2(path: Path, name: str) -> float | None:
    """Test R² of session `name` in a stored result (evaluate or baseline JSON); None when it was not run."""
    return json.loads(path.read_text())["sessions"][name]["r2"] if path.exists() else None


def kept_run(run_dir: Path) -> Path:
    """The training folder whose model a `train --init` run kept (finetune.json names it), else run_dir itself."""
    choice = run_dir / CHOICE_FILE
    return run_dir / json.loads(choice.read_text())["chosen"] if choice.exists() else run_dir


def lr_choices(init_runs: list[Path]) -> dict[Path, str]:
    """The fine-tuning run each `train --init` run kept (lr-x0.1 or lr-x1), for runs that compared them."""
    return {r: json.loads((r / CHOICE_FILE).read_text())["chosen"] for r in init_runs if (r / CHOICE_FILE).exists()}


def unit_id_starts(init_runs: list[Path]) -> list[tuple[int, int]]:
    """(start kept, starts compared) of each new session's unit identification in `train --init` runs that
    compared several starts (finetune.json)."""
    kept = []
    for r in init_runs:
        record = json.loads((r / CHOICE_FILE).read_text()).get("unit_id", {}) if (r / CHOICE_FILE).exists() else {}
        kept += [(v["kept"], len(v["val_loss"])) for v in record.values() if len(v["val_loss"]) > 1]
    return kept


def kept_start(run_dir: Path) -> bool | None:
    """Whether a `train --init` run's model.ckpt is its starting model: start.json scored above every check."""
    run_dir = kept_run(run_dir)
    start, metrics = run_dir / "start.json", run_dir / "logs" / "metrics.csv"
    if not start.exists() or not metrics.exists():
        return None
    with open(metrics, newline="") as f:
        checks = [float(r["val_r2"]) for r in csv.DictReader(f) if r.get("val_r2")]
    score = json.loads(start.read_text())["val_r2"]
    return score is not None and all(not c >= score for c in checks)


def comparison(work: Path, other: Path, trials: list[str]) -> list[str]:
    """The same study stored in another work folder (another preset): from pretrained, unit-id and scratch side
    by side, each folder's regularisation read from its pretrained runs' logs."""
    import yaml

    def reg(folder: Path) -> str:
        found = sorted(
            {regularisation(r) for r in folder.glob("pretrain-without-*/run") if (r / "logs" / "hparams.yaml").exists()}
        )
        return " / ".join(found) or "unknown"

    def checks(folder: Path) -> str:  # steps between validation checks in the 10-trial-style arms (smallest N)
        n = min(trials, key=lambda t: float("inf") if t == "all" else int(t))
        found = sorted(
            {
                int(yaml.safe_load((r / "logs" / "hparams.yaml").read_text())["train"]["steps_per_epoch"])
                for r in folder.glob(f"*/n{n}/*/run")
                if (r / "logs" / "hparams.yaml").exists()
            }
        )
        return f"validation every {', '.join(map(str, found)) or '?'} steps in its {n}-trial runs"

    lines = [
        f"The same study stored in `{other.name}` by an earlier run of this script ({reg(other)}; {checks(other)}), "
        f"beside this section's ({reg(work)}; {checks(work)}). R² on the same test splits; the pretrained models "
        "differ too:",
        "",
        "| left-out file | N trials | from pretrained, this | from pretrained, other | adapt unit-id, this | "
        "adapt unit-id, other | from scratch, this | from scratch, other |",
        "|---|---|---|---|---|---|---|---|",
    ]
    wins = {"this": [], "other": []}
    for name in MACAQUE:
        for n in trials:
            cells = []
            for arm in ("init", "unit-id", "scratch"):
                for folder in (work, other):
                    cells.append(_r2(folder / name / f"n{n}" / arm / "result.json", name))
            if all(v is None for v in cells):
                continue
            for key, (init, scratch) in (("this", (cells[0], cells[4])), ("other", (cells[1], cells[5]))):
                if init is not None and scratch is not None:
                    wins[key].append(init > scratch)
            lines.append(f"| {name} | {n} | " + " | ".join(_fmt(v) for v in cells) + " |")
    lines += [
        "",
        f"From pretrained beats scratch: this section's runs {sum(wins['this'])} of {len(wins['this'])}, "
        f"the other folder's {sum(wins['other'])} of {len(wins['other'])}.",
        "",
    ]
    return lines


def best_baseline(folder: Path, name: str) -> float | None:
    """The best test R² of the three baselines stored in an arm folder (None: none run)."""
    known = [v for v in (_r2(folder / f"{m}.json", name) for m in BASELINES) if v is not None]
    return max(known) if known else None


def draws_table(work: Path, trials: list[str], seeds: list[int]) -> list[str]:
    """From pretrained and from scratch on every trial draw, and their means: the verdict that one draw's noise
    cannot flip (on chewie 2013-10-03 with 50 trials, two runs of equal validation R² scored 0.72 and 0.82)."""
    lines = [
        f"Every trial draw (seeds {', '.join(map(str, seeds))}: each draws its own N trials; the pretrained "
        "model is the same), and the mean over the draws that ran both arms:",
        "",
        "| left-out file | N trials | from pretrained, per draw | from scratch, per draw | best baseline, per draw "
        "| from pretrained, mean | from scratch, mean | best baseline, mean | draws won | mean init - scratch "
        "(± its standard error) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    wins: dict[str, list[bool]] = {}
    unresolved: list[str] = []  # cells whose mean difference is within two standard errors of zero
    for name in MACAQUE:
        for n in trials:
            folders = [arm_folder(work, name, n, s) for s in seeds]
            rows = [
                (
                    _r2(f / "init" / "result.json", name),
                    _r2(f / "scratch" / "result.json", name),
                    best_baseline(f, name),
                )
                for f in folders
            ]
            both = [(i, c, b) for i, c, b in rows if i is not None and c is not None]
            if not both:
                continue
            mean = [sum(r[k] for r in both) / len(both) for k in (0, 1)]
            bases = [b for _, _, b in both if b is not None]
            se = paired_se([i - c for i, c, _ in both])
            wins.setdefault(n, []).append(mean[0] > mean[1])
            lines.append(
                f"| {name} | {n} | {' / '.join(_fmt(r[0]) for r in rows)} | {' / '.join(_fmt(r[1]) for r in rows)} "
                f"| {' / '.join(_fmt(r[2]) for r in rows)} | {_bold(mean[0], mean[0] > mean[1])} | "
                f"{_bold(mean[1], mean[1] > mean[0])} | "
                f"{_fmt(sum(bases) / len(bases) if bases else None)} | {sum(i > c for i, c, _ in both)} of "
                f"{len(both)} | {mean[0] - mean[1]:+.3f}{'' if se is None else f' ± {se:.3f}'} |"
            )
            if se is not None and abs(mean[0] - mean[1]) < 2 * se:
                unresolved.append(f"{name} with {n} trials")
    for n, got in wins.items():
        lines.append(
            f"\nWith {n} trials, over the draws, the pretrained start beats scratch on **{sum(got)} of "
            f"{len(got)}** left-out files (mean test R²)."
        )
    if unresolved:
        lines.append(
            f"\nWithin two standard errors of zero (the draws cannot tell the arms apart): {', '.join(unresolved)}."
        )
    return lines


def _bold(value: float, bold: bool) -> str:
    return f"**{value:.3f}**" if bold else f"{value:.3f}"


def paired_se(diffs: list[float]) -> float | None:
    """The standard error of the mean of per-draw differences (sample sd / sqrt(k)); None under two draws."""
    return statistics.stdev(diffs) / len(diffs) ** 0.5 if len(diffs) >= 2 else None


SLOW_CM_S = 5.0  # hand speed below which a sample counts as slow (the release filtered two files at this speed)


def slow_shares(work: Path) -> str:
    """A sentence: each macaque file's share of hand-velocity samples slower than SLOW_CM_S (prepared files in WORK)."""
    import numpy as np

    from spiketok.data.storage import read_session

    shares = []
    for name in MACAQUE:
        path = work / "prepared" / f"{name}.h5"
        if path.exists():
            v = read_session(path).behavior("hand_velocity").values
            shares.append(f"{name} {np.mean(np.linalg.norm(v.reshape(len(v), -1), axis=1) < SLOW_CM_S):.0%}")
    return (
        (
            f"Share of hand-velocity samples slower than {SLOW_CM_S:g} cm/s: {', '.join(shares)}. A file's pretrained "
            "model has seen only the other two files' samples."
        )
        if shares
        else ""
    )


def write_doc(
    work: Path,
    trials: list[str],
    seeds: list[int],
    load_before: tuple,
    load_after: tuple,
    seconds: float,
    doc_only: bool = False,
    compare: Path | None = None,
) -> None:
    lines = [
        "## Transfer: training from a pretrained model against from scratch (macaque, leave one file out)",
        "",
        "For each macaque file: a model pretrained on the other two (`spiketok train`, defaults), then "
        "`spiketok train --init PRETRAINED` on N training trials of the left-out file, against `spiketok train` "
        f"from scratch on the same N trials (drawn with seed {seeds[0]}; both with the default recipe and early "
        "stopping on the file's own valid split) and the three baselines trained on the same N trials. "
        "R² on the left-out file's test split.",
        "",
        "`spiketok adapt PRETRAINED` on the same N trials gives the unit-id column (only the new unit and "
        "session embeddings learn) and the finetune column (unit-id, then every weight).",
        "",
        "| left-out file | N trials | from pretrained (`train --init`) | adapt unit-id | adapt finetune | "
        "from scratch | ridge | GRU | MLP | init - scratch | init vs best baseline |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    wins, adapt_wins, missing = [], [], []
    for name in MACAQUE:
        for n in trials:
            folder = arm_folder(work, name, n, seeds[0])
            if not (folder / "init" / "result.json").exists():
                missing.append(f"{name} with {n} trials")
                continue
            init = _r2(folder / "init" / "result.json", name)
            scratch = _r2(folder / "scratch" / "result.json", name)
            base = {m: _r2(folder / f"{m}.json", name) for m in BASELINES}
            best = best_baseline(folder, name)
            arm = {}
            for mode in ADAPT_MODES:
                arm[mode] = _r2(folder / mode / "result.json", name)
                if arm[mode] is not None and scratch is not None:
                    adapt_wins.append((n, mode, arm[mode] > scratch))
            if scratch is not None:
                wins.append((n, init > scratch))
            lines.append(
                f"| {name} | {n} | **{init:.3f}** | {_fmt(arm['unit-id'])} | "
                f"{_fmt(arm['finetune'])} | {_fmt(scratch)} | "
                f"{_fmt(base['ridge'])} | {_fmt(base['gru'])} | "
                f"{_fmt(base['mlp'])} | {'-' if scratch is None else f'{init - scratch:+.3f}'} | "
                f"{'-' if best is None else ('above' if init > best else '**below**')} ({_fmt(best)}) |"
            )
    for n in trials:
        got = [w for k, w in wins if k == n]
        if got:
            lines.append(
                f"\nWith {n} trials, the pretrained start beats scratch on **{sum(got)} of {len(got)}** left-out files."
            )
        for mode in ADAPT_MODES:
            got = [w for k, m, w in adapt_wins if k == n and m == mode]
            if got:
                lines.append(
                    f"With {n} trials, `adapt --mode {mode}` beats scratch on **{sum(got)} of {len(got)}** "
                    "left-out files."
                )
    if len(seeds) > 1:
        lines += ["", *draws_table(work, trials, seeds)]
    slow = slow_shares(work)
    if slow:
        lines += ["", slow]
    init_runs = sorted(work.glob("*/n*/init/run"))
    chosen = lr_choices(init_runs)
    if chosen:
        full = [f"{r.parent.parent.parent.name} {r.parent.parent.name}" for r, c in chosen.items() if c == "lr-x1"]
        lines.append(
            f"\n`train --init` fine-tunes at a tenth and at the full learning rate and keeps the run with the "
            f"better validation R²: it kept the full rate in **{len(full)} of {len(chosen)}** runs"
            + (f" ({', '.join(full)})." if full else ".")
        )
    starts = unit_id_starts(init_runs)
    if starts:
        counts = "/".join(str(n) for n in sorted({n for _, n in starts}))
        lines.append(
            f"\n`train --init` runs unit identification from {counts} random starts and keeps the one with "
            f"the lowest validation loss: it kept a start other than the first in "
            f"**{sum(k > 0 for k, _ in starts)} of {len(starts)}** runs."
        )
    kept = [k for k in (kept_start(r) for r in init_runs) if k is not None]
    if kept:
        lines.append(
            f"\n`train --init` validates its starting model (the pretrained model after unit identification) "
            f"before fine-tuning and keeps it when no fine-tuning check scores higher: it kept it in "
            f"**{sum(kept)} of {len(kept)}** runs, so there the from-pretrained column is the "
            "unit-identification model."
        )
    if missing:
        lines.append(f"\nNot run yet (no result from the pretrained start): {', '.join(missing)}.")
    pre = []
    for name in MACAQUE:
        p = work / f"pretrain-without-{name}" / "result.json"
        if p.exists():
            res = json.loads(p.read_text())
            pre.append(
                f"without {name}: "
                + ", ".join(f"{sid} {r['r2']:.3f}" for sid, r in res["sessions"].items())
                + f" ({res['minutes']:.0f} min)"
            )
    lines += ["", "Pretrained models, test R² on their own sessions: " + "; ".join(pre) + ".", ""]
    trained_with: dict[str, list[str]] = {}
    arm_runs = sorted(work.glob("*/n*/*/run"))  # WORK/<file>/n<N>/<arm>/run
    for label, runs in (
        ("pretrained", sorted(work.glob("pretrain-without-*/run"))),
        ("from pretrained", [kept_run(r) for r in arm_runs if r.parent.name == "init"]),
        ("from scratch", [r for r in arm_runs if r.parent.name == "scratch"]),
    ):
        for reg in sorted({regularisation(r) for r in runs if (r / "logs" / "hparams.yaml").exists()}):
            trained_with.setdefault(reg, []).append(label)
    if trained_with:
        lines += [regularisation_note(trained_with), ""]
    if compare is not None:
        lines += comparison(work, compare, trials)
    log = work / RUN_LOG
    last = json.loads(log.read_text()) if log.exists() else {}
    if last:
        lines += [
            f"The last run of this script that trained ({last['minutes']:.0f} min) stored {last['stored']} "
            f"results (arms and baselines) and read {last['read_back']} back from WORK, where earlier runs of "
            "it had stored them (a stored result is never re-run).",
            "",
        ]
        if doc_only and "command" in last:  # (a run log written before it recorded these has no command)
            lines += [
                f"That run was `{last['command']}`; load average (1, 5, 15 min) before "
                f"{', '.join(f'{x:.1f}' for x in last['load_before'])}, after "
                f"{', '.join(f'{x:.1f}' for x in last['load_after'])}.",
                "",
            ]
    commit = last.get("commit")  # the results read back came from earlier runs, whose commits were not recorded
    if commit and last.get("read_back"):
        commit = provenance.commits_cell([commit, provenance.NOT_RECORDED])
    lines += run_table(
        seconds,
        load_before,
        load_after,
        doc_only,
        load_shown="command" in last,
        commit=commit or provenance.NOT_RECORDED,
    )
    write_section("\n".join(lines), START, END)
    print("\n".join(lines))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", nargs="*", default=["10", "50", "all"])
    ap.add_argument("--files", nargs="*", default=MACAQUE, choices=MACAQUE, help="left-out files to run")
    ap.add_argument(
        "--seeds",
        nargs="+",
        type=int,
        default=[0],
        help="trial draws: every arm runs on each; the adapt arms on the first only",
    )
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--work", type=Path, default=Path("bench-work/transfer"))
    ap.add_argument("--doc-only", action="store_true", help="write the section from the results in WORK")
    ap.add_argument(
        "--set",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        dest="settings",
        help="settings for every `spiketok train` of the study (e.g. another preset's regularisation)",
    )
    ap.add_argument(
        "--compare-work",
        type=Path,
        help="a work folder of this study run with another preset: its results are tabled beside these",
    )
    args = ap.parse_args()
    paths, load_before, t0 = begin_study(args.work, args.doc_only)
    if not args.doc_only:
        before = stored_results(args.work)
        with ThreadPoolExecutor(args.jobs) as pool:  # first every pretrained model, then the draws' arms
            list(pool.map(lambda name: pretrain(name, paths, args.work, args.settings), args.files))
            futures = [
                pool.submit(draw, name, n, seed, paths, args.work, args.settings, seed == args.seeds[0])
                for seed in args.seeds
                for n in args.trials
                for name in args.files
            ]
            for f in futures:
                f.result()
        ran = stored_results(args.work) - before
        (args.work / RUN_LOG).write_text(
            json.dumps(
                {
                    "stored": len(ran),
                    "read_back": len(before),
                    "minutes": (time.time() - t0) / 60,
                    "command": provenance.command(),
                    "load_before": load_before,
                    "commit": provenance.start_commit(),
                    "load_after": os.getloadavg(),
                }
            )
        )
    write_doc(
        args.work,
        args.trials,
        args.seeds,
        load_before,
        os.getloadavg(),
        time.time() - t0,
        args.doc_only,
        args.compare_work,
    )


if __name__ == "__main__":
    main()
