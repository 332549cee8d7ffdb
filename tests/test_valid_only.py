"""Every automatic choice of `spiketok train` reads the train and valid splits only: on a copy whose test split
is scrambled (other spikes, targets far off) the window pilots, the start (scratch or the shipped model), unit
identification's restarts, the fine-tuning rate and the ensemble come out the same."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import cli, with_scrambled_test_split

from spiketok.data.simulate import simulate_to_folder

pytestmark = pytest.mark.usefixtures("one_torch_thread")
SHORT = [
    "target=hand_velocity",
    "max_steps=20",
    "steps_per_epoch=10",
    "batch_size=8",
    "eval_stride=1.0",
    "init_unit_id_restarts=2",
]  # window, start and fine-tuning rate left at auto: all chosen from the data


@pytest.fixture(scope="module")
def copies(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("valid-only")
    simulate_to_folder(
        root / "original",
        n_animals=1,
        sessions_per_animal=1,
        n_units=(16, 20),
        duration=60.0,
        seed=6,
        task="center_out",
    )
    scrambled = with_scrambled_test_split(root / "original", root / "scrambled")
    return {"original": root / "original", "scrambled": scrambled}


def read(path: Path) -> dict:
    return json.loads(path.read_text())


def same(a, b) -> bool:
    """Equal, numbers to 1e-5 (the two runs see the same train and valid data: their arithmetic is the same)."""
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, float) and isinstance(b, float):
        return abs(a - b) <= 1e-5 * max(1.0, abs(a))
    return a == b


@pytest.mark.slow
def test_pilots_start_unit_id_and_learning_rate_are_chosen_without_the_test_split(copies, tmp_path):
    runs = {}
    for name, data in copies.items():
        runs[name] = tmp_path / name
        code, out = cli("train", "--data", data, "--out", runs[name], "--accelerator", "cpu", "--no-progress", *SHORT)
        assert code == 0, out
    a, b = runs["original"], runs["scrambled"]
    pilots = read(a / "scratch" / "recipe.json")
    assert len(pilots["pilots"]) >= 2 and same(pilots, read(b / "scratch" / "recipe.json"))  # the window pilots
    assert same(read(a / "start.json"), read(b / "start.json"))  # scratch or the shipped model, by validation R²
    finetune = read(a / "pretrained" / "finetune.json")  # unit identification's starts, the lr factor chosen
    assert len(finetune["unit_id"]["sim_a0_s0"]["val_loss"]) == 2 and set(finetune["val_r2"]) == {"lr-x0.1", "lr-x1"}
    assert same(finetune, read(b / "pretrained" / "finetune.json"))
    assert same(read(a / "recipe.json"), read(b / "recipe.json"))
    # the test splits do differ: the same model scores far worse on the scrambled one
    scores = {}
    for name, data in copies.items():
        code, out = cli("evaluate", a / "model.ckpt", "--data", data, "--json", tmp_path / f"{name}.json")
        assert code == 0, out
        scores[name] = read(tmp_path / f"{name}.json")["mean_r2"]
    assert scores["original"] - scores["scrambled"] > 0.5, scores


@pytest.mark.slow
def test_ensemble_members_are_chosen_without_the_test_split(copies, tmp_path):
    results = {}
    for name, data in copies.items():
        code, out = cli(
            "train",
            "--data",
            data,
            "--out",
            tmp_path / name,
            "--accelerator",
            "cpu",
            "--no-progress",
            "--ensemble",
            "2",
            *SHORT,
        )
        assert code == 0, out
        assert "init = none: from scratch: --ensemble trains its members from scratch" in " ".join(out.split())
        run = tmp_path / name
        results[name] = [read(run / "recipe.json"), read(run / "ensemble" / "seed-1" / "recipe.json")]
    assert len(results["original"][0]["pilots"]) >= 2  # the first member's pilots chose the window for both
    assert same(results["original"], results["scrambled"])
