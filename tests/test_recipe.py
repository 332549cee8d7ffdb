"""The default recipe: settings left at "auto" are chosen from the data, recorded, and never override a user's."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

import spiketok
from spiketok.data.simulate import simulate_to_folder
from spiketok.data.storage import SessionDataset
from spiketok.schema import TrainConfig
from spiketok.train.config import load_config
from spiketok.train.recipe import PilotScore, RecipeChoice, choose_window, resolve_schedule, window_candidates
from spiketok.train.run import train

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # see conftest.py


@pytest.fixture(scope="module")
def sim(tmp_path_factory) -> SessionDataset:
    root = tmp_path_factory.mktemp("recipe")
    simulate_to_folder(
        root, n_animals=1, sessions_per_animal=1, n_units=(16, 20), duration=60.0, seed=3, task="center_out"
    )
    return SessionDataset(root)


def regular_session(
    path: Path, train_intervals: int, interval: float, n_units: int = 10, rate: float = 100.0
) -> SessionDataset:
    """A session whose train split is `train_intervals` back-to-back intervals of `interval` s, and whose `n_units`
    units fire exactly `rate` Hz each, evenly interleaved (no spike on an interval's edge): `n_units * rate` spikes
    in every second of it, so the recipe's inputs are known exactly."""
    from spiketok.data.session import Behavior, Intervals, Session
    from spiketok.data.storage import write_session

    n = n_units * rate
    duration = train_intervals * interval
    end = duration + 2.0  # a valid and a test second after the train split
    times = (np.arange(int(end * n)) + 0.5) / n
    units = np.arange(len(times)) % n_units
    ts = np.arange(0.0, end, 0.1)
    starts = np.arange(train_intervals) * interval
    session = Session(
        "regular",
        times,
        units,
        [f"u{k}" for k in range(n_units)],
        behaviors={"hand_velocity": Behavior("hand_velocity", ts, np.stack([ts, -ts], 1))},
        splits={
            "train": Intervals(starts, starts + interval),
            "valid": Intervals([duration], [duration + 1.0]),
            "test": Intervals([duration + 1.0], [end]),
        },
        start=0.0,
        end=end,
    )
    write_session(session, path / "regular.h5")
    return SessionDataset(path)


def schedule(data: SessionDataset, *settings: str) -> tuple[TrainConfig, RecipeChoice]:
    cfg = load_config("tiny", ["target=hand_velocity", "model.window=1", *settings])
    choice = RecipeChoice()
    cfg = resolve_schedule(cfg, data, {"regular": "hand_velocity"}, choice)
    return cfg, choice


def test_steps_follow_the_amount_of_training_data_by_known_answers(tmp_path):
    """Known answers, worked by hand. 600 s of training data in 10 s intervals, 10 units at 100 Hz, a 1 s window:
    1,000 spikes + 2 x 10 start/end tokens = 1,020 tokens a window, so 50,000 / 1,020 = 49.0 -> batch 49;
    200 passes x 600 s / (49 x 1 s) = 2,449 -> 2,400 steps (to the hundred); a check every 40 x 600 / 49 = 490
    steps, capped at 100; warm-up 2,400 / 20 = 120; patience a quarter of 24 checks = 6."""
    cfg, choice = schedule(regular_session(tmp_path / "big", 60, 10.0))
    assert all(k in choice.settings for k in ("batch_size", "max_steps", "steps_per_epoch", "warmup_steps", "patience"))
    assert (cfg.batch_size, cfg.max_steps, cfg.steps_per_epoch, cfg.warmup_steps, cfg.patience) == (
        49,
        2400,
        100,
        120,
        6,
    ), choice.summary()
    assert "1,020 per 1 s window" in choice.reasons["batch_size"] and "600 s train split" in choice.reasons["max_steps"]
    # 42 trials of 0.5 s (21 s), the same units: a window reaches only 0.5 s, 500 + 20 = 520 tokens, 50,000 / 520 = 96
    # -> batch 64 (the ceiling); 200 x 21 / (64 x 0.5) = 131 -> 100 -> 1,000 steps (the floor); a check every
    # 40 x 21 / 32 = 26 steps; warm-up 50; patience a quarter of 1,000 / 26 = 38.5 checks = 10
    cfg, choice = schedule(regular_session(tmp_path / "short", 42, 0.5))
    assert (cfg.batch_size, cfg.max_steps, cfg.steps_per_epoch, cfg.warmup_steps, cfg.patience) == (
        64,
        1000,
        26,
        50,
        10,
    ), choice.summary()
    assert "40 passes" in choice.reasons["steps_per_epoch"] and "tokens" in choice.reasons["batch_size"]


def test_user_settings_win_over_the_recipe(sim):
    given = load_config("tiny", ["target=hand_velocity", "model.window=1", "max_steps=77", "batch_size=5"])
    kept = RecipeChoice()
    given = resolve_schedule(given, sim, {s.id: "hand_velocity" for s in sim}, kept)
    assert given.max_steps == 77 and given.batch_size == 5 and "max_steps" not in kept.settings
    assert "batch_size" not in kept.settings
    assert given.warmup_steps == 10  # 5% of 77, at least 10
    small = load_config("tiny", ["target=hand_velocity", "model.window=1", "batch_size=2"])
    small = resolve_schedule(small, sim, {s.id: "hand_velocity" for s in sim}, RecipeChoice())
    assert small.steps_per_epoch == 100  # 2 windows a step: 40 passes take more than 100 steps, the ceiling


def test_window_is_chosen_by_pilots_on_validation_and_recorded(sim, tmp_path):
    cfg = load_config(
        "tiny", ["target=hand_velocity", "max_steps=20", "steps_per_epoch=10", "batch_size=8", "eval_stride=1.0"]
    )
    assert cfg.model.window == "auto"
    result = train(sim, cfg, tmp_path / "run", accelerator="cpu", progress=False)
    recipe = json.loads((tmp_path / "run" / "recipe.json").read_text())
    candidates = [f"{w:g}" for w in window_candidates(sim)]
    assert list(recipe["pilots"]) == candidates and len(candidates) >= 3
    curves = {}
    for w in candidates:  # each pilot is a real short run whose validation R² at each check is recorded
        score = json.loads((tmp_path / "run" / "pilots" / f"window-{w}" / "score.json").read_text())
        assert score["val_r2"] == recipe["pilots"][w] == max(score["val_r2_curve"]) and score["steps"] == 3  # 15% of 20
        assert len(score["val_r2_curve"]) == 3  # a check every step (a quarter of 3 steps, at least 1)
        curves[w] = PilotScore(tuple(score["val_r2_curve"]))
    best = f"{choose_window(curves)[0]:g}"  # the rule itself is tested on known curves in test_window_choice.py
    model = spiketok.load(result.checkpoint)
    assert model.config.window == float(best) == recipe["settings"]["model.window"]
    assert model.meta.extra["recipe"]["settings"]["model.window"] == float(best)
    assert model.meta.train.model.window == float(best) and model.meta.train.max_steps == 20
    assert result.recipe.summary()[0].startswith(f"model.window = {float(best)}")


def test_early_stopping_ends_a_run_whose_validation_r2_stops_improving(sim, tmp_path):
    # lr 0: the weights never move, so validation R² never improves after the first check
    cfg = load_config(
        "tiny",
        [
            "target=hand_velocity",
            "model.window=1",
            "max_steps=200",
            "steps_per_epoch=5",
            "batch_size=4",
            "warmup_steps=1",
            "lr=0",
            "patience=2",
            "eval_stride=1.0",
        ],
    )
    result = train(sim, cfg, tmp_path / "run", accelerator="cpu", progress=False)
    assert result.steps == 15  # checks at 5 (best), 10 and 15 (no better): stop
    rows = [r for r in csv.DictReader(open(tmp_path / "run" / "logs" / "metrics.csv")) if r.get("val_r2")]
    assert len(rows) == 3 and len({r["val_r2"] for r in rows}) == 1


def test_short_trials_leave_one_window_and_no_pilot(sim, tmp_path):
    """Trials under 0.5 s (the issue's macaque reaching task: 0.45 s) leave one candidate window: it is taken
    without running a pilot, and the summary says why."""
    from spiketok.data.session import Intervals
    from spiketok.data.storage import read_session, write_session

    session = read_session(next(iter(sim)).path)
    for name, iv in session.splits.items():  # every interval cut to its first 0.4 s
        session.splits[name] = Intervals(iv.start, iv.start + 0.4)
    path = write_session(session, tmp_path / "short" / "short.h5")
    short = SessionDataset(path.parent)
    assert window_candidates(short) == [0.5]
    cfg = load_config(
        "tiny", ["target=hand_velocity", "max_steps=10", "steps_per_epoch=5", "batch_size=8", "eval_stride=0.2"]
    )
    result = train(short, cfg, tmp_path / "run", accelerator="cpu", progress=False)
    assert not (tmp_path / "run" / "pilots").exists()
    recipe = json.loads((tmp_path / "run" / "recipe.json").read_text())
    assert recipe["pilots"] == {} and recipe["settings"]["model.window"] == 0.5
    assert "the only candidate" in recipe["reasons"]["model.window"] and "0.4 s" in recipe["reasons"]["model.window"]
    assert spiketok.load(result.checkpoint).config.window == 0.5
