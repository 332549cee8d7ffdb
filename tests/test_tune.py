"""`spiketok tune` on a tiny simulated session: study, best.yaml that trains, resume, valid split only, pruning."""

from __future__ import annotations

import json
import math
import shutil
import time
from pathlib import Path

import numpy as np
import optuna
import pytest
from conftest import cli, with_scrambled_test_split  # noqa: E402  (cli: runs `spiketok ARGS` in this process)

from spiketok.cli import _register
from spiketok.data.simulate import simulate_to_folder
from spiketok.data.storage import SessionDataset
from spiketok.train.config import load_config
from spiketok.train.tune import STUDY, base_params, tune, with_values

_register()
# a handful of steps of a small model: every trial takes a few seconds on a loaded CPU
BASE = [
    "target=hand_velocity",
    "max_steps=4",
    "steps_per_epoch=2",
    "batch_size=4",
    "warmup_steps=1",
    "eval_stride=1.0",
    "model.dim=32",
    "model.depth=1",
]
BUDGET = 0.75  # minutes


def _study(run: Path) -> optuna.Study:
    return optuna.load_study(study_name=STUDY, storage=f"sqlite:///{run / 'optuna.db'}")


@pytest.fixture(scope="module")
def sim(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tune")
    simulate_to_folder(
        root / "sim", n_animals=1, sessions_per_animal=1, n_units=(16, 16), duration=40.0, seed=3, task="center_out"
    )
    return root / "sim"


@pytest.fixture(scope="module")
def tuned(sim: Path) -> dict:
    """`spiketok tune` with 3 trials in a budget of 45 s."""
    run = sim.parent / "run"
    t0 = time.monotonic()
    code, out = cli(
        "tune", "--data", sim, "--out", run, "--budget-minutes", BUDGET, "--trials", 3, "--accelerator", "cpu", *BASE
    )
    seconds = time.monotonic() - t0
    assert code == 0, out
    return {"run": run, "out": out, "seconds": seconds}


def test_tune_writes_the_study_best_yaml_plot_and_summary(tuned: dict) -> None:
    run, out = tuned["run"], tuned["out"]
    # one training run is allowed to overrun its share by its setup and last validation, not much more
    assert tuned["seconds"] < BUDGET * 60 + 25, tuned["seconds"]
    trials = _study(run).trials
    assert [t.number for t in trials] == [0, 1, 2]
    assert all(t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED) for t in trials)
    for t in trials:
        assert t.intermediate_values and all(math.isfinite(v) for v in t.intermediate_values.values())
        assert max(t.intermediate_values) <= 4  # reported at each validation (every 2 steps, or when time is up)
    # trial 0 is the base config itself
    base = load_config("tiny", BASE)
    assert trials[0].params == base_params(base)
    assert len({json.dumps(t.params, sort_keys=True) for t in trials}) == 3
    for i in range(3):
        assert f"trial {i}: " in out
    assert "best config" in out and "spiketok train --config" in out

    summary = json.loads((run / "trials.json").read_text())
    best = summary["best"]
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert best["val_r2"] == pytest.approx(max(t.value for t in complete))
    assert best["trial"] == max(complete, key=lambda t: t.value).number
    for t in complete:  # a trial's score is the best val_r2 it reported
        assert t.value == pytest.approx(max(t.intermediate_values.values()))
    rows = (run / "trials.csv").read_text().splitlines()
    assert rows[0].startswith("trial,state,val_r2") and len(rows) == 4

    # best.yaml: the base preset plus the chosen values, read back by load_config
    text = (run / "best.yaml").read_text()
    assert "base: tiny" in text
    assert load_config(run / "best.yaml") == with_values(base, best["values"])
    chosen = best["values"]
    assert chosen["model.t_max"] >= 2 * chosen["model.window"]
    assert chosen["model.window"] / chosen["model.latent_step"] in (4, 8, 16)

    import matplotlib.image

    png = run / "search.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    pixels = matplotlib.image.imread(png)[..., :3]
    assert pixels.std() > 0.05 and len(np.unique(pixels.reshape(-1, 3), axis=0)) > 20
    # each trial keeps its logs; only the best trial keeps a model file
    assert sorted(p.name for p in (run / "trials").iterdir()) == ["0000", "0001", "0002"]
    kept = [p.parent.name for p in (run / "trials").glob("*/model.ckpt")]
    assert kept == [f"{best['trial']:04d}"]
    assert not list((run / "trials").glob("*/checkpoints"))


def test_best_yaml_trains_with_the_chosen_values(tuned: dict, sim: Path) -> None:
    run = tuned["run"]
    chosen = json.loads((run / "trials.json").read_text())["best"]["values"]
    code, out = cli(
        "train",
        "--config",
        run / "best.yaml",
        "--data",
        sim,
        "--out",
        run.parent / "retrain",
        "--accelerator",
        "cpu",
        "--no-progress",
    )
    assert code == 0, out
    from spiketok.train.checkpoint import load

    model = load(run.parent / "retrain" / "model.ckpt")
    c = model.config
    assert (c.window, c.latent_step, c.t_max, c.dim, c.depth) == (
        chosen["model.window"],
        chosen["model.latent_step"],
        chosen["model.t_max"],
        chosen["model.dim"],
        chosen["model.depth"],
    )
    assert c.dropout == pytest.approx(chosen["model.dropout"])
    hp = model.meta.train
    assert hp.lr == pytest.approx(chosen["lr"]) and hp.weight_decay == pytest.approx(chosen["weight_decay"])
    assert hp.max_steps == 4 and hp.target == "hand_velocity"
    assert not hp.get("max_minutes")  # the trials' time shares do not leak into the config


def test_rerunning_the_command_resumes_the_study(tuned: dict, sim: Path) -> None:
    run = sim.parent / "run-resumed"
    shutil.copytree(tuned["run"], run)
    before = _study(run).trials
    code, out = cli(
        "tune", "--data", sim, "--out", run, "--budget-minutes", 0.4, "--trials", 1, "--accelerator", "cpu", *BASE
    )
    assert code == 0, out
    after = _study(run).trials
    assert [t.number for t in after] == [0, 1, 2, 3]
    assert [t.params for t in after[:3]] == [t.params for t in before]
    assert after[3].params not in [t.params for t in before]  # the sampler moves on, it does not repeat
    assert "the study holds 4" in out
    assert len((run / "trials.csv").read_text().splitlines()) == 5

    # a study of other settings is not mixed in
    code, out = cli(
        "tune",
        "--data",
        sim,
        "--out",
        run,
        "--budget-minutes",
        0.4,
        "--trials",
        1,
        "--accelerator",
        "cpu",
        *BASE,
        "batch_size=6",
    )
    assert code == 2 and "error: " in out and "base config" in out
    assert len(_study(run).trials) == 4


def test_tuning_scores_come_from_the_valid_split_only(sim: Path) -> None:
    """The same search on a copy whose test split is scrambled reports the very same val R² values;
    the best models' test R² shows how different that test split is."""
    scrambled = with_scrambled_test_split(sim, sim.parent / "scrambled")
    runs = {}
    for name, folder in (("original", sim), ("scrambled", scrambled)):
        runs[name] = tune(
            SessionDataset(folder), sim.parent / f"valid-only-{name}", 2.0, overrides=BASE, trials=1, accelerator="cpu"
        )
    a, b = runs["original"], runs["scrambled"]
    assert [r.steps for r in a.rows] == [r.steps for r in b.rows] == [4]  # not cut by time
    assert [r.values for r in a.rows] == [r.values for r in b.rows]
    for ra, rb in zip(a.rows, b.rows):
        assert ra.intermediate.keys() == rb.intermediate.keys()
        np.testing.assert_allclose(list(ra.intermediate.values()), list(rb.intermediate.values()), rtol=1e-5, atol=1e-6)

    from spiketok.evaluate.report import evaluate
    from spiketok.train.checkpoint import load

    scores = {}
    for name, folder in (("original", sim), ("scrambled", scrambled)):
        model = load(next((sim.parent / f"valid-only-{name}" / "trials").glob("*/model.ckpt")))
        scores[name] = {
            split: evaluate(model, SessionDataset(folder), split, progress=False)[0]["mean_r2"]
            for split in ("valid", "test")
        }
    assert scores["original"]["valid"] == pytest.approx(scores["scrambled"]["valid"], abs=1e-5)
    assert scores["original"]["test"] - scores["scrambled"]["test"] > 0.5, scores


def test_the_pruner_stops_a_trial_with_an_absurd_learning_rate(sim: Path) -> None:
    base = load_config("tiny", BASE + ["max_steps=6"])
    good = base_params(base)
    result = tune(
        SessionDataset(sim),
        sim.parent / "pruned",
        2.0,
        overrides=BASE + ["max_steps=6"],
        trials=3,
        accelerator="cpu",
        startup_trials=2,
        enqueue=[good, dict(good, lr=50.0)],
    )
    states = [r.state for r in result.rows]
    assert states == ["complete", "complete", "pruned"], [(r.state, r.intermediate) for r in result.rows]
    bad = result.rows[2]
    assert bad.values["lr"] == 50.0
    assert bad.last_step == 4 and bad.steps == 4  # stopped at the first validation the pruner may judge (of 2, 4, 6)
    median = np.median([r.intermediate[4] for r in result.rows[:2]])
    assert not bad.intermediate[4] >= median
    assert result.best.number in (0, 1)
