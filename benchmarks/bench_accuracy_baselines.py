"""Accuracy of the baselines (ridge, GRU, MLP) and of spiketok on every real recording and the simulator.

For every file in ../shared/data (prepared with `spiketok prepare`; the rat files also with
--keep-moving 5) and for simulated sessions, scores on each session's test split (R², mean over
dimensions, as `spiketok evaluate` does):

- `baselines`: ridge, GRU and MLP trained per session (`spiketok.evaluate.baselines`);
- `single`:    spiketok trained on that one session;
- `multi`:     spiketok trained on all sessions of a kind together (the three macaque sessions; the
               simulated sessions);

and writes the table into docs/benchmarks.md (section `baselines`) beside the floors of
shared/data/README.md. spiketok training is CPU heavy: budget it with --steps/--minutes, skip it
with --skip-spiketok, or read results of runs made elsewhere (`spiketok evaluate --json`) with
--spiketok-json single=PATH / multi=PATH (repeatable; sessions are matched by id, and a file
prepared with --keep-moving gives the "moving" rows when its name contains "moving"). Results are
kept in WORK/results.json, so sections can be run one at a time and the table is built from all.

    python benchmarks/bench_accuracy_baselines.py [--sections baselines,single,multi] [--skip-spiketok]
        [--steps 1500] [--minutes 15] [--bin 0.02] [--spiketok-json multi=runs/macaque.json] [--quick] [--no-doc]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import shutil
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

import numpy as np

from spiketok.data.storage import SessionDataset, write_session
from docsection import write_section

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
DOC = ROOT / "docs" / "benchmarks.md"
START, END = "<!-- baselines:start -->", "<!-- baselines:end -->"
BASELINES = ("ridge", "gru", "mlp")
# dataset variants: name -> (files, behaviour, keep_moving px, kind trained together or None)
REAL = {
    "macaque": (["m1_chewie_2013-10-03.nwb", "m1_chewie_2013-12-19.nwb", "m1_mihi_2014-03-03.nwb"], "hand_velocity", None, "macaque"),
    "rat": (["hc_linear_track.nwb", "hc_w_maze.nwb"], "led", None, None),
    "rat-moving": (["hc_linear_track.nwb", "hc_w_maze.nwb"], "led", 5.0, None),
}
README_LABELS = {  # (variant, session id) -> row label in shared/data/README.md's floors table
    ("macaque", "m1_chewie_2013-10-03"): "Chewie 2013-10-03", ("macaque", "m1_chewie_2013-12-19"): "Chewie 2013-12-19",
    ("macaque", "m1_mihi_2014-03-03"): "Mihi 2014-03-03",
    ("rat", "hc_linear_track"): "linear track, whole session", ("rat-moving", "hc_linear_track"): "linear track, moving samples only",
    ("rat", "hc_w_maze"): "W-maze, whole session", ("rat-moving", "hc_w_maze"): "W-maze, moving samples only",
}


def readme_floors(readme: Path = SHARED / "README.md") -> dict[str, tuple[float, float, float]]:
    """The floors table of shared/data/README.md: row label -> (ridge, GRU, MLP)."""
    if not readme.exists():
        return {}
    floors = {}
    for line in readme.read_text().splitlines():
        m = re.match(r"\|\s*([^|]+?)\s*\|\s*[^|]+\|\s*([\d.]+)\s*\|\s*([\d.]+)\s*\|\s*([\d.]+)\s*\|", line)
        if m:
            floors[m.group(1)] = tuple(float(m.group(i)) for i in (2, 3, 4))
    return floors


def prepare(work: Path, quick: bool) -> dict[str, Path]:
    """Prepared folders per dataset variant (real files that exist, and the simulator)."""
    from spiketok.data.nwb import read_nwb
    from spiketok.data.simulate import simulate_to_folder

    folders = {}
    for variant, (files, behavior, moving, _) in REAL.items():
        present = [SHARED / f for f in files if (SHARED / f).exists()]
        if not present:
            print(f"skipping {variant}: no files in {SHARED}", flush=True)
            continue
        out = work / "prepared" / variant
        for path in present:
            target = out / f"{path.stem}.h5"
            if not target.exists():
                session, _ = read_nwb(path, behavior=[behavior], keep_moving=moving)
                write_session(session, target)
        folders[variant] = out
    sim = work / "prepared" / "simulator"
    if not list(sim.glob("*.h5")):
        simulate_to_folder(sim, n_animals=2, sessions_per_animal=2, n_units=(80, 100),
                           duration=120.0 if quick else 240.0, seed=0, task="mixed")
    folders["simulator"] = sim
    return folders


def run_baselines(folders: dict[str, Path], args, results: dict) -> None:
    from spiketok.evaluate.baselines import BaselineConfig, run_baseline

    for variant, folder in folders.items():
        for model in BASELINES:
            t = time.perf_counter()
            cfg = BaselineConfig(model=model, bin=args.bin, max_steps=args.baseline_steps)
            res, _ = run_baseline(SessionDataset(folder), cfg, target="hand_velocity,led")
            for sid, r in res["sessions"].items():
                results.setdefault(variant, {}).setdefault(sid, {})[model] = {"r2": r["r2"], "fit": r["fit"],
                                                                              "n_samples": r["n_samples"]}
            print(f"{variant} {model}: mean R² {res['mean_r2']:.3f} ({time.perf_counter() - t:.0f} s)", flush=True)
            results["_meta"].setdefault("baseline_config", {k: v for k, v in res["config"].items() if k != "model"})
            save(args.work, results)


def train_and_evaluate(folder: Path | list[Path], run_dir: Path, args) -> dict:
    """Train spiketok (budget from args) on the sessions given and evaluate each on its test split."""
    import spiketok
    from spiketok.evaluate import evaluate
    from spiketok.train.config import load_config
    from spiketok.train.run import train

    if run_dir.exists():
        shutil.rmtree(run_dir)  # this benchmark's own run folder, from an earlier run
    overrides = ["target=hand_velocity,led", f"max_steps={args.steps}"]
    if args.minutes:
        overrides.append(f"max_minutes={args.minutes}")
    data = SessionDataset(folder)
    result = train(data, load_config(args.config, overrides), run_dir, progress=True)
    results, _ = evaluate(spiketok.load(result.checkpoint), data, "test", progress=False)
    results["train"] = {"steps": result.steps, "minutes": result.seconds / 60, "config": args.config}
    return results


def run_spiketok(folders: dict[str, Path], args, column: str, results: dict) -> None:
    for variant, folder in folders.items():
        kind = REAL[variant][3] if variant in REAL else "simulator"
        if column == "multi" and kind is None:
            continue
        groups = [(f"{variant}-all", sorted(folder.glob("*.h5")))] if column == "multi" else \
            [(f"{variant}-{p.stem}", [p]) for p in sorted(folder.glob("*.h5"))]
        for name, files in groups:
            t = time.perf_counter()
            res = train_and_evaluate(files, args.work / "runs" / name, args)
            for sid, r in res["sessions"].items():
                results.setdefault(variant, {}).setdefault(sid, {})[column] = {
                    "r2": r["r2"], "steps": res["train"]["steps"], "minutes": res["train"]["minutes"], "source": "trained here"}
            print(f"{name}: mean R² {res['mean_r2']:.3f} ({(time.perf_counter() - t) / 60:.1f} min)", flush=True)
            save(args.work, results)


def read_spiketok_json(specs: list[str], folders: dict[str, Path], results: dict) -> None:
    """Fill the `single`/`multi` columns from `spiketok evaluate --json` files (sessions matched by id)."""
    for spec in specs:
        column, _, path = spec.partition("=")
        if column not in ("single", "multi") or not path:
            sys.exit(f"error: --spiketok-json takes single=PATH or multi=PATH, got {spec!r}")
        res = json.loads(Path(path).read_text())
        moving = "moving" in Path(path).name
        for sid, r in res["sessions"].items():
            variants = [v for v in folders if (folders[v] / f"{sid}.h5").exists()]
            variants = [v for v in variants if v.endswith("-moving") == moving] or variants
            for v in variants[:1]:
                results.setdefault(v, {}).setdefault(sid, {})[column] = {"r2": r["r2"], "source": str(path)}


def save(work: Path, results: dict) -> None:
    (work / "results.json").write_text(json.dumps(results, indent=2))


def render(results: dict, floors: dict, command: str) -> str:
    meta = results["_meta"]
    bc = meta.get("baseline_config", {})
    lines = ["## Accuracy: baselines and spiketok", "",
             "R² on each session's test split (the 3rd and 8th of ten blocks, whole trials for the macaque files), "
             "mean over output dimensions, scored by the same code as `spiketok evaluate` (behaviour samples with "
             "weight > 0). Baselines (`spiketok baseline`) are trained per session on its train split, with the "
             f"valid split for the ridge penalty and early stopping: square-rooted counts in {1e3 * bc.get('bin', 0.02):.0f} ms "
             "bins, z-scored inputs and targets, bins only inside each trial or block (never across a gap); each "
             "input window causal (spikes up to the sample) or centred on it, whichever the valid split prefers; "
             "ridge also picks its window length (0.02 to 1 s) and penalty (15 values, 0.1 to 1e6) on the valid "
             "split; MLP (2 x 256, dropout 0.2) and GRU (2 x 128, run over chunks of two windows) each trained on a "
             "causal 0.5 s window and on the window that ridge prefers, the better on the valid split kept; AdamW, "
             f"at most {bc.get('max_steps', 2000)} steps, the step with the lowest validation error kept. `floor` columns: shared/data/README.md (100 ms bins, ridge penalty "
             "picked on the test blocks). spiketok: `single` = one model per session, `multi` = one model on all "
             "sessions of a kind (the three macaque sessions; the four simulated sessions).", "",
             "| data | session | target | ridge | GRU | MLP | floor ridge / GRU / MLP | spiketok single | spiketok multi |",
             "|---|---|---|---|---|---|---|---|---|"]
    names = {"macaque": "macaque M1", "rat": "rat CA1, whole session", "rat-moving": "rat CA1, moving samples only",
             "simulator": "simulator"}
    for variant in ("macaque", "rat", "rat-moving", "simulator"):
        for sid, r in sorted(results.get(variant, {}).items()):
            def cell(key: str) -> str:
                if key not in r:
                    return "not run"
                v = f"{r[key]['r2']:.3f}"
                if key in ("single", "multi") and r[key].get("steps"):
                    v += f" ({r[key]['steps']} steps)"
                return v
            fl = floors.get(README_LABELS.get((variant, sid), ""), None)
            floor = " / ".join(f"{v:.2f}" for v in fl) if fl else "-"
            target = "hand velocity" if variant in ("macaque", "simulator") else "LED position"
            lines.append(f"| {names[variant]} | {sid} | {target} | {cell('ridge')} | {cell('gru')} | {cell('mlp')} | "
                         f"{floor} | {cell('single')} | {cell('multi')} |")
    sources = sorted({r[k]["source"] for v in results if v != "_meta" for r in results[v].values()
                      for k in ("single", "multi") if k in r and r[k].get("source") not in (None, "trained here")})
    if sources:
        lines += ["", "spiketok figures read from `spiketok evaluate --json` files (`benchmarks/bench_real_data.py` "
                  "writes them into its work folder): " + ", ".join(f"`{Path(s).name}`" for s in sources) + "."]
    if meta.get("spiketok_budget"):
        lines += ["", f"spiketok trained here: {meta['spiketok_budget']}."]
    lines += ["", "| | |", "|---|---|", f"| date | {meta['date']} |", f"| machine | {meta['machine']} |",
              f"| versions | {meta['versions']} |",
              *(f"| command {i + 1} | `{c}` |" for i, c in enumerate(meta.get("commands", [command])))]
    return "\n".join(lines)


def write_doc(section: str, doc: Path = DOC) -> None:
    """Replace this benchmark's section of docs/benchmarks.md."""
    write_section(section, START, END, doc)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sections", default="baselines,single,multi", help="comma list of baselines, single, multi")
    ap.add_argument("--skip-spiketok", action="store_true", help="same as --sections baselines")
    ap.add_argument("--spiketok-json", action="append", default=[], metavar="single|multi=PATH",
                    help="read spiketok results from `spiketok evaluate --json` output instead of training")
    ap.add_argument("--only", help="comma list of data variants: macaque, rat, rat-moving, simulator")
    ap.add_argument("--config", default="tiny", help="spiketok training config")
    ap.add_argument("--steps", type=int, default=1500, help="spiketok max_steps per training run")
    ap.add_argument("--minutes", type=float, default=15.0, help="spiketok wall-clock budget per training run")
    ap.add_argument("--bin", type=float, default=0.02, help="baseline bin width (s)")
    ap.add_argument("--baseline-steps", type=int, default=2000, help="GRU/MLP max training steps")
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "spiketok-bench-accuracy")
    ap.add_argument("--fresh", action="store_true", help="forget the results kept in WORK/results.json")
    ap.add_argument("--quick", action="store_true", help="shorter simulated sessions and training (a smoke run)")
    ap.add_argument("--no-doc", action="store_true")
    args = ap.parse_args()
    if args.quick:
        args.steps, args.minutes, args.baseline_steps = min(args.steps, 200), min(args.minutes, 3.0), 300
    args.work.mkdir(parents=True, exist_ok=True)
    sections = ["baselines"] if args.skip_spiketok else args.sections.split(",")
    stored = args.work / "results.json"
    results = json.loads(stored.read_text()) if stored.exists() and not args.fresh else {}
    versions = ", ".join(f"{p} {metadata.version(p)}" for p in ("torch", "scikit-learn", "numpy", "spiketok"))
    results["_meta"] = {**results.get("_meta", {}), "date": dt.date.today().isoformat(),
                        "machine": f"`{platform.platform()}`, {platform.machine()}, {os.cpu_count()} CPUs",
                        "versions": f"Python {platform.python_version()}, {versions}"}
    folders = prepare(args.work, args.quick)
    if args.only:
        folders = {k: v for k, v in folders.items() if k in args.only.split(",")}
    if "baselines" in sections:
        run_baselines(folders, args, results)
    for column in ("single", "multi"):
        if column in sections:
            results["_meta"]["spiketok_budget"] = (f"config `{args.config}`, at most {args.steps} steps or "
                                                   f"{args.minutes:g} minutes per run, on this CPU")
            run_spiketok(folders, args, column, results)
    if args.spiketok_json:
        read_spiketok_json(args.spiketok_json, prepare(args.work, args.quick), results)
    save(args.work, results)
    command = "python benchmarks/bench_accuracy_baselines.py " + " ".join(sys.argv[1:])
    commands = results["_meta"].setdefault("commands", [])
    if command.strip() not in commands:
        commands.append(command.strip())
    save(args.work, results)
    section = render(results, readme_floors(), command.strip())
    print(section)
    if not args.no_doc:
        write_doc(section)
        print(f"wrote section baselines of {DOC}")


if __name__ == "__main__":
    main()
