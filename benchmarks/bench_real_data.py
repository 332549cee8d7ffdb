"""Real recordings: one model on the three macaque sessions together, one per rat file; R² vs the floors.

    python benchmarks/bench_real_data.py [--minutes 20] [--only macaque|rat]

Prepares ../shared/data/*.nwb, trains with `spiketok train`, scores with `spiketok evaluate` on each
file's test split, and writes the table into docs/benchmarks.md beside the ridge/GRU/MLP floors of
shared/data/README.md. Rat position is scored on moving samples only (prepare --keep-moving 5).
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
DOC = ROOT / "docs" / "benchmarks.md"
START, END = "<!-- real-data:start -->", "<!-- real-data:end -->"

# floors from shared/data/README.md: (ridge, GRU, MLP)
FLOORS = {
    "m1_chewie_2013-10-03": (0.64, 0.80, 0.75),
    "m1_chewie_2013-12-19": (0.77, 0.86, 0.84),
    "m1_mihi_2014-03-03": (0.83, 0.85, 0.85),
    "hc_linear_track": (0.31, 0.50, 0.51),
    "hc_w_maze": (0.20, 0.29, 0.37),
}
GROUPS = {
    "macaque": {"files": ["m1_chewie_2013-10-03", "m1_chewie_2013-12-19", "m1_mihi_2014-03-03"],
                "prepare": ["--behavior", "hand_velocity"], "together": True, "overrides": ["max_steps=3000"]},
    # rat CA1 units fire sparsely (0.5 Hz on the linear track): a 4 s context sees enough spikes to place
    # the animal (1 s windows: R² 0.44 on the linear track, 4 s: 0.76, same budget)
    "rat": {"files": ["hc_linear_track", "hc_w_maze"], "prepare": ["--behavior", "led", "--keep-moving", "5"],
            "together": False, "overrides": ["model.window=4", "model.latent_step=0.25", "model.t_max=8",
                                             "batch_size=16", "max_steps=2000"]},
}


def run(cmd: list[str]) -> None:
    print("$", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)


def spiketok(*args: str) -> list[str]:
    return [sys.executable, "-m", "spiketok.cli", *args]


def train_and_score(name: str, files: list[Path], work: Path, cfg: str, overrides: list[str]) -> dict:
    run_dir = work / "runs" / name
    shutil.rmtree(run_dir, ignore_errors=True)  # a fresh run each time (train refuses to overwrite one)
    run(spiketok("train", *sum((["--data", str(f)] for f in files), []), "--config", cfg, "--out", str(run_dir),
                 *overrides))
    out = work / f"{name}.json"
    run(spiketok("evaluate", str(run_dir / "model.ckpt"), *sum((["--data", str(f)] for f in files), []),
                 "--json", str(out), "--plots", str(work / "plots" / name)))
    return json.loads(out.read_text())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=20.0, help="training budget per model")
    ap.add_argument("--config", default="tiny")
    ap.add_argument("--only", choices=list(GROUPS))
    ap.add_argument("--work", type=Path, default=Path("/tmp/spiketok-real"))
    ap.add_argument("--set", nargs="*", default=[], help="extra key=value training overrides")
    args = ap.parse_args()
    if not DATA.exists():
        sys.exit(f"no {DATA}: the real recordings are not here")
    results: dict[str, dict] = {}
    t0 = time.time()
    for group, spec in GROUPS.items():
        if args.only and group != args.only:
            continue
        prepared = args.work / "prepared" / group
        run(spiketok("prepare", *[str(DATA / f"{f}.nwb") for f in spec["files"]], "--out", str(prepared),
                     *spec["prepare"]))
        files = [prepared / f"{f}.h5" for f in spec["files"]]
        overrides = [f"max_minutes={args.minutes}", *spec["overrides"], *args.set]
        if spec["together"]:
            res = train_and_score(group, files, args.work, args.config, overrides)
            for sid, r in res["sessions"].items():
                results[sid] = {**r, "trained_on": f"{group} ({len(files)} sessions together)"}
        else:
            for f in files:
                res = train_and_score(f.stem, [f], args.work, args.config, overrides)
                for sid, r in res["sessions"].items():
                    results[sid] = {**r, "trained_on": "this session alone"}
    write_doc(results, args, time.time() - t0)


def write_doc(results: dict[str, dict], args: argparse.Namespace, seconds: float) -> None:
    import torch

    old = {}
    if DOC.exists() and START in DOC.read_text():
        for line in DOC.read_text().split(START)[1].split(END)[0].splitlines():
            cells = [c.strip() for c in line.strip("|").split("|")]
            if len(cells) == 7 and cells[0] in FLOORS:
                old[cells[0]] = line
    lines = [START, "## Real recordings: spiketok against the floors", "",
             f"Date {date.today()}; machine {platform.machine()} {platform.processor() or ''}, "
             f"{__import__('os').cpu_count()} CPU cores, no GPU; torch {torch.__version__}; "
             f"model `{args.config}`, {args.minutes:g} min of training per model; run time {seconds / 60:.0f} min.",
             "", "Command: `python benchmarks/bench_real_data.py --minutes "
             f"{args.minutes:g}{' --only ' + args.only if args.only else ''}"
             f"{' --set ' + ' '.join(args.set) if args.set else ''}`", "",
             "Training settings beyond the `" + args.config + "` config: "
             + "; ".join(f"{g}: `{' '.join(spec['overrides']) or 'none'}`" for g, spec in GROUPS.items()) + ".", "",
             "R² (mean over output dimensions) on each file's test split (trials or time blocks in the 3rd and 8th "
             "tenth of the session, the floors' protocol); rat position on moving samples only "
             "(`prepare --keep-moving 5`). Floors from `shared/data/README.md`.", "",
             "| file | spiketok R² | trained on | ridge | GRU | MLP | beats ridge |",
             "|---|---|---|---|---|---|---|"]
    for sid in FLOORS:
        if sid in results:
            r = results[sid]
            ridge, gru, mlp = FLOORS[sid]
            lines.append(f"| {sid} | {r['r2']:.3f} | {r['trained_on']} | {ridge:.2f} | {gru:.2f} | {mlp:.2f} | "
                         f"{'yes' if r['r2'] > ridge else 'no'} |")
        elif sid in old:
            lines.append(old[sid])
    lines.append(END)
    text = DOC.read_text() if DOC.exists() else "# Benchmarks\n"
    block = "\n".join(lines)
    text = text.split(START)[0] + block + text.split(END)[1] if START in text else text.rstrip() + "\n\n" + block + "\n"
    DOC.write_text(text)
    print(block)


if __name__ == "__main__":
    main()
