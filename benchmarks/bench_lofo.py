"""Leave-one-file-out choice of the recipe's hand-set constants: chosen on four files, scored on the fifth.

    python benchmarks/bench_lofo.py [--candidates NAME ...] [--files NAME ...] [--jobs 2]
        [--work DIR] [--recipe-work DIR] [--doc-only]

The recipe chooses the window, steps, batch and patience from each file's own data (train and validation
splits); what is still typed in is the regularisation of the `tiny` preset (dropout, weight decay). Each
candidate below is trained on each of the five files in ../shared/data alone (`spiketok train --data FILE`
plus the candidate's settings, nothing else), and scored on its validation split (best validation R², what
early stopping keeps) and test split (`spiketok evaluate`). For each file, the candidate with the best mean
validation R² over the OTHER four files is the one whose test R² that file reports: no file's own test (or
validation) score chooses its settings. Beside it, the best of the three baselines on the same split.

The first candidate's runs choose each file's window with the recipe's pilots; the other candidates train at
that window, so the candidates differ in their regularisation only. The `tiny` preset (spiketok/train/configs/
tiny.yaml) takes the candidate the folds choose; the section says which that is and what the preset holds now.
--recipe-work: bench_recipe.py's WORK, for its prepared files. Every run stores its JSON under WORK, so an
interrupted study continues where it stopped.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench_recipe import BASELINES, MACAQUE, RAT, begin_study, preset_regularisation, r2_of, run, run_table, spiketok
from docsection import write_section

START, END = "<!-- lofo:start -->", "<!-- lofo:end -->"
FILES = MACAQUE + RAT
CANDIDATES: dict[str, list[str]] = {  # name -> settings; the first one's runs run the recipe's window pilots
    "drop0.2-wd0.05": ["model.dropout=0.2", "weight_decay=0.05"],  # the tiny preset before this study
    "drop0.1-wd0.01": ["model.dropout=0.1", "weight_decay=0.01"],
    "drop0.3-wd0.1": ["model.dropout=0.3", "weight_decay=0.1"],
}
PILOTS = next(iter(CANDIDATES))
WINDOW_KEYS = ("model.window", "model.latent_step", "model.t_max")  # what the recipe's pilots choose


def best_val_r2(run_dir: Path) -> float:
    """The best validation R² a run logged (the checkpoint it keeps)."""
    with open(run_dir / "logs" / "metrics.csv") as f:
        vals = [float(r["val_r2"]) for r in csv.DictReader(f) if r.get("val_r2")]
    return max(vals)


def folder_of(candidate: str, name: str, work: Path) -> Path:
    return work / candidate / name


def pilot_window(name: str, work: Path) -> list[str]:
    """The window settings the PILOTS candidate's run chose from the file's validation split, as overrides."""
    chosen = json.loads((folder_of(PILOTS, name, work) / "run" / "recipe.json").read_text())
    return [f"{k}={chosen['settings'][k]}" for k in WINDOW_KEYS]


def train_one(candidate: str, name: str, path: Path, work: Path) -> None:
    """Train and evaluate one candidate on one file (skipped when its result is stored), then its baselines."""
    folder = folder_of(candidate, name, work)
    folder.mkdir(parents=True, exist_ok=True)
    log, result = folder / "log.txt", folder / "spiketok.json"
    if not result.exists():
        run_dir = folder / "run"
        window = [] if candidate == PILOTS else pilot_window(name, work)
        t0 = time.time()
        run(
            spiketok(
                "train", "--data", str(path), "--out", str(run_dir), "--no-progress", *CANDIDATES[candidate], *window
            ),
            log,
        )
        minutes = (time.time() - t0) / 60
        run(
            spiketok("evaluate", str(run_dir / "model.ckpt"), "--data", str(path), "--json", str(folder / "eval.json")),
            log,
        )
        scores = json.loads((folder / "eval.json").read_text())
        recipe = json.loads((run_dir / "recipe.json").read_text())
        result.write_text(json.dumps({"sessions": scores["sessions"], "recipe": recipe, "minutes": minutes}))
    if candidate != PILOTS:
        return
    for model in BASELINES:  # the bar, on the same split: kept with the first candidate's run
        out = folder / f"{model}.json"
        if not out.exists():
            run(spiketok("baseline", "--model", model, "--data", str(path), "--json", str(out)), log)


def scores(candidates: list[str], work: Path) -> dict[str, dict[str, dict]]:
    """candidate -> file -> {"val": best validation R², "test": test R²} for the runs that finished."""
    out: dict[str, dict[str, dict]] = {}
    for c in candidates:
        for name in FILES:
            folder = folder_of(c, name, work)
            if (folder / "spiketok.json").exists():
                test = json.loads((folder / "spiketok.json").read_text())["sessions"][name]["r2"]
                out.setdefault(c, {})[name] = {"val": best_val_r2(folder / "run"), "test": float(test)}
    return out


def write_doc(candidates: list[str], work: Path, load_before, load_after, seconds: float, doc_only: bool) -> None:
    res = scores(candidates, work)
    complete = [c for c in candidates if len(res.get(c, {})) == len(FILES)]
    settings = "; ".join(f"`{c}`: {' '.join(CANDIDATES[c])}" for c in candidates)
    lines = [
        "## Leave one file out: the recipe's regularisation chosen on four files, scored on the fifth",
        "",
        f"Candidates ({settings}) each trained on each file alone with the default command plus their settings. "
        f"The other candidates train at the window the `{PILOTS}` run chose with the recipe's pilots from that "
        "file's own validation split, so they differ in regularisation only. "
        "For each file, the candidate with the best mean validation R² over the other four files is chosen, and "
        "that file's test R² with it is reported, beside the best of `spiketok baseline --model ridge|gru|mlp` "
        "on the same split. Command: `python benchmarks/bench_lofo.py`.",
        "",
    ]
    if len(complete) < len(candidates):
        done = ", ".join(f"`{c}` {len(res.get(c, {}))}/{len(FILES)}" for c in candidates)
        lines += [
            f"Not complete yet (runs finished per candidate: {done}); the table needs every candidate on every file.",
            "",
        ]
    else:
        head = " | ".join(f"val R² `{c}` (other four)" for c in candidates)
        lines += [
            f"| left-out file | {head} | chosen | test R² | best baseline | verdict |",
            "|---|" + "---|" * (len(candidates) + 4),
        ]
        above, chosen_by_fold = 0, Counter()
        for f in FILES:
            means = {c: sum(res[c][g]["val"] for g in FILES if g != f) / (len(FILES) - 1) for c in candidates}
            chosen = max(means, key=means.get)
            chosen_by_fold[chosen] += 1
            test = res[chosen][f]["test"]
            known = [
                v for v in (r2_of(folder_of(PILOTS, f, work) / f"{m}.json", f) for m in BASELINES) if v is not None
            ]
            best = max(known) if known else None
            verdict = "-" if best is None else ("above" if test > best else "**below**")
            above += verdict == "above"
            lines.append(
                f"| {f} | " + " | ".join(f"{means[c]:.3f}" for c in candidates) + f" | `{chosen}` | "
                f"**{test:.3f}** | {'-' if best is None else f'{best:.3f}'} | {verdict} |"
            )
        top, n_top = chosen_by_fold.most_common(1)[0]
        preset = preset_regularisation()
        ships = "it" if preset == " ".join(CANDIDATES[top]) else f"not it ({preset})"
        mean_test = {c: sum(res[c][f]["test"] for f in FILES) / len(FILES) for c in candidates}
        lines += [
            "",
            f"Left-out files above the best baseline: **{above} of {len(FILES)}**. The folds chose `{top}` "
            f"{n_top} of {len(FILES)} times; the `tiny` preset this tree ships is {ships}. Mean test R² over the "
            "five files: " + ", ".join(f"`{c}` {v:.3f}" for c, v in mean_test.items()) + ".",
            "",
            "Test R² of every candidate on every file (for reference; not used to choose):",
            "",
            "| file | " + " | ".join(f"`{c}`" for c in candidates) + " |",
            "|---|" + "---|" * len(candidates),
        ]
        for f in FILES:
            lines.append(f"| {f} | " + " | ".join(f"{res[c][f]['test']:.3f}" for c in candidates) + " |")
    lines += [""] + run_table(seconds, load_before, load_after, doc_only)
    write_section("\n".join(lines), START, END)
    print("\n".join(lines))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--candidates", nargs="*", default=list(CANDIDATES), choices=list(CANDIDATES))
    ap.add_argument("--files", nargs="*", default=FILES, choices=FILES, help="files to train now (default all)")
    ap.add_argument("--jobs", type=int, default=2, help="runs side by side (one torch thread each)")
    ap.add_argument("--work", type=Path, default=Path("bench-work/lofo"))
    ap.add_argument("--recipe-work", type=Path, default=None, help="bench_recipe.py's WORK: its prepared files")
    ap.add_argument("--doc-only", action="store_true", help="write the section from the results in WORK")
    args = ap.parse_args()
    paths, load_before, t0 = begin_study(args.work, args.doc_only, prepared_in=args.recipe_work)
    if not args.doc_only:
        others = [c for c in args.candidates if c != PILOTS]
        with ThreadPoolExecutor(args.jobs) as pool:  # the pilot candidate first: the others take its windows
            for stage in ([PILOTS] if PILOTS in args.candidates else [], others):
                futures = [pool.submit(train_one, c, f, paths[f], args.work) for f in args.files for c in stage]
                for fut in futures:
                    fut.result()
    write_doc(args.candidates, args.work, load_before, os.getloadavg(), time.time() - t0, args.doc_only)


if __name__ == "__main__":
    main()
