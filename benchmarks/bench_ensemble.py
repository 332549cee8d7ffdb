"""Do seed ensembles pay? Several seeds of the leave-one-file-out choice, their test predictions averaged.

    python benchmarks/bench_ensemble.py [--lofo-work DIR] [--recipe-work DIR] [--seeds 3] [--files NAME ...]
        [--jobs 2] [--work DIR] [--doc-only]

For each file in ../shared/data, the regularisation candidate its leave-one-file-out fold chose
(bench_lofo.py: best mean validation R² over the other four files) is the model. Its run in the LOFO
study is seed 0; this script trains seeds 1..K-1 with the same settings and window (`spiketok train ...
seed=S`) and scores, on the test split, the mean of the K models' predictions against seed 0 alone and
against the mean R² of the single seeds. The rule (issue 12): an `--ensemble K` option is worth shipping only
where it adds more than 0.01 R² on that table. Beside it, for free: the three regularisation candidates'
own runs (same window, seed 0) averaged, a more diverse ensemble than seeds are.
--lofo-work: bench_lofo.py's WORK. --recipe-work: bench_recipe.py's WORK (its prepared files).
Every run stores its results under WORK, so an interrupted study continues where it stopped.
"""

from __future__ import annotations

import argparse
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from bench_lofo import CANDIDATES, FILES, folder_of, pilot_window, scores
from bench_recipe import begin_study, run, run_table, spiketok
from docsection import write_section

START, END = "<!-- ensemble:start -->", "<!-- ensemble:end -->"
GAIN_TO_SHIP = 0.01  # issue 12: keep `--ensemble` only where it adds more than this on the LOFO table


def chosen_candidates(lofo: Path) -> dict[str, str]:
    """file -> the candidate its fold chose (best mean validation R² over the other four files)."""
    res = scores(list(CANDIDATES), lofo)
    chosen = {}
    for f in FILES:
        means = {c: np.mean([res[c][g]["val"] for g in FILES if g != f]) for c in CANDIDATES}
        chosen[f] = max(means, key=means.get)
    return chosen


def member_dir(name: str, seed: int, candidate: str, lofo: Path, work: Path) -> Path:
    """Seed 0 is the LOFO study's own run; the other seeds train under WORK."""
    return folder_of(candidate, name, lofo) / "run" if seed == 0 else work / name / f"seed-{seed}"


def train_member(name: str, path: Path, seed: int, candidate: str, lofo: Path, work: Path) -> None:
    """Train one extra seed with the chosen candidate's settings at the window its LOFO run used."""
    run_dir = member_dir(name, seed, candidate, lofo, work)
    if (run_dir / "model.ckpt").exists():
        return
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    run(
        spiketok(
            "train",
            "--data",
            str(path),
            "--out",
            str(run_dir),
            "--no-progress",
            *CANDIDATES[candidate],
            *pilot_window(name, lofo),
            f"seed={seed}",
        ),
        run_dir.parent / f"log-seed-{seed}.txt",
    )


def test_predictions(run_dirs: list[Path], path: Path, cache: Path) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """Each model's test-split predictions (T, D), and the targets (T, D) and weights (T,), stored in `cache`."""
    if not cache.exists():
        from spiketok.data.storage import SessionDataset
        from spiketok.evaluate.decode import decode_split
        from spiketok.model.file import load_model_file

        session = next(iter(SessionDataset([path])))
        preds, decoded = [], None
        for d in run_dirs:
            model = load_model_file(d / "model.ckpt")
            decoded = decode_split(model, session, model.target_for(session.id, list(session.behavior_info)), "test")
            preds.append(decoded.y_pred)
        np.savez(cache, preds=np.stack(preds), y_true=decoded.y_true, weights=decoded.weights)
    z = np.load(cache)
    return list(z["preds"]), z["y_true"], z["weights"]


def r2(y_true: np.ndarray, y_pred: np.ndarray, weights: np.ndarray) -> float:
    from spiketok.evaluate.metrics import r2_per_dim

    return float(np.nanmean(r2_per_dim(y_true, y_pred, weights)))


def ensemble_scores(preds: list[np.ndarray], y_true: np.ndarray, weights: np.ndarray) -> dict[str, float]:
    """R² of the first model, mean R² of the single models, and R² of their averaged predictions."""
    singles = [r2(y_true, p, weights) for p in preds]
    return {"first": singles[0], "singles": float(np.mean(singles)), "ensemble": r2(y_true, np.mean(preds, 0), weights)}


def train_has_ensemble() -> bool:
    """Whether `spiketok train` takes --ensemble (read from the command's signature, not assumed)."""
    import inspect

    from spiketok.cli.train_commands import train

    return "ensemble" in inspect.signature(train).parameters


def write_doc(
    seeds: int,
    files: list[str],
    chosen: dict[str, str],
    paths: dict[str, Path],
    lofo: Path,
    work: Path,
    load_before,
    load_after,
    seconds: float,
    doc_only: bool,
) -> None:
    lines = [
        "## Seed ensembles: do they pay?",
        "",
        f"For each file, the regularisation its leave-one-file-out fold chose, trained with {seeds} seeds "
        "(seed 0 is the LOFO study's run; the others train with the same settings and window plus `seed=S`): "
        "test R² of seed 0, the mean R² of the single seeds, and the R² of their averaged predictions, which is "
        f"what an `--ensemble {seeds}` option would give. Beside it, the {len(CANDIDATES)} regularisation "
        "candidates' own runs of the LOFO study (seed 0, same window) averaged: as many models, and more diverse "
        "ones than seeds. Command: `python benchmarks/bench_ensemble.py`.",
        "",
        f"| file | chosen | seed 0 | single seeds (mean) | {seeds}-seed ensemble | its gain over a single seed | "
        f"{len(CANDIDATES)} candidates (mean) | {len(CANDIDATES)}-candidate ensemble | its gain over a single one |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    seed_gains, cand_gains, missing = [], [], []
    for f in files:
        cand = [chosen[f]] + [c for c in CANDIDATES if c != chosen[f]]
        c = ensemble_scores(
            *test_predictions([folder_of(k, f, lofo) / "run" for k in cand], paths[f], work / f / "candidates.npz")
        )
        cand_gains.append(c["ensemble"] - c["singles"])
        dirs = [member_dir(f, s, chosen[f], lofo, work) for s in range(seeds)]
        if all((d / "model.ckpt").exists() for d in dirs):
            s = ensemble_scores(*test_predictions(dirs, paths[f], work / f / f"seeds-{seeds}.npz"))
            seed_gains.append(s["ensemble"] - s["singles"])
            seed_cols = (
                f"{s['first']:.3f} | {s['singles']:.3f} | **{s['ensemble']:.3f}** | {s['ensemble'] - s['singles']:+.3f}"
            )
        else:
            missing.append(f)
            seed_cols = "- | - | - | -"
        lines.append(
            f"| {f} | `{chosen[f]}` | {seed_cols} | {c['singles']:.3f} | **{c['ensemble']:.3f}** | "
            f"{c['ensemble'] - c['singles']:+.3f} |"
        )
    mean = lambda v: float(np.mean(v))  # noqa: E731
    pays = bool(seed_gains) and mean(seed_gains) > GAIN_TO_SHIP
    lines += [""]
    if seed_gains:
        lines.append(
            f"Mean gain of the {seeds}-seed ensemble over a single seed on the {len(seed_gains)} file(s) with "
            f"every seed trained: **{mean(seed_gains):+.3f}** R²."
        )
    if missing:
        lines.append(f"Seeds not trained (too long for this run, or not finished): {', '.join(missing)}.")
    lines += [
        f"Mean gain of the {len(CANDIDATES)}-candidate ensemble over a single candidate on the {len(cand_gains)} "
        f"files: **{mean(cand_gains):+.3f}** R².",
        "",
        f"Rule (issue 12): ship `--ensemble` only where it adds more than {GAIN_TO_SHIP:.2f} R² on this table. "
        + (
            "Verdict: **it pays** on the seeds measured; `spiketok train` "
            + (
                "has it (`--ensemble K`; `evaluate` with the K checkpoints averages them)."
                if train_has_ensemble()
                else "**has no `--ensemble` option yet**."
            )
            if pays
            else "Verdict: **it does not pay**"
            + (" (no seed ensemble measured yet)" if not seed_gains else "")
            + ", so `spiketok train` "
            + ("has one all the same." if train_has_ensemble() else "has no `--ensemble` option.")
        ),
        "",
    ]
    lines += run_table(seconds, load_before, load_after, doc_only)
    write_section("\n".join(lines), START, END)
    print("\n".join(lines))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--lofo-work", type=Path, default=Path("bench-work/lofo"), help="bench_lofo.py's WORK: the chosen runs (seed 0)"
    )
    ap.add_argument(
        "--recipe-work", type=Path, default=Path("bench-work/recipe"), help="bench_recipe.py's WORK: its prepared files"
    )
    ap.add_argument("--seeds", type=int, default=3, help="models per ensemble (seeds 0..K-1)")
    ap.add_argument("--files", nargs="*", default=FILES, choices=FILES, help="files to measure (default all)")
    ap.add_argument("--jobs", type=int, default=2, help="runs side by side (one torch thread each)")
    ap.add_argument("--work", type=Path, default=Path("bench-work/ensemble"))
    ap.add_argument("--doc-only", action="store_true", help="write the section from the results in WORK")
    args = ap.parse_args()
    if args.seeds < 2:
        ap.error(f"--seeds must be at least 2 (an ensemble of one model is that model), got {args.seeds}")
    _, load_before, t0 = begin_study(args.work, True)
    paths = {f: args.recipe_work / "prepared" / f"{f}.h5" for f in FILES}
    chosen = chosen_candidates(args.lofo_work)
    if not args.doc_only:
        with ThreadPoolExecutor(args.jobs) as pool:
            futures = [
                pool.submit(train_member, f, paths[f], s, chosen[f], args.lofo_work, args.work)
                for s in range(1, args.seeds)
                for f in args.files
            ]
            for fut in futures:
                fut.result()
    write_doc(
        args.seeds,
        args.files,
        chosen,
        paths,
        args.lofo_work,
        args.work,
        load_before,
        os.getloadavg(),
        time.time() - t0,
        args.doc_only,
    )


if __name__ == "__main__":
    main()
