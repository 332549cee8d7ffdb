"""The adaptation demo: a shipped pretrained model meets a new simulated session, against a scratch model.

Nothing is pretrained on the user's machine: `spiketok demo --adapt` loads `pretrained:primate-reaching`,
simulates one new session (new units, new animal), adapts the model's embeddings to N of its trials
(unit identification) and trains a fresh model on the same N trials, then scores both on the test split.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..data.simulate import simulate_to_folder
from ..data.storage import StoredSession
from ..model.file import load_model_file
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
