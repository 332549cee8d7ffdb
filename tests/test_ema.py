"""The weight average (ema) in a real short training run: early validation checks see the model as it trains."""

import csv

import pytest

from spiketok.data.simulate import simulate_to_folder
from spiketok.data.storage import SessionDataset
from spiketok.train.config import load_config
from spiketok.train.run import train

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # see conftest.py


def val_r2_curve(run_dir) -> list[float]:
    with open(run_dir / "logs" / "metrics.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r.get("val_r2")]
    return [float(r["val_r2"]) for r in sorted(rows, key=lambda r: int(r["step"]))]


def test_validation_during_warm_up_is_not_frozen_at_the_start(tmp_path):
    simulate_to_folder(
        tmp_path / "sim", n_animals=1, sessions_per_animal=1, n_units=(16, 20), duration=40.0, seed=5, task="center_out"
    )
    cfg = load_config(
        "tiny",
        [
            "target=hand_velocity",
            "model.window=1",
            "max_steps=30",
            "steps_per_epoch=10",
            "batch_size=8",
            "warmup_steps=100",
            "ema=0.995",
            "patience=null",
            "eval_stride=1.0",
        ],
    )
    train(SessionDataset(tmp_path / "sim"), cfg, tmp_path / "run", accelerator="cpu", progress=False)
    curve = val_r2_curve(tmp_path / "run")
    assert len(curve) == 3  # checks at steps 10, 20, 30, all inside the 100-step warm-up
    # an average that starts only after warm-up validated the untouched start three times: one value
    assert len(set(curve)) == 3, curve
    assert curve[-1] > curve[0]  # the model learns during warm-up and validation sees it
