"""Real recordings: one model on the three macaque sessions together, one per rat file; R² vs the floors.

    python benchmarks/bench_real_data.py [--minutes 20] [--only macaque|rat] [--set key=value ...] [--evaluate-only]
        [--quick] [--doc PATH]

Prepares ../shared/data/*.nwb, trains with `spiketok train`, scores with `spiketok evaluate` on each
file's test split, and writes the table into docs/benchmarks.md beside the ridge/GRU/MLP floors of
shared/data/README.md (read from that file). Rat position is scored on moving samples only (prepare --keep-moving 5).
Rows accumulate in WORK/results.json, so `--only` runs add to the table; `--evaluate-only` scores the
models already trained in WORK again (after a change to evaluation) and keeps their training command.
`--quick` (at most 10 steps or 1 minute per model: a smoke run) works in WORK-quick and writes its section to
benchmarks/out/quick.md, never the page.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

from bench_accuracy_baselines import README_LABELS, readme_floors
from docsection import add_doc_args, page_for, smoke_work, write_section
from provenance import Load, command, commits_cell, footer

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
START, END = "<!-- real-data:start -->", "<!-- real-data:end -->"
GROUPS = {
    "macaque": {
        "files": ["m1_chewie_2013-10-03", "m1_chewie_2013-12-19", "m1_mihi_2014-03-03"],
        "prepare": ["--behavior", "hand_velocity"],
        "together": True,
        "overrides": ["max_steps=2500"],
    },
    # rat CA1 units fire sparsely (0.5 Hz on the linear track): a 4 s context sees enough spikes to place
    # the animal (1 s windows: R² 0.44 on the linear track, 4 s: 0.76, same budget); the W-maze keeps
    # improving for longer (2,000 steps: R² 0.38, 6,000: 0.50)
    "rat": {
        "files": ["hc_linear_track", "hc_w_maze"],
        "prepare": ["--behavior", "led", "--keep-moving", "5"],
        "together": False,
        "overrides": ["model.window=4", "model.latent_step=0.25", "model.t_max=8", "batch_size=16", "max_steps=6000"],
    },
}


def settings(*parts: list[str]) -> list[str]:
    """key=value training settings, later ones winning (the settings a run trains with, in the order given)."""
    merged: dict[str, str] = {}
    for part in parts:
        for item in part:
            key = item.split("=", 1)[0]
            merged.pop(key, None)
            merged[key] = item
    return list(merged.values())


def run(cmd: list[str]) -> None:
    print("$", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)


def spiketok(*args: str) -> list[str]:
    return [sys.executable, "-m", "spiketok.cli", *args]


def train_and_score(
    name: str, files: list[Path], work: Path, cfg: str, overrides: list[str], train: bool = True
) -> dict:
    run_dir = work / "runs" / name
    if train:
        shutil.rmtree(run_dir, ignore_errors=True)  # a fresh run each time (train refuses to overwrite one)
        run(
            spiketok(
                "train",
                *sum((["--data", str(f)] for f in files), []),
                "--config",
                cfg,
                "--out",
                str(run_dir),
                *overrides,
            )
        )
    elif not (run_dir / "model.ckpt").exists():
        sys.exit(f"--evaluate-only: no {run_dir / 'model.ckpt'}; train it first")
    out = work / f"{name}.json"
    run(
        spiketok(
            "evaluate",
            str(run_dir / "model.ckpt"),
            *sum((["--data", str(f)] for f in files), []),
            "--json",
            str(out),
            "--plots",
            str(work / "plots" / name),
        )
    )
    return json.loads(out.read_text())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=20.0, help="training budget per model")
    ap.add_argument("--config", default="tiny")
    ap.add_argument("--only", choices=list(GROUPS))
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "spiketok-real")
    ap.add_argument("--set", nargs="*", default=[], help="extra key=value training overrides")
    ap.add_argument(
        "--evaluate-only",
        action="store_true",
        help="score the models already in WORK/runs again (after a change to evaluation), no training",
    )
    ap.add_argument("--quick", action="store_true", help="at most 10 steps or 1 minute per model (a smoke run)")
    add_doc_args(ap)
    args = ap.parse_args()
    if args.quick:
        args.minutes = min(args.minutes, 1.0)
        args.set = [*args.set, "max_steps=10"]
    args.doc, args.work = page_for(args.doc, args.quick), smoke_work(args.work, args.quick)
    if not DATA.exists():
        sys.exit("no ../shared/data: the real recordings are not here")
    results: dict[str, dict] = {}
    load = Load()
    t0 = time.time()
    for group, spec in GROUPS.items():
        if args.only and group != args.only:
            continue
        prepared = args.work / "prepared" / group
        run(
            spiketok(
                "prepare", *[str(DATA / f"{f}.nwb") for f in spec["files"]], "--out", str(prepared), *spec["prepare"]
            )
        )
        files = [prepared / f"{f}.h5" for f in spec["files"]]
        overrides = settings([f"max_minutes={args.minutes}"], spec["overrides"], args.set)
        if spec["together"]:
            res = train_and_score(group, files, args.work, args.config, overrides, not args.evaluate_only)
            for sid, r in res["sessions"].items():
                results[sid] = {**r, "trained_on": f"{group} ({len(files)} sessions together)", "settings": overrides}
        else:
            for f in files:
                res = train_and_score(f.stem, [f], args.work, args.config, overrides, not args.evaluate_only)
                for sid, r in res["sessions"].items():
                    results[sid] = {**r, "trained_on": "this session alone", "settings": overrides}
    write_doc(results, args, time.time() - t0, load.stop())


def floors_of(sid: str) -> tuple[float, float, float] | None:
    """(ridge, GRU, MLP) floors of a session from shared/data/README.md (rat rows: moving samples only)."""
    variant = "rat-moving" if sid in GROUPS["rat"]["files"] else "macaque"
    return readme_floors().get(README_LABELS.get((variant, sid), ""))


def write_doc(results: dict[str, dict], args: argparse.Namespace, seconds: float, load: Load) -> None:
    """Merge this run's rows into WORK/results.json (so --only runs add up) and write the doc section."""
    store = args.work / "results.json"
    rows = json.loads(store.read_text()) if store.exists() else {}
    cmd = command()
    for sid, r in results.items():
        kept = ("command", "date", "minutes", "settings", "commit")
        trained = (
            {k: rows[sid].get(k) for k in kept}
            if args.evaluate_only and sid in rows
            else {
                "command": cmd,
                "date": str(date.today()),
                "minutes": seconds / 60,
                "settings": r["settings"],
                "commit": load.commit,
            }
        )
        rows[sid] = {
            "r2": r["r2"],
            "r2_per_dim": r["r2_per_dim"],
            "trained_on": r["trained_on"],
            **trained,
            "scored_by": cmd if args.evaluate_only else None,
            "scored_commit": load.commit if args.evaluate_only else None,
        }
    store.write_text(json.dumps(rows, indent=2))
    trained_with = {
        g: list(
            dict.fromkeys(" ".join(rows[f].get("settings") or ["(not recorded)"]) for f in spec["files"] if f in rows)
        )
        for g, spec in GROUPS.items()
    }
    lines = [
        "## Real recordings: spiketok against the floors",
        "",
        f"Model `{args.config}`. Training settings beyond the config, as each run trained (`max_minutes` from "
        "`--minutes`): "
        + "; ".join(f"{g}: " + " and ".join(f"`{s}`" for s in used) for g, used in trained_with.items() if used)
        + ".",
        "",
        "R² (mean over output dimensions) on each file's test split (trials or time blocks in the 3rd and 8th "
        "tenth of the session, the floors' protocol); rat position on moving samples only "
        "(`prepare --keep-moving 5`). Floors from `shared/data/README.md`.",
        "",
        "| file | spiketok R² | per dimension | trained on | ridge | GRU | MLP | floors beaten |",
        "|---|---|---|---|---|---|---|---|",
    ]
    sids = [f for spec in GROUPS.values() for f in spec["files"]]
    for sid in sids:
        if sid in rows:
            r = rows[sid]
            floors = floors_of(sid)
            beaten = (
                "-"
                if floors is None
                else (", ".join(n for n, f in zip(("ridge", "GRU", "MLP"), floors) if r["r2"] > f) or "none")
            )
            shown = " | ".join(f"{v:.2f}" for v in floors) if floors else "- | - | -"
            lines.append(
                f"| {sid} | **{r['r2']:.3f}** | {' / '.join(f'{v:.2f}' for v in r['r2_per_dim'])} | "
                f"{r['trained_on']} | {shown} | {beaten} |"
            )
    img, images = args.doc.parent / "img", []
    img.mkdir(parents=True, exist_ok=True)
    for sid in sids:
        found = sorted(args.work.glob(f"plots/*/traces_{sid}.png"))
        if sid in rows and found:
            shutil.copy(found[0], img / f"real_traces_{sid}.png")
            images.append(f"![{sid}](img/real_traces_{sid}.png)")
    lines += [
        "",
        "Predicted and true traces on the test split (a few trials or stretches per file):",
        "",
        *images,
        "",
        "Runs:",
    ]
    for c in dict.fromkeys(r["command"] for r in rows.values()):
        done = [r for r in rows.values() if r["command"] == c]
        lines.append(f"- `{c}` ({done[0]['date']}, {done[0]['minutes']:.0f} min)")
    for c in dict.fromkeys(r["scored_by"] for r in rows.values() if r.get("scored_by")):
        lines.append(f"- then scored again, same models: `{c}`")
    commits = [r.get("commit") or "not recorded" for r in rows.values()]  # rows may come from several runs
    commits += [r["scored_commit"] for r in rows.values() if r.get("scored_commit")]
    lines += ["", footer(load, ("torch", "spiketok"), timing=False, commit=commits_cell(commits))]
    write_section("\n".join(lines), START, END, args.doc)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
