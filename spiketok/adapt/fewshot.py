"""Few-shot study: R² on a new session's test split after adapting with N trials, per mode and seed."""

from __future__ import annotations

import csv
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ..data.session import DataError
from ..data.storage import StoredSession
from ..evaluate.decode import decode_split
from ..model.poyo import POYO
from .data import as_session, has_trials
from .run import MODES, AdaptConfig, adapt, finetune_adapted


@dataclass
class FewShotRun:
    """One adaptation run and its score on the new session's test split."""

    mode: str
    n_trials: int
    seed: int
    r2: float  # mean over output dimensions
    r2_per_dim: list[float]
    steps: int  # training steps over all stages
    seconds: float  # adaptation time (without the test decoding)


def r2_on_test_split(model: POYO, session: StoredSession, target: str) -> np.ndarray:
    """R² per output dimension (D,) on the session's test split."""
    return decode_split(model, session, target, "test").r2()


def _run(model: POYO, session: StoredSession, mode: str, n: int, seed: int) -> FewShotRun:
    rec = model.meta.adaptations[-1]
    r2 = r2_on_test_split(model, session, rec.target)
    stages = rec.stages
    return FewShotRun(
        mode,
        n,
        seed,
        float(np.nanmean(r2)),
        [float(v) for v in r2],
        sum(s.steps for s in stages),
        sum(s.seconds for s in stages),
    )


def few_shot_study(
    model: POYO,
    session: StoredSession | str | Path,
    trials: Sequence[int] = (1, 2, 5, 10, 20, 50),
    seeds: int = 3,
    modes: Sequence[str] = MODES,
    target: str | None = None,
    pick: str = "random",
    config: AdaptConfig | None = None,
    progress: bool = True,
    on_run: Callable[[FewShotRun], None] | None = None,
) -> list[FewShotRun]:
    """Adapt `model` to `session` with each number of trials, seed and mode; score each on the test split.

    Seed s draws the N trials (pick "random"; "first" takes the first N every time) and seeds the
    initialisation and the training windows; every mode of one (N, seed) sees the same trials. The
    finetune run continues from that seed's unit-id run. N above the training split's trial count
    is left out. `on_run` is called after every run (e.g. to print or save progress).
    """
    session = as_session(session)
    unknown = [m for m in modes if m not in MODES]
    if unknown:
        raise ValueError(f"unknown mode(s) {unknown}; choose from {', '.join(MODES)}")
    if not has_trials(session):
        raise DataError(f"{session.path}: the few-shot study counts trials, and this session has no trials table")
    available = len(session.splits["train"])
    counts = sorted({int(n) for n in trials if 1 <= int(n) <= available})
    if not counts:
        raise DataError(f"none of the trial counts {list(trials)} fits the {available} training trials of {session.id}")
    runs: list[FewShotRun] = []
    n_jobs = len(counts) * seeds * len(modes)
    bar = tqdm(total=n_jobs, desc=f"few-shot {session.id}", disable=not progress)

    def record(run: FewShotRun) -> None:
        runs.append(run)
        bar.update(1)
        bar.set_postfix(last=f"{run.mode} N={run.n_trials} R²={run.r2:.3f}")
        if on_run is not None:
            on_run(run)

    for n in counts:
        for seed in range(seeds):
            kw = dict(n_trials=n, target=target, pick=pick, seed=seed, config=config, progress=False)
            if "unit-id" in modes or "finetune" in modes:
                unit_id = adapt(model, session, mode="unit-id", **kw)
                if "unit-id" in modes:
                    record(_run(unit_id, session, "unit-id", n, seed))
                if "finetune" in modes:
                    finetuned = finetune_adapted(unit_id, session, config, progress=False)
                    record(_run(finetuned, session, "finetune", n, seed))
            if "scratch" in modes:
                record(_run(adapt(model, session, mode="scratch", **kw), session, "scratch", n, seed))
    bar.close()
    return runs


def summarise(runs: Sequence[FewShotRun]) -> list[dict]:
    """Per (mode, N): mean, standard deviation, min and max of R² over seeds; rows ordered by mode, then N."""
    rows = []
    modes = [m for m in MODES if any(r.mode == m for r in runs)]
    for mode in modes:
        for n in sorted({r.n_trials for r in runs if r.mode == mode}):
            r2 = np.array([r.r2 for r in runs if r.mode == mode and r.n_trials == n])
            rows.append(
                {
                    "mode": mode,
                    "n_trials": n,
                    "r2_mean": float(r2.mean()),
                    "r2_std": float(r2.std()),
                    "r2_min": float(r2.min()),
                    "r2_max": float(r2.max()),
                    "seeds": len(r2),
                }
            )
    return rows


def write_csv(runs: Sequence[FewShotRun], out_dir: str | Path) -> tuple[Path, Path]:
    """`fewshot.csv` (the summary) and `fewshot_runs.csv` (every run) in `out_dir`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    summary = summarise(runs)
    paths = out / "fewshot.csv", out / "fewshot_runs.csv"
    with open(paths[0], "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(summary[0]))
        writer.writeheader()
        writer.writerows(summary)
    with open(paths[1], "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=[k for k in asdict(runs[0])])
        writer.writeheader()
        for r in runs:
            row = asdict(r)
            row["r2_per_dim"] = " ".join(f"{v:.4f}" for v in r.r2_per_dim)
            writer.writerow(row)
    return paths


def read_runs(path: str | Path) -> list[FewShotRun]:
    """The runs of a `fewshot_runs.csv` written by `write_csv`."""
    with open(path, newline="") as f:
        return [
            FewShotRun(
                r["mode"],
                int(r["n_trials"]),
                int(r["seed"]),
                float(r["r2"]),
                [float(v) for v in r["r2_per_dim"].split()],
                int(r["steps"]),
                float(r["seconds"]),
            )
            for r in csv.DictReader(f)
        ]


def plot_study(runs: Sequence[FewShotRun], path: str | Path, title: str | None = None) -> Path:
    """PNG: R² against N (log axis), one line per mode, mean over seeds with a min-max band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary = summarise(runs)
    colours = {"unit-id": "tab:blue", "finetune": "tab:orange", "scratch": "tab:gray"}
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for mode in [m for m in MODES if any(r["mode"] == m for r in summary)]:
        rows = [r for r in summary if r["mode"] == mode]
        n = [r["n_trials"] for r in rows]
        ax.plot(n, [r["r2_mean"] for r in rows], "o-", color=colours[mode], label=mode)
        ax.fill_between(n, [r["r2_min"] for r in rows], [r["r2_max"] for r in rows], color=colours[mode], alpha=0.15)
    ax.set_xscale("log")
    ax.set_xticks(sorted({r["n_trials"] for r in summary}), [str(v) for v in sorted({r["n_trials"] for r in summary})])
    ax.set_xlabel("adaptation trials N")
    ax.set_ylabel("R² on the test split")
    seeds = max(r["seeds"] for r in summary)
    ax.set_title(title or f"few-shot adaptation (mean of {seeds} seed(s), band: min to max)", fontsize=10)
    ax.axhline(0, color="0.7", lw=0.8)
    ax.legend()
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
