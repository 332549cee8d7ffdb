"""The recurrent model (possm-tiny, possm-1.3M) against causal POYO (tiny, poyo-1.3M), side by side (issue 34).

    python benchmarks/bench_recurrent.py [--part all|accuracy|latency|doc] [--files NAME ...] [--jobs 2]
        [--recipe-work bench-work/recipe] [--work DIR] [--repeats 3] [--stream 60] [--quick] [--doc PATH]
        [--allow-load]

Accuracy (`--part accuracy`): each shared recording but the sealed one is prepared as bench_recipe prepares it
and trained with the default command plus only the arm's setting (ARMS), scored with `spiketok evaluate` on its
test split beside the best of `spiketok baseline --model ridge|gru|mlp` (read from bench_recipe's WORK/NAME/seed-0
when --recipe-work holds them, else run). Training speed: steps over wall seconds (see `train_speed`).
Latency (`--part latency`, a timing part: refused on a loaded machine unless --allow-load): random weights on
bench_streaming's simulated session (200 units at ~20 Hz), one thread: one 1 s window (tokenize + forward) and a
stream (a 20 ms packet, then a decode, every 20 ms), in PyTorch and onnxruntime. `--part all` runs the latency
part first, while the machine is idle. Every step stores its JSON in WORK (an interrupted run continues); the
section is written from them.
Duration of the full run on this 2-core CPU, estimated, not measured: the smoke run's main-run rates (loaded
machine, batches of 64 half-second windows of the smallest file: tiny 4.5, possm-tiny 5.3, poyo-1.3M 0.9,
possm-1.3M 1.8 steps/s) against the recipe's 1,000-10,000 steps (early stopping often ends sooner) plus the window
pilots (4 x 15% of the steps) give per file about 0.2-1 h for each tiny arm, 0.5-2 h for possm-1.3M and 1-4 h for
causal POYO 1.3M on one core: 7 files at 2 jobs, roughly 10-25 h; the baselines about 1 h more unless
--recipe-work has them; the latency part about 10 min.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import provenance
from bench_recipe import BASELINES, DATA, PREPARE, SEALED, r2_of, run, spiketok
from docsection import add_doc_args, page_for, smoke_work, write_section
from provenance import Load, load_note, refuse_if_loaded

START, END = "<!-- recurrent:start -->", "<!-- recurrent:end -->"
FILES = [f for f in PREPARE if f != SEALED]  # the sealed file is scored once, by bench_recipe
ARMS = {  # name -> the only settings added to the default command
    "causal POYO tiny": ["causal=true"],
    "possm-tiny": ["model.size=possm-tiny"],
    "causal POYO 1.3M": ["causal=true", "model.size=poyo-1.3M"],
    "possm-1.3M": ["model.size=possm-1.3M"],
}
SIZES = dict(zip(ARMS, ("tiny", "possm-tiny", "poyo-1.3M", "possm-1.3M")))  # arm -> model size
PAIRS = (("tiny", "causal POYO tiny", "possm-tiny"), ("1.3M", "causal POYO 1.3M", "possm-1.3M"))
GOAL_MS, GOAL_R2, EVERY = 1.0, 0.02, 0.02


def slug(arm: str) -> str:
    return arm.replace(" ", "-")


def train_speed(run_dir: Path) -> dict:
    """Steps done (main run, from checkpoints/last.ckpt; window pilots, from their score.json) and the main run's
    steps/s from its TensorBoard log: steps between the first and last logged training loss over the wall seconds
    between them (validation checks and checkpoints in between included; start-up and pilots not)."""
    import torch
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    last = run_dir / "checkpoints" / "last.ckpt"
    main = int(torch.load(last, map_location="cpu", weights_only=True)["global_step"]) if last.exists() else None
    pilots = sum(json.loads(p.read_text())["steps"] for p in run_dir.glob("pilots/*/score.json"))
    acc = EventAccumulator(str(run_dir / "tb"), size_guidance={"scalars": 0})
    acc.Reload()
    ev = acc.Scalars("train_loss") if "train_loss" in acc.Tags()["scalars"] else []
    rate = (ev[-1].step - ev[0].step) / (ev[-1].wall_time - ev[0].wall_time) if len(ev) > 1 else None
    return {"steps": main, "pilot_steps": pilots, "main_steps_per_s": rate}


def prepared(name: str, work: Path, recipe_work: Path | None) -> Path:
    """The prepared file: bench_recipe's (same options, same default split) when there, else prepared here."""
    if recipe_work and (recipe_work / "prepared" / f"{name}.h5").exists():
        return recipe_work / "prepared" / f"{name}.h5"
    out = work / "prepared"
    if not (out / f"{name}.h5").exists():
        out.mkdir(parents=True, exist_ok=True)
        run(spiketok("prepare", str(DATA / f"{name}.nwb"), "--out", str(out), *PREPARE[name]), work / "prepare.log")
    return out / f"{name}.h5"


def train_arm(name: str, data: Path, arm: str, work: Path, extra: list[str]) -> None:
    """Train one arm on one file with the default command plus the arm's settings, score its test split."""
    folder = work / name
    result = folder / f"{slug(arm)}.json"
    if result.exists():
        return
    folder.mkdir(parents=True, exist_ok=True)
    run_dir, log, scores = folder / slug(arm), folder / f"{slug(arm)}.log", folder / f"{slug(arm)}-eval.json"
    subprocess.run(["rm", "-rf", str(run_dir)], check=True)
    scores.unlink(missing_ok=True)
    t0 = time.monotonic()
    run(spiketok("train", "--data", str(data), "--out", str(run_dir), "--no-progress", *ARMS[arm], *extra), log)
    wall = time.monotonic() - t0
    run(spiketok("evaluate", str(run_dir / "model.ckpt"), "--data", str(data), "--json", str(scores)), log)
    settings = json.loads((run_dir / "recipe.json").read_text()).get("settings", {})
    res = {"r2": r2_of(scores, name), "wall_s": wall, "settings": settings, **train_speed(run_dir)}
    result.write_text(json.dumps({**res, "commit": provenance.start_commit()}))


def baseline(name: str, data: Path, model: str, work: Path, recipe_work: Path | None, extra: list[str]) -> None:
    """One baseline's test R² on one file (bench_recipe's seed-0 result when it has it)."""
    out = work / name / f"{model}.json"
    if out.exists() or (recipe_work and (recipe_work / name / "seed-0" / f"{model}.json").exists()):
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    cmd = spiketok("baseline", "--model", model, "--data", str(data), "--seed", "0", "--json", str(out), *extra)
    run(cmd, work / name / "baselines.log")


def best_baseline(name: str, work: Path, recipe_work: Path | None) -> tuple[float, str] | None:
    found = {}
    for m in BASELINES:
        mine, theirs = work / name / f"{m}.json", (recipe_work or work) / name / "seed-0" / f"{m}.json"
        found[m] = r2_of(mine if mine.exists() else theirs, name)
    if any(v is None for v in found.values()):
        return None
    best = max(found, key=found.get)
    return found[best], best


def accuracy(args: argparse.Namespace) -> None:
    """Every arm on every file and the baselines, side by side (`--jobs` at a time, one torch thread each)."""
    load, t0 = Load(), time.monotonic()
    extra = ["max_steps=20"] if args.quick else []
    base_extra = ["--max-steps", "20"] if args.quick else []
    paths = {f: prepared(f, args.work, args.recipe_work) for f in args.files}
    with ThreadPoolExecutor(args.jobs) as pool:
        todo = [
            pool.submit(baseline, f, paths[f], m, args.work, args.recipe_work, base_extra)
            for f in args.files
            for m in BASELINES
        ]
        todo += [pool.submit(train_arm, f, paths[f], a, args.work, extra) for a in ARMS for f in args.files]
        for t in todo:
            t.result()
    load.stop()
    part = {"files": args.files, "minutes": (time.monotonic() - t0) / 60, "command": provenance.command()}
    (args.work / "accuracy.json").write_text(json.dumps({**part, "load": load.as_dict()}))


def recurrent_model(size: str, data):
    """An untrained recurrent model of `size` (1 s window) registered with the session (latency only)."""
    import torch

    from spiketok.model import model_config
    from spiketok.model.family import new_model
    from spiketok.train.data import register_sessions

    torch.manual_seed(0)
    model = new_model(model_config({"size": size, "window": 1.0, "dropout": 0.0}))
    register_sessions(model, data, "hand_velocity")
    return model.eval()


def window_timers(model, exported, session, t0: float) -> dict:
    """Closures decoding the 1 s window [t0, t0 + 1) at its end: PyTorch (tokenize + forward + denormalise) and
    onnxruntime (POYO: tokenize + the window graph; recurrent: the step graph on the window's 20 chunks)."""
    import torch

    from spiketok.model.normalize import denormalise
    from spiketok.stream.exported_recurrent import ExportedRecurrentDecoder
    from spiketok.tokenize import collate

    tok, window = model.tokenizer(), session.slice(t0, t0 + 1.0, behavior=[])
    units = model.unit_emb.lookup(session.unit_ids).numpy()
    sess = int(model.session_emb.lookup([session.id])[0])

    def pytorch() -> None:
        batch = collate([tok(window, units, sess, 0, None, output_times=np.array([1.0]))])
        with torch.inference_mode():
            denormalise(model, model(batch), batch.output_sessions, batch.output_tasks)

    if exported.recurrent:
        dec = ExportedRecurrentDecoder(exported, session.id, unit_ids=session.unit_ids)

        def onnx() -> None:
            dec.reset(t0)
            dec.push(window.spike_units, t0 + window.spike_times)
            dec.decode(t0 + 1.0)
    else:
        rows, row = exported.unit_rows(session.unit_ids), exported.session_row(session.id)

        def onnx() -> None:
            tokens = exported.tokenize(rows[window.spike_units], window.spike_times, rows)
            exported.run(*tokens, np.array([1.0]), row)

    return {"pytorch": pytorch, "onnxruntime": onnx}


def latency_part(args: argparse.Namespace, load: Load) -> bool:
    """Single-window latency and streaming p99 of the four sizes, one thread; False when refused under load."""
    import torch
    from bench_export_latency import timed
    from bench_recurrent_latency import latency
    from bench_streaming import random_model, simulate

    from spiketok.data.session import Intervals
    from spiketok.data.storage import SessionDataset
    from spiketok.model.export import export_model
    from spiketok.stream import replay
    from spiketok.stream.exported import ExportedModel

    torch.set_num_threads(1)
    out = Path(tempfile.mkdtemp(prefix="bench_recurrent_"))
    path = simulate(out / "sim" / "bench_stream.h5", duration=args.stream + 30.0)
    data = SessionDataset(path.parent)
    session = next(iter(data))
    span = Intervals([session.start + 5.0], [session.start + 5.0 + args.stream])
    rows = {}
    for arm, size in SIZES.items():
        model = recurrent_model(size, data) if size.startswith("possm") else random_model(size, session)
        exported = ExportedModel(export_model(model, out / f"{size}.onnx", "onnx", "hand_velocity")[0], threads=1)
        timers = window_timers(model, exported, session, session.start + 5.0)
        row = {"parameters": model.n_parameters()}
        for runtime, decoder_model in (("pytorch", model), ("onnxruntime", exported)):
            row[f"window_{runtime}"] = float(np.median(timed(timers[runtime], args.window_repeats)[0]))
            replay(decoder_model, session, span, every=EVERY, limit=2.0, progress=False)  # warm-up
            runs = [
                latency(replay(decoder_model, session, span, every=EVERY, progress=False)) for _ in range(args.repeats)
            ]
            for k in ("median", "p99"):
                row[f"stream_{runtime}_{k}"] = statistics.median(r[k] for r in runs)
            row[f"stream_{runtime}_p99_runs"] = [r["p99"] for r in runs]
            print(arm, runtime, json.dumps({k: v for k, v in row.items() if runtime in k}), flush=True)
        rows[arm] = row
    load.stop()
    if not refuse_if_loaded(load, args.allow_load, args.doc):
        return False
    rate = session.n_spikes / session.duration / session.n_units
    part = {"rows": rows, "units": session.n_units, "rate_hz": rate, "decodes": int(round(args.stream / EVERY))}
    part.update(command=provenance.command(), load=load.as_dict(), repeats=args.repeats)
    (args.work / "latency.json").write_text(json.dumps(part))
    return True


def cell(v: float | None, fmt: str = "{:.3f}") -> str:
    return "-" if v is None else fmt.format(v)


def chunk_note(res: dict[str, dict[str, dict]]) -> str:
    """Whether the recurrent arms trained with their size's chunk (the latency part's) or the recipe's latent step."""
    from spiketok.model import model_config

    notes = []
    for arm in ("possm-tiny", "possm-1.3M"):
        own = model_config(SIZES[arm]).latent_step
        used = sorted({float(r["settings"].get("model.latent_step", own)) for r in res[arm].values()})
        if used and used != [own]:
            notes.append(
                f"{arm} trained with chunks of {', '.join(f'{u:g}' for u in used)} s, not its size's {own:g} s"
            )
    return (
        "**Chunk: " + "; ".join(notes) + "** (the recipe's window choice sets `model.latent_step`, the recurrent "
        "model's chunk); the latency table measures the size's chunk."
        if notes
        else "The recurrent arms trained with their size's chunk, the one the latency table measures."
    )


def accuracy_lines(work: Path, recipe_work: Path | None, files: list[str]) -> tuple[list[str], list[str], str]:
    """The accuracy and training table, the R² verdicts and the chunk note, from the stored results."""
    res = {
        a: {f: json.loads(p.read_text()) for f in files if (p := work / f / f"{slug(a)}.json").exists()} for a in ARMS
    }
    lines = ["| file | best baseline | " + " | ".join(ARMS) + " |", "|---|---|" + "---|" * len(ARMS)]
    for f in files:
        best = best_baseline(f, work, recipe_work)
        arms = [cell(res[a][f]["r2"]) if f in res[a] else "-" for a in ARMS]
        lines.append(f"| {f} | {'-' if best is None else f'{best[0]:.3f} ({best[1]})'} | " + " | ".join(arms) + " |")
    bests = [b[0] for f in files if (b := best_baseline(f, work, recipe_work))]
    done = {a: len(res[a]) == len(files) for a in ARMS}
    means = {a: statistics.mean(r["r2"] for r in res[a].values()) if done[a] else None for a in ARMS}
    base_mean = statistics.mean(bests) if len(bests) == len(files) else None
    lines.append(f"| **mean** | {cell(base_mean)} | " + " | ".join(f"**{cell(means[a])}**" for a in ARMS) + " |")

    def per_arm(label: str, fn) -> str:
        return f"| {label} | | " + " | ".join(fn(list(res[a].values())) if res[a] else "-" for a in ARMS) + " |"

    def med(values: list[float]) -> str:
        return f"{statistics.median(values):.2f}" if values else "-"

    lines += [
        per_arm(
            "steps/s, main run (median over files)",
            lambda rs: med([r["main_steps_per_s"] for r in rs if r["main_steps_per_s"]]),
        ),
        per_arm(
            "steps/s, whole command (median)",
            lambda rs: med([(r["steps"] + r["pilot_steps"]) / r["wall_s"] for r in rs if r["steps"]]),
        ),
        per_arm("training minutes (sum)", lambda rs: f"{sum(r['wall_s'] for r in rs) / 60:.0f}"),
        per_arm(
            "windows chosen", lambda rs: ", ".join(sorted({str(r["settings"].get("model.window", "-")) for r in rs}))
        ),
        per_arm(
            "latent step / chunk (s)",
            lambda rs: ", ".join(sorted({str(r["settings"].get("model.latent_step", "size's")) for r in rs})),
        ),
    ]
    verdicts = []
    for size, poyo, possm in PAIRS:
        if means[poyo] is None or means[possm] is None:
            verdicts.append(f"{size}: not every file has run yet")
            continue
        ok = abs(means[possm] - means[poyo]) <= GOAL_R2
        verdicts.append(
            f"at {size}, {possm}'s mean test R² {means[possm]:.3f} against causal POYO's {means[poyo]:.3f} "
            f"({means[possm] - means[poyo]:+.3f}): within {GOAL_R2} **{'met' if ok else 'missed'}**"
        )
    return lines, verdicts, chunk_note(res)


def latency_lines(part: dict) -> tuple[list[str], list[str]]:
    rows = part["rows"]
    lines = ["| one thread | " + " | ".join(ARMS) + " |", "|---|" + "---|" * len(ARMS)]
    spec = [("parameters (200 units)", "parameters", "{:,}")]
    for rt, name in (("pytorch", "PyTorch"), ("onnxruntime", "onnxruntime")):
        spec += [(f"one 1 s window, {name} (median ms)", f"window_{rt}", "{:.2f}")]
        spec += [(f"stream median, {name} (ms)", f"stream_{rt}_median", "{:.3f}")]
        spec += [(f"**stream p99, {name} (ms)**", f"stream_{rt}_p99", "**{:.3f}**")]
    lines += [f"| {label} | " + " | ".join(fmt.format(rows[a][key]) for a in ARMS) + " |" for label, key, fmt in spec]
    verdicts = [
        f"possm-1.3M streams with p99 under {GOAL_MS:g} ms in {name}: "
        f"**{'met' if rows['possm-1.3M'][f'stream_{rt}_p99'] < GOAL_MS else 'missed'}** "
        f"({rows['possm-1.3M'][f'stream_{rt}_p99']:.3f} ms)"
        for rt, name in (("pytorch", "PyTorch"), ("onnxruntime", "onnxruntime"))
    ]
    return lines, verdicts


def write_doc(args: argparse.Namespace) -> None:
    """The section, from whatever WORK holds: a part not run yet says so."""
    w = args.work
    acc_part = json.loads((w / "accuracy.json").read_text()) if (w / "accuracy.json").exists() else None
    lat_part = json.loads((w / "latency.json").read_text()) if (w / "latency.json").exists() else None
    files = acc_part["files"] if acc_part else args.files
    commits = [
        json.loads(p.read_text())["commit"] for f in files for a in ARMS if (p := w / f / f"{slug(a)}.json").exists()
    ]
    commits += [lat_part["load"]["commit"]] if lat_part else []
    settings = "; ".join(f"{a}: `{' '.join(s)}`" for a, s in ARMS.items())
    lines = [
        "## Recurrent against causal POYO",
        "",
        "Accuracy: each shared recording prepared as in the default-recipe section (same options, same default "
        "split) and trained with the default command (`spiketok train --data FILE --out RUN`) plus only the arm's "
        f"settings ({settings}); test R² by `spiketok evaluate`, beside the best of `spiketok baseline --model "
        f"ridge|gru|mlp --seed 0` on the same split (their input window, causal or centred, chosen on valid). "
        f"`{SEALED}` is left out: it is scored once, by the default-recipe section. Training speed: 'main run' is "
        "the steps between the first and last logged training loss over the wall seconds between them (TensorBoard "
        "log; validation checks and checkpoints included, start-up and window pilots not); 'whole command' is every "
        "step (window pilots included) over the wall seconds of the whole `spiketok train` command (start-up, data "
        "loading, pilots, validation). One torch thread per job.",
        "",
    ]
    if acc_part:
        table, r2_verdicts, note = accuracy_lines(w, args.recipe_work, files)
        lines += table + [
            "",
            "Goal (mean test R² within 0.02 of causal POYO at the same size): " + "; ".join(r2_verdicts) + ".",
            "",
            note,
            "",
        ]
    else:
        lines += ["Accuracy part not run yet (`python benchmarks/bench_recurrent.py --part accuracy`).", ""]
    if lat_part:
        table, ms_verdicts = latency_lines(lat_part)
        lines += [
            f"Latency, random weights (latency does not depend on them), 1 s window, one thread (PyTorch "
            f"`set_num_threads(1)`, onnxruntime 1 thread): a simulated session of {lat_part['units']} units at "
            f"{lat_part['rate_hz']:.1f} Hz. One window: the 1 s window's tokenize + forward, decoded at its end "
            "(median over repeats; the recurrent export in onnxruntime runs its step graph on the window's 20 chunks "
            f"from the initial state). Stream: `spiketok.stream.replay`, a 20 ms packet then a decode every 20 ms "
            f"({lat_part['decodes']:,} decodes), push + decode; each figure the median over {lat_part['repeats']} "
            "runs (every run's p99 in WORK/latency.json). Causal POYO streams whole windows (`StreamingDecoder`, "
            "its export through the streaming graphs); the recurrent model runs a 50 ms chunk when one ends.",
            "",
            *table,
            "",
            "Goal: " + "; ".join(ms_verdicts) + ".",
            "",
        ]
    else:
        lines += ["Latency part not run yet (`python benchmarks/bench_recurrent.py --part latency`).", ""]
    lines += [
        "| | |",
        "|---|---|",
        f"| date | {time.strftime('%Y-%m-%d')} |",
        f"| machine | {provenance.machine()} |",
        f"| versions | {provenance.versions('torch', 'onnxruntime', 'numpy', 'spiketok')} |",
        f"| commit | {provenance.commits_cell(commits)} |",
    ]
    for name, part, timing in (("accuracy", acc_part, False), ("latency", lat_part, True)):
        if part:
            minutes = f" ({part['minutes']:.0f} min)" if "minutes" in part else ""
            load = load_note(Load.from_dict(part["load"]), timing)
            lines.append(f"| {name} part | `{part['command']}`{minutes}; {load} |")
    write_section("\n".join(lines), START, END, args.doc)
    print("\n".join(lines))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--part", choices=["all", "accuracy", "latency", "doc"], default="all", help="doc: write from WORK")
    ap.add_argument("--files", nargs="*", default=FILES, help=f"files (default all but {SEALED})")
    ap.add_argument("--jobs", type=int, default=2, help="trainings and baselines side by side, one thread each")
    ap.add_argument("--recipe-work", type=Path, default=None, help="bench_recipe's WORK: its prepared files, baselines")
    ap.add_argument("--work", type=Path, default=Path("bench-work/recurrent"))
    ap.add_argument("--repeats", type=int, default=3, help="streaming runs per model and runtime (median reported)")
    ap.add_argument("--window-repeats", type=int, default=200, help="timed single-window decodes")
    ap.add_argument("--stream", type=float, default=60.0, help="seconds of stream replayed per run")
    ap.add_argument("--quick", action="store_true", help="smoke run: one small file, 20 steps, 5 s stream once")
    add_doc_args(ap, timing=True)
    args = ap.parse_args()
    if set(args.files) - set(FILES):
        sys.exit(f"unknown files {sorted(set(args.files) - set(FILES))}; choose from {FILES}")
    if args.quick:
        args.files, args.repeats, args.window_repeats, args.stream = ["m1_chewie_2016-10-11"], 1, 20, 5.0
    args.doc, args.work = page_for(args.doc, args.quick), smoke_work(args.work, args.quick)
    args.work.mkdir(parents=True, exist_ok=True)
    provenance.start_commit()
    if args.part in ("all", "latency"):
        load = Load()
        if not refuse_if_loaded(load, args.allow_load, args.doc) or not latency_part(args, load):
            sys.exit(3)
    if args.part in ("all", "accuracy"):
        if not DATA.exists():
            sys.exit(f"no {DATA}: the real recordings are not here")
        accuracy(args)
    write_doc(args)


if __name__ == "__main__":
    main()
