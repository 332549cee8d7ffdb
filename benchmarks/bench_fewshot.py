"""Few-shot adaptation to a held-out session: unit-id, finetune and scratch R² against the number of trials.

--simulated: pretrain a tiny model on 8 simulated sessions (3 animals), adapt to a 9th.
--real:      pretrain a tiny model on the two Chewie sessions (../shared/data), adapt to Mihi.

Each mode prepares (or simulates) its sessions and pretrains once into --work (reused on later runs),
runs the study (spiketok.adapt.few_shot_study), prints the table, writes CSV and PNG into --work, and
replaces its part of the `fewshot` section of docs/benchmarks.md.

    python benchmarks/bench_fewshot.py --simulated --pretrain-steps 600 --pretrain-batch 16
    python benchmarks/bench_fewshot.py --real --pretrain-steps 500 --pretrain-minutes 12 [--trials 1,2,5,10] [--seeds 3]
    python benchmarks/bench_fewshot.py --simulated --quick [--doc PATH]     # a smoke run: benchmarks/out/quick.md

The exact command of each recorded run is in its part of docs/benchmarks.md. "unit-id beats scratch" is a
verdict per N from a paired two-sided t-test over seeds (same seed = same trials): unit-id better
(or worse) when the mean paired difference has that sign and p < 0.05, else no clear difference.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
from docsection import add_doc_args, is_smoke, page_for, smoke_work
from provenance import Load, footer

from spiketok.adapt import AdaptConfig, few_shot_study, plot_study, read_runs, summarise, write_csv
from spiketok.data.readers import ReadOptions
from spiketok.data.storage import SessionDataset, StoredSession, write_session
from spiketok.evaluate import evaluate
from spiketok.train import load, load_config, train

ROOT = Path(__file__).resolve().parents[1]
REAL_DATA = ROOT.parent / "shared" / "data"
START, END = "<!-- fewshot:start -->", "<!-- fewshot:end -->"
CHEWIE = ("m1_chewie_2013-10-03.nwb", "m1_chewie_2013-12-19.nwb")
MIHI = "m1_mihi_2014-03-03.nwb"
SIM = dict(n_animals=3, sessions_per_animal=3, n_units=(40, 60), duration=240.0, seed=0, task="center_out")
SIM_HELD_OUT = "sim_a2_s2"


def part_markers(kind: str) -> tuple[str, str]:
    """The markers of one part (`real` or `simulated`) inside the fewshot section."""
    return f"<!-- fewshot:{kind}:start -->", f"<!-- fewshot:{kind}:end -->"


def quiet() -> None:
    warnings.filterwarnings("ignore")
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)


def prepare_real(data_dir: Path, out: Path) -> tuple[list[Path], Path]:
    """The three macaque files as prepared sessions (hand_velocity, trial splits): Chewie x2, Mihi."""
    from spiketok.data.nwb import read_nwb

    paths = []
    for name in (*CHEWIE, MIHI):
        src, dst = data_dir / name, out / f"{Path(name).stem}.h5"
        if not src.exists():
            sys.exit(f"error: {src} is absent; --real needs the shared recordings (or pass --data DIR)")
        if not dst.exists():
            session, _ = read_nwb(src, ReadOptions(behavior=["hand_velocity"]))
            write_session(session, dst)
        paths.append(dst)
    return paths[:2], paths[2]


def prepare_simulated(out: Path) -> tuple[list[Path], Path]:
    """Simulated sessions: every one but SIM_HELD_OUT for pretraining, that one to adapt to."""
    from spiketok.data.simulate import simulate_to_folder

    if not (out / f"{SIM_HELD_OUT}.h5").exists():
        simulate_to_folder(out, **SIM)
    paths = sorted(out.glob("sim_*.h5"))
    return [p for p in paths if p.stem != SIM_HELD_OUT], out / f"{SIM_HELD_OUT}.h5"


def pretrain(paths: list[Path], run_dir: Path, overrides: list[str], retrain: bool) -> tuple[Path, dict, float]:
    """Train (or reuse) the pretrained tiny model; its test R² on the pretraining sessions."""
    ckpt = run_dir / "model.ckpt"
    info_path = run_dir / "pretrain_info.json"
    if retrain and run_dir.exists():
        shutil.rmtree(run_dir)
    if not ckpt.exists():
        cfg = load_config("tiny", overrides)
        print(f"pretraining on {len(paths)} sessions: {' '.join(overrides)}", flush=True)
        result = train(SessionDataset(paths), cfg, run_dir, progress=True)
        results, _ = evaluate(load(result.checkpoint), SessionDataset(paths), "test", progress=False)
        info_path.write_text(
            json.dumps(
                {"steps": result.steps, "minutes": result.seconds / 60, "overrides": overrides, "results": results},
                indent=2,
            )
        )
    info = json.loads(info_path.read_text())
    return ckpt, info, info["minutes"]


ALPHA = 0.05  # significance level of the paired test


def paired_test(runs: list, a: str, b: str, n: int) -> dict | None:
    """Mode `a` against mode `b` at N trials, paired by seed: mean ± sd of the differences, paired t-test p."""
    from scipy.stats import ttest_rel

    r2 = {(r.mode, r.seed): r.r2 for r in runs if r.n_trials == n}
    seeds = sorted(s for m, s in r2 if m == a and (b, s) in r2)
    if not seeds:
        return None
    d = np.array([r2[(a, s)] - r2[(b, s)] for s in seeds])
    p = (
        float(ttest_rel([r2[(a, s)] for s in seeds], [r2[(b, s)] for s in seeds]).pvalue)
        if len(seeds) > 1 and np.ptp(d) > 0
        else float("nan")
    )
    verdict = ("better" if d.mean() > 0 else "worse") if np.isfinite(p) and p < ALPHA else "no clear difference"
    return {
        "n": n,
        "seeds": len(seeds),
        "mean": float(d.mean()),
        "sd": float(d.std(ddof=1)) if len(d) > 1 else 0.0,
        "p": p,
        "verdict": verdict,
    }


def fmt_p(p: float) -> str:
    return "-" if not np.isfinite(p) else f"{p:.3f}"


def section_text(
    kind: str,
    args: argparse.Namespace,
    info: dict,
    held_out: StoredSession,
    runs: list,
    cfg: AdaptConfig,
    machine_load: Load,
) -> str:
    """Markdown for one part (real or simulated) of the fewshot section."""
    summary = summarise(runs)
    modes = list(dict.fromkeys(r["mode"] for r in summary))
    ns = sorted({r["n_trials"] for r in summary})
    cell = {(r["mode"], r["n_trials"]): r for r in summary}
    lines = ["| N trials | " + " | ".join(modes) + " |", "|---:|" + "---:|" * len(modes)]
    for n in ns:
        row = []
        for m in modes:
            r = cell.get((m, n))
            row.append(
                "" if r is None else f"{r['r2_mean']:.3f} ± {r['r2_std']:.3f} ({r['r2_min']:.2f} to {r['r2_max']:.2f})"
            )
        lines.append(f"| {n} | " + " | ".join(row) + " |")
    tests = [t for t in (paired_test(runs, "unit-id", "scratch", n) for n in ns) if t is not None]
    test_lines = [
        "| N trials | seeds | unit-id - scratch (mean ± sd over seeds) | paired t-test p | unit-id vs scratch |",
        "|---:|---:|---:|---:|---|",
    ]
    test_lines += [
        f"| {t['n']} | {t['seeds']} | {t['mean']:+.3f} ± {t['sd']:.3f} | {fmt_p(t['p'])} | {t['verdict']} |"
        for t in tests
    ]
    better = [str(t["n"]) for t in tests if t["verdict"] == "better"]
    worse = [str(t["n"]) for t in tests if t["verdict"] == "worse"]
    pre = info["results"]["sessions"]
    pre_r2 = ", ".join(f"{sid} {r['r2']:.3f}" for sid, r in pre.items())
    title = (
        "Real macaque M1: pretrain on two Chewie sessions, adapt to Mihi"
        if kind == "real"
        else "Simulated: pretrain on 8 sessions of 3 animals, adapt to a 9th"
    )
    return f"""
<!-- fewshot:{kind}:start -->
### {title}

R² (mean over dimensions) on `{held_out.id}`'s test split ({len(held_out.splits["test"])} trials) after adapting with
N trials of its training split; mean ± standard deviation over {args.seeds} seeds (min to max). Seed s draws the N
trials at random (every mode of one seed sees the same trials) and seeds initialisation and windows.

{chr(10).join(lines)}

unit-id against scratch, paired by seed (two-sided paired t-test, significance level {ALPHA}):

{chr(10).join(test_lines)}

unit-id beats scratch at N = {", ".join(better) or "none"}; is worse at N = {", ".join(worse) or "none"}
(of {", ".join(map(str, ns))}; other N: no clear difference at {args.seeds} seeds).

| | |
|---|---|
| pretraining | tiny model, {info["steps"]} steps in {info["minutes"]:.1f} min (`{" ".join(info["overrides"])}`) |
| pretrained test R² | {pre_r2} |
| adaptation | N >= {cfg.min_valid_trials}: early stopping on the last 20% of the N trials (checked every {
        cfg.eval_every
    } steps, patience {cfg.patience}, at most {cfg.max_steps} steps per stage); N < {
        cfg.min_valid_trials
    }: nothing held out, {cfg.fixed_steps} steps per stage on all N; batch {
        cfg.batch_size
    }; no unit dropout; unit-id: AdamW lr {cfg.lr_unit_id:g} on the new rows only; finetune: then every weight
at the pretraining lr / 10; scratch: pretraining lr |
| normalisation | the N trials' mean and std of the target, shrunk toward the pretrained sessions' (which count as {
        cfg.norm_prior_seconds:g} s of data); the same statistics for all three modes |
| adaptation time | {sum(r.seconds for r in runs) / 60:.1f} min of training for {
        len(runs)
    } runs (test decoding not counted) |
{
        footer(
            machine_load,
            ("torch", "lightning", "numpy", "scipy", "spiketok"),
            f"torch on {args.threads} thread(s)",
            timing=False,
            argv=args.argv,
        ).split(chr(10), 2)[2]
    }
<!-- fewshot:{kind}:end -->
"""


def write_doc(part: str, kind: str, doc: Path) -> None:
    """Replace this kind's part inside the fewshot section (creating the section if needed); a part that records
    a smoke command goes to benchmarks/out/quick.md instead of the page."""
    doc = page_for(doc, is_smoke(part))
    inner_start, inner_end = part_markers(kind)
    text = doc.read_text() if doc.exists() else "# Benchmarks\n"
    if START not in text or END not in text:
        header = (
            "## Few-shot adaptation to a new session\n\n"
            "`spiketok fewshot`: unit identification (only the new session's unit and session embeddings "
            "learn), fine-tuning (unit-id, then every weight at a tenth of the learning rate) and a fresh "
            "model of the same size trained from scratch on the same N trials.\n"
        )
        text = text.rstrip("\n") + f"\n\n{START}\n{header}{END}\n"
    head, rest = text.split(START, 1)
    body, tail = rest.split(END, 1)
    if inner_start in body and inner_end in body:
        before, after = body.split(inner_start, 1)
        body = before + part.strip() + after.split(inner_end, 1)[1]
    else:
        body = body.rstrip("\n") + "\n\n" + part.strip() + "\n"
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text(head + START + body + END + tail)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    kind = p.add_mutually_exclusive_group(required=True)
    kind.add_argument("--real", action="store_true", help="Chewie x2 -> Mihi (needs ../shared/data)")
    kind.add_argument("--simulated", action="store_true", help="simulated sessions")
    p.add_argument("--trials", default="1,2,5,10,20,50")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--pretrain-minutes", type=float, default=15.0, help="wall-clock budget of the pretraining")
    p.add_argument("--pretrain-steps", type=int, default=1000, help="pretraining steps (the lr schedule's length)")
    p.add_argument("--pretrain-batch", type=int, default=32)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 is fastest on a shared 2-core box)")
    p.add_argument("--data", type=Path, default=REAL_DATA)
    p.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "spiketok-bench-fewshot")
    p.add_argument("--retrain", action="store_true", help="pretrain again even when a checkpoint is cached")
    p.add_argument(
        "--quick",
        action="store_true",
        help="20 pretraining steps, N = 1,2, 2 seeds, 5 adaptation steps per stage (a smoke run)",
    )
    p.add_argument("--no-doc", action="store_true", help="print only; leave the page alone")
    add_doc_args(p)
    p.add_argument("--doc-only", action="store_true", help="rewrite the doc part from the cached results only")
    p.add_argument("settings", nargs="*", help="key=value adaptation settings (spiketok.adapt.AdaptConfig)")
    args = p.parse_args()
    if args.quick:
        args.pretrain_steps, args.pretrain_minutes, args.trials, args.seeds = 20, 1.0, "1,2", 2
        args.settings = ["fixed_steps=5", "max_steps=5", "scratch_max_steps=5", *args.settings]
    args.doc, args.work = page_for(args.doc, args.quick), smoke_work(args.work, args.quick)
    quiet()
    torch.set_num_threads(args.threads)
    kind = "real" if args.real else "simulated"
    work = args.work / kind
    if args.real:
        pre_paths, held_path = prepare_real(args.data, work / "prepared")
    else:
        pre_paths, held_path = prepare_simulated(work / "sessions")
    overrides = [
        "target=hand_velocity",
        f"max_steps={args.pretrain_steps}",
        f"max_minutes={args.pretrain_minutes}",
        "steps_per_epoch=100",
    ] + ([f"batch_size={args.pretrain_batch}"] if args.pretrain_batch != 32 else [])
    prov = work / "fewshot" / "provenance.json"  # the study's command and load, for --doc-only
    if args.doc_only:
        info = json.loads((work / "pretrain" / "pretrain_info.json").read_text())
        runs = read_runs(work / "fewshot" / "fewshot_runs.csv")
        stored = json.loads(prov.read_text())
        args.argv, args.settings, args.seeds = stored["argv"], stored["settings"], stored["seeds"]
        cfg = AdaptConfig.from_overrides(args.settings)
        write_doc(
            section_text(kind, args, info, StoredSession(held_path), runs, cfg, Load.from_dict(stored["load"])),
            kind,
            args.doc,
        )
        print(f"rewrote the fewshot ({kind}) part of {args.doc} from {work / 'fewshot' / 'fewshot_runs.csv'}")
        return
    machine_load = Load()
    args.argv = None  # this run's own sys.argv
    ckpt, info, _ = pretrain(pre_paths, work / "pretrain", overrides, args.retrain)
    print(
        f"pretrained: {info['steps']} steps, {info['minutes']:.1f} min; test R² "
        + ", ".join(f"{k} {v['r2']:.3f}" for k, v in info["results"]["sessions"].items()),
        flush=True,
    )
    model = load(ckpt)
    held_out = StoredSession(held_path)
    cfg = AdaptConfig.from_overrides(args.settings)
    trials = [int(v) for v in args.trials.split(",")]
    out = work / "fewshot"
    done: list = []

    def progress(run) -> None:
        done.append(run)
        write_csv(done, out)
        print(
            f"  {run.mode:8s} N={run.n_trials:3d} seed={run.seed}  R²={run.r2:.3f}  "
            f"({run.steps} steps, {run.seconds:.0f} s)",
            flush=True,
        )

    runs = few_shot_study(model, held_out, trials, args.seeds, config=cfg, on_run=progress)
    write_csv(runs, out)
    machine_load.stop()
    prov.write_text(
        json.dumps({"argv": sys.argv, "settings": args.settings, "seeds": args.seeds, "load": machine_load.as_dict()})
    )
    png = plot_study(runs, out / "fewshot.png", title=f"few-shot adaptation to {held_out.id}")
    part = section_text(kind, args, info, held_out, runs, cfg, machine_load)
    print(part)
    print(f"CSV and plot in {out} ({png.name})")
    if not args.no_doc:
        write_doc(part, kind, args.doc)
        print(f"wrote the fewshot ({kind}) part of {args.doc}")


if __name__ == "__main__":
    main()
