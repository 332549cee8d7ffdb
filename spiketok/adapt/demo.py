"""The demos: `spiketok demo` (simulate multi-session motor cortex, train a tiny model, evaluate, plot) and
`demo --adapt`, where a shipped pretrained model meets a new simulated session, against a scratch model.

Nothing is pretrained on the user's machine: `spiketok demo --adapt` loads `pretrained:primate-reaching`,
simulates one new session (new units, new animal), adapts the model's embeddings to N of its trials
(unit identification) and trains a fresh model on the same N trials, then scores both on the test split.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..data.simulate import simulate_to_folder
from ..data.storage import SessionDataset, StoredSession
from ..evaluate.report import evaluate, plot_results, write_json
from ..model.file import load_model_file
from ..train.config import load_config
from ..train.run import TrainResult, train
from .fewshot import FewShotRun, few_shot_study, plot_study, write_csv
from .run import AdaptConfig

DEMO_MODEL = "pretrained:primate-reaching"
TARGET = "hand_velocity"


@dataclass
class AdaptDemoResult:
    session: Path  # the simulated session (prepared .h5)
    runs: list[FewShotRun]  # one unit-id run and one scratch run on the same trials
    plot: Path
    table: Path


def adapt_demo(
    out: str | Path,
    n_trials: int = 10,
    seed: int = 0,
    model: str = DEMO_MODEL,
    scratch_max_steps: int = 400,
    progress: bool = True,
) -> AdaptDemoResult:
    """Simulate a new session into out/data, adapt `model` to its first `n_trials` trials, score unit-id vs scratch."""
    out = Path(out)
    pretrained = load_model_file(model)
    path = simulate_to_folder(
        out / "data",
        n_animals=1,
        sessions_per_animal=1,
        n_units=(80, 100),
        duration=240.0,
        seed=1000 + seed,
        task="center_out",
    )[0]
    session = StoredSession(path)
    config = AdaptConfig(scratch_max_steps=scratch_max_steps)
    runs = few_shot_study(
        pretrained,
        session,
        [n_trials],
        seeds=1,
        modes=("unit-id", "scratch"),
        target=TARGET,
        pick="first",
        config=config,
        progress=progress,
    )
    table, _ = write_csv(runs, out)
    plot = plot_study(
        runs, out / "fewshot.png", title=f"{model} adapted to a new simulated session ({n_trials} trials)"
    )
    return AdaptDemoResult(path, runs, plot, table)


STAGES = ("1/4 simulate", "2/4 train (tiny model)", "3/4 evaluate", "4/4 plot")


@dataclass
class DemoResult:
    """What the demo wrote and scored."""

    sessions: list[Path]  # the simulated prepared sessions (OUT/data)
    training: TrainResult  # its checkpoint, and the steps done before the time budget ran out
    results: dict  # evaluate's results on the test split (mean_r2, per session)
    results_json: Path
    plots: Path
    seconds: float  # the whole demo


def new_run_dir(out: Path) -> Path:
    """OUT/run, or OUT/run-2, -3, ... when an earlier demo trained there: each demo trains into a new folder."""
    run_dir, k = out / "run", 1
    while (run_dir / "checkpoints").exists():
        k += 1
        run_dir = out / f"run-{k}"
    return run_dir


def run_demo(
    out: str | Path,
    minutes: float = 4.0,
    steps: int = 400,
    sessions: int = 2,
    duration: float = 240.0,
    seed: int = 0,
    progress: bool = True,
    on_stage: Callable[[str], None] | None = None,
) -> DemoResult:
    """Simulate 2 animals x `sessions` sessions, train the tiny preset (at most `steps` steps and `minutes`),
    score it on the test split and plot; `on_stage(title)` is called as each of the four STAGES starts."""
    out, t0 = Path(out), time.monotonic()
    stage = on_stage or (lambda title: None)
    stage(STAGES[0])
    paths = simulate_to_folder(
        out / "data",
        n_animals=2,
        sessions_per_animal=sessions,
        n_units=(80, 100),
        duration=duration,
        seed=seed,
        task="mixed",
    )
    data = SessionDataset(paths)
    stage(STAGES[1])
    # the simulator's tuning is known (1 s of context is plenty), so the demo skips the recipe's window pilots
    overrides = ["target=hand_velocity", "model.window=1", f"max_steps={steps}"]
    overrides += [f"warmup_steps={min(100, steps // 4)}", f"max_minutes={minutes}", f"seed={seed}"]
    training = train(data, load_config("tiny", overrides), new_run_dir(out), progress=progress)
    stage(STAGES[2])
    results, decoded = evaluate(load_model_file(training.checkpoint), data, "test", progress=progress)
    write_json(results, out / "results.json")
    stage(STAGES[3])
    plot_results(results, decoded, out / "plots")
    return DemoResult(paths, training, results, out / "results.json", out / "plots", time.monotonic() - t0)
