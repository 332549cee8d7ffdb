"""Accuracy of the baselines (ridge, GRU, MLP) and of spiketok on every real recording and the simulator.

For every file in ../shared/data (prepared with `spiketok prepare`; the rat files also with
--keep-moving 5) and for simulated sessions, scores on each session's test split (R², mean over
dimensions, as `spiketok evaluate` does):

- `baselines`: ridge, GRU and MLP trained per session (`spiketok.evaluate.baselines`);
- `single`:    spiketok trained on that one session;
- `multi`:     spiketok trained on all sessions of a kind together (the three macaque sessions; the
               simulated sessions);

and writes the table into docs/benchmarks.md (section `baselines`) beside the floors of
shared/data/README.md. spiketok training is CPU heavy: budget it with --steps/--minutes, or skip it
with --skip-spiketok (`benchmarks/bench_recipe.py` reports spiketok's default recipe against these
baselines on the real files). Every figure in the table is measured by this script: results are kept in
WORK/results.json, so sections can be run one at a time and the table is built from all; `--fresh`
forgets them.

    python benchmarks/bench_accuracy_baselines.py [--sections baselines,single,multi] [--skip-spiketok]
        [--steps 1500] [--minutes 15] [--bin 0.02] [--quick] [--no-doc] [--doc PATH]
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import tempfile
import time
from pathlib import Path

from docsection import add_doc_args, page_for, smoke_work, write_section
from provenance import NOT_RECORDED, Load, command, commits_cell, footer

from spiketok.data.readers import ReadOptions
from spiketok.data.storage import SessionDataset, write_session

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
START, END = "<!-- baselines:start -->", "<!-- baselines:end -->"
BASELINES = ("ridge", "gru", "mlp")
# dataset variants: name -> (files, behaviour, keep_moving px, kind trained together or None)
REAL = {
    "macaque": (
        ["m1_chewie_2013-10-03.nwb", "m1_chewie_2013-12-19.nwb", "m1_mihi_2014-03-03.nwb"],
        "hand_velocity",
        None,
        "macaque",
    ),
    "rat": (["hc_linear_track.nwb", "hc_w_maze.nwb"], "led", None, None),
    "rat-moving": (["hc_linear_track.nwb", "hc_w_maze.nwb"], "led", 5.0, None),
}
README_LABELS = {  # (variant, session id) -> row label in shared/data/README.md's floors table
    ("macaque", "m1_chewie_2013-10-03"): "Chewie 2013-10-03",
    ("macaque", "m1_chewie_2013-12-19"): "Chewie 2013-12-19",
    ("macaque", "m1_mihi_2014-03-03"): "Mihi 2014-03-03",
    ("rat", "hc_linear_track"): "linear track, whole session",
    ("rat-moving", "hc_linear_track"): "linear track, moving samples only",
    ("rat", "hc_w_maze"): "W-maze, whole session",
    ("rat-moving", "hc_w_maze"): "W-maze, moving samples only",
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
                session, _ = read_nwb(path, ReadOptions(behavior=[behavior], keep_moving=moving))
                write_session(session, target)
        folders[variant] = out
    sim = work / "prepared" / "simulator"
    if not list(sim.glob("*.h5")):
        simulate_to_folder(
            sim,
            n_animals=2,
            sessions_per_animal=2,
            n_units=(80, 100),
            duration=120.0 if quick else 240.0,
            seed=0,
            task="mixed",
        )
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
                results.setdefault(variant, {}).setdefault(sid, {})[model] = {
                    "r2": r["r2"],
                    "fit": r["fit"],
                    "n_samples": r["n_samples"],
                }
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
        groups = (
            [(f"{variant}-all", sorted(folder.glob("*.h5")))]
            if column == "multi"
            else [(f"{variant}-{p.stem}", [p]) for p in sorted(folder.glob("*.h5"))]
        )
        for name, files in groups:
            t = time.perf_counter()
            res = train_and_evaluate(files, args.work / "runs" / name, args)
            for sid, r in res["sessions"].items():
                results.setdefault(variant, {}).setdefault(sid, {})[column] = {
                    "r2": r["r2"],
                    "steps": res["train"]["steps"],
                    "minutes": res["train"]["minutes"],
                    "source": "trained here",
                }
            print(f"{name}: mean R² {res['mean_r2']:.3f} ({(time.perf_counter() - t) / 60:.1f} min)", flush=True)
            save(args.work, results)


def save(work: Path, results: dict) -> None:
    (work / "results.json").write_text(json.dumps(results, indent=2))


def baseline_text(bc: dict) -> str:
    """The baselines' settings, read from the library's BaselineConfig (with this run's bin and step budget)."""
    from spiketok.evaluate.baselines import BaselineConfig

    r, g, m = (
        BaselineConfig(model=k, bin=bc.get("bin", 0.02), max_steps=bc.get("max_steps", 2000))
        for k in ("ridge", "gru", "mlp")
    )
    windows = ", ".join(f"{h:g}" for h in r.history_choices)
    return (
        f"square-rooted counts in {1e3 * r.bin:.0f} ms bins, z-scored inputs and targets, bins only inside each "
        f"trial or block (never across a gap); input windows causal or centred on the sample (`--lags "
        f"{r.lags}`: the valid split chooses); ridge picks its window ({windows} s) and penalty ({len(r.alphas)} "
        f"values, {min(r.alphas):g} to {max(r.alphas):g}) on the valid split; MLP ({m.layers} x {m.hidden}, "
        f"dropout {m.dropout:g}) and GRU ({g.layers} x {g.hidden}) each trained on a causal 0.5 s window and on "
        f"the window ridge prefers, the better on the valid split kept; AdamW, at most {m.max_steps} steps, the "
        "step with the lowest validation error kept"
    )


def render(results: dict, floors: dict, load: Load) -> str:
    meta = results["_meta"]
    bc = meta.get("baseline_config", {})
    spiketok = any(k in r for v in results if v != "_meta" for r in results[v].values() for k in ("single", "multi"))
    lines = [
        "## Accuracy: baselines and spiketok" if spiketok else "## Accuracy: baselines",
        "",
        "R² on each session's test split (the 3rd and 8th of ten blocks, whole trials for the macaque files), "
        "mean over output dimensions, scored by the same code as `spiketok evaluate` (behaviour samples with "
        "weight > 0). Baselines (`spiketok baseline`) are trained per session on its train split, with the "
        f"valid split for the ridge penalty and early stopping: {baseline_text(bc)}. `floor` columns: "
        "shared/data/README.md (100 ms bins, ridge penalty picked on the test blocks)."
        + (
            " spiketok, trained by this script: `single` = one model per session, `multi` = one model on all "
            "sessions of a kind (the macaque sessions together; the simulated sessions together)."
            if spiketok
            else " spiketok against these baselines: see the default-recipe section (`benchmarks/bench_recipe.py`)."
        ),
        "",
        "| data | session | target | ridge | GRU | MLP | floor ridge / GRU / MLP |"
        + (" spiketok single | spiketok multi |" if spiketok else ""),
        "|---|---|---|---|---|---|---|" + ("---|---|" if spiketok else ""),
    ]
    names = {
        "macaque": "macaque M1",
        "rat": "rat CA1, whole session",
        "rat-moving": "rat CA1, moving samples only",
        "simulator": "simulator",
    }
    for variant in ("macaque", "rat", "rat-moving", "simulator"):
        for sid, r in sorted(results.get(variant, {}).items()):

            def cell(key: str, r: dict = r) -> str:
                if key not in r:
                    return "not run"
                v = f"{r[key]['r2']:.3f}"
                if key in ("single", "multi") and r[key].get("steps"):
                    v += f" ({r[key]['steps']} steps)"
                return v

            fl = floors.get(README_LABELS.get((variant, sid), ""), None)
            floor = " / ".join(f"{v:.2f}" for v in fl) if fl else "-"
            target = "hand velocity" if variant in ("macaque", "simulator") else "LED position"
            lines.append(
                f"| {names[variant]} | {sid} | {target} | {cell('ridge')} | {cell('gru')} | {cell('mlp')} | "
                f"{floor} |" + (f" {cell('single')} | {cell('multi')} |" if spiketok else "")
            )
    if meta.get("spiketok_budget"):
        lines += ["", f"spiketok trained here: {meta['spiketok_budget']}."]
    runs = meta.get("commands", [])
    commits = [meta.get("commits", {}).get(c, NOT_RECORDED) for c in runs]  # the table may hold several runs' results
    lines += [
        "",
        footer(
            load,
            ("torch", "scikit-learn", "numpy", "spiketok"),
            timing=False,
            commit=commits_cell(commits),
            rows=[(f"earlier command {i + 1}", f"`{c}`") for i, c in enumerate(runs[:-1])],
        ),
    ]
    return "\n".join(lines)


def write_doc(section: str, doc: Path) -> None:
    """Replace this benchmark's section of the benchmark page."""
    write_section(section, START, END, doc)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sections", default="baselines,single,multi", help="comma list of baselines, single, multi")
    ap.add_argument("--skip-spiketok", action="store_true", help="same as --sections baselines")
    ap.add_argument("--only", help="comma list of data variants: macaque, rat, rat-moving, simulator")
    ap.add_argument("--config", default="tiny", help="spiketok training config")
    ap.add_argument("--steps", type=int, default=1500, help="spiketok max_steps per training run")
    ap.add_argument("--minutes", type=float, default=15.0, help="spiketok wall-clock budget per training run")
    ap.add_argument("--bin", type=float, default=0.02, help="baseline bin width (s)")
    ap.add_argument("--baseline-steps", type=int, default=2000, help="GRU/MLP max training steps")
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "spiketok-bench-accuracy")
    ap.add_argument("--fresh", action="store_true", help="forget the results kept in WORK/results.json")
    ap.add_argument(
        "--quick",
        action="store_true",
        help="shorter simulated sessions, 30 spiketok steps (1 min at most), 100 baseline steps, "
        "50 ms baseline bins (a smoke run)",
    )
    ap.add_argument("--no-doc", action="store_true")
    add_doc_args(ap)
    args = ap.parse_args()
    if args.quick:
        args.steps, args.minutes, args.baseline_steps = min(args.steps, 30), min(args.minutes, 1.0), 100
        args.bin = max(args.bin, 0.05)  # ridge's window search solves (lags x units)-sized systems: 20 lags, not 50
    # a smoke run writes benchmarks/out/quick.md and keeps its results apart from a full run's
    args.doc, args.work = page_for(args.doc, args.quick), smoke_work(args.work, args.quick)
    load = Load()
    args.work.mkdir(parents=True, exist_ok=True)
    sections = ["baselines"] if args.skip_spiketok else args.sections.split(",")
    stored = args.work / "results.json"
    results = json.loads(stored.read_text()) if stored.exists() and not args.fresh else {}
    results["_meta"] = results.get("_meta", {})
    folders = prepare(args.work, args.quick)
    if args.only:
        folders = {k: v for k, v in folders.items() if k in args.only.split(",")}
    if "baselines" in sections:
        run_baselines(folders, args, results)
    for column in ("single", "multi"):
        if column in sections:
            results["_meta"]["spiketok_budget"] = (
                f"config `{args.config}`, at most {args.steps} steps or {args.minutes:g} minutes per run, on this CPU"
            )
            run_spiketok(folders, args, column, results)
    current = command()
    results["_meta"]["commands"] = [c for c in results["_meta"].get("commands", []) if c != current] + [current]
    results["_meta"].setdefault("commits", {})[current] = load.commit
    save(args.work, results)
    section = render(results, readme_floors(), load.stop())
    print(section)
    if not args.no_doc:
        write_doc(section, args.doc)
        print(f"wrote section baselines of {args.doc}")


if __name__ == "__main__":
    main()
