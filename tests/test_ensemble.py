"""`spiketok train --ensemble K`: K models with the settings the recipe chose and seeds 0..K-1; `spiketok evaluate`
with all of them averages their predictions, which scores at least the mean of their own R² (per dimension: the
squared error of an average is at most the average squared error)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import cli

from spiketok.data.simulate import simulate_to_folder
from spiketok.data.storage import SessionDataset
from spiketok.evaluate.decode import average_decoded, decode_split
from spiketok.evaluate.metrics import r2_per_dim
from spiketok.train import load

# warmup_steps is left at auto: the recipe chooses it, and the second model must train with that choice
TRAIN = [
    "target=hand_velocity",
    "model.window=1",
    "max_steps=30",
    "steps_per_epoch=10",
    "batch_size=16",
    "eval_stride=0.5",
    "lr=0.003",
]

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # see conftest.py


@pytest.fixture(scope="module")
def ensemble(tmp_path_factory, one_torch_thread) -> dict:
    root = tmp_path_factory.mktemp("ensemble")
    simulate_to_folder(
        root / "sim", n_animals=1, sessions_per_animal=1, n_units=(24, 24), duration=40.0, seed=3, task="center_out"
    )
    code, text = cli("train", "--data", root / "sim", "--out", root / "run", "--ensemble", "2", "--no-progress", *TRAIN)
    assert code == 0, text
    return {
        "root": root,
        "text": text,
        "ckpts": [root / "run" / "model.ckpt", root / "run" / "ensemble" / "seed-1" / "model.ckpt"],
    }


def test_members_train_with_the_recipes_choices_and_their_own_seeds(ensemble: dict) -> None:
    first, second = (load(c) for c in ensemble["ckpts"])
    chosen = json.loads((ensemble["root"] / "run" / "recipe.json").read_text())["settings"]
    assert "warmup_steps" in chosen  # left at auto, chosen from the data
    assert first.meta.train.seed == 0 and second.meta.train.seed == 1
    assert second.meta.train.warmup_steps == first.meta.train.warmup_steps == chosen["warmup_steps"]
    assert not (ensemble["root"] / "run" / "ensemble" / "seed-1" / "pilots").exists()
    assert "ensemble member" in ensemble["text"] and str(ensemble["ckpts"][1]) in ensemble["text"].replace("\n", "")


def test_evaluate_averages_the_members(ensemble: dict, tmp_path: Path) -> None:
    data = ensemble["root"] / "sim"
    scores = []
    for k, ckpts in enumerate([ensemble["ckpts"][:1], ensemble["ckpts"][1:], ensemble["ckpts"]]):
        code, text = cli("evaluate", *ckpts, "--data", data, "--json", tmp_path / f"{k}.json")
        assert code == 0, text
        scores.append(json.loads((tmp_path / f"{k}.json").read_text()))
    assert scores[2]["ensemble"] == 2 and "ensemble" not in scores[0]
    session = next(iter(SessionDataset(data)))
    runs = [decode_split(load(c), session, "hand_velocity", "test") for c in ensemble["ckpts"]]
    assert np.abs(runs[0].y_pred - runs[1].y_pred).max() > 1e-3  # two seeds, two models
    both = average_decoded(runs)
    np.testing.assert_allclose(both.y_pred, (runs[0].y_pred + runs[1].y_pred) / 2)
    ours = np.array(scores[2]["sessions"][session.id]["r2_per_dim"])
    np.testing.assert_allclose(ours, r2_per_dim(both.y_true, both.y_pred, both.weights), atol=1e-9)
    singles = np.mean([s["sessions"][session.id]["r2_per_dim"] for s in scores[:2]], axis=0)
    assert (ours >= singles - 1e-9).all(), (ours, singles)
    print(
        f"R² per dimension: members {scores[0]['sessions'][session.id]['r2_per_dim']}, "
        f"{scores[1]['sessions'][session.id]['r2_per_dim']}; averaged {ours.tolist()}"
    )


def test_ensemble_refuses_init_and_mismatched_decodes(ensemble: dict) -> None:
    code, text = cli(
        "train",
        "--data",
        ensemble["root"] / "sim",
        "--out",
        ensemble["root"] / "other",
        "--ensemble",
        "2",
        "--init",
        ensemble["ckpts"][0],
        *TRAIN,
    )
    assert code == 2 and "does not combine with --init" in text
    session = next(iter(SessionDataset(ensemble["root"] / "sim")))
    model = load(ensemble["ckpts"][0])
    a, b = (decode_split(model, session, "hand_velocity", split) for split in ("test", "valid"))
    with pytest.raises(ValueError, match="cannot average"):
        average_decoded([a, b])


def test_predict_averages_the_members(ensemble: dict, tmp_path: Path) -> None:
    """`predict A B FILE` writes the mean of `predict A FILE` and `predict B FILE`; the NWB output names both."""
    session_file = next((ensemble["root"] / "sim").glob("*.h5"))
    preds = []
    for k, ckpts in enumerate([ensemble["ckpts"][:1], ensemble["ckpts"][1:], ensemble["ckpts"]]):
        code, text = cli("predict", *ckpts, session_file, "--out", tmp_path / f"{k}.npz")
        assert code == 0, text
        preds.append(np.load(tmp_path / f"{k}.npz")["predictions"])
    assert "the average of 2 models" in text
    assert np.nanmax(np.abs(preds[0] - preds[1])) > 1e-3
    np.testing.assert_allclose(preds[2], (preds[0] + preds[1]) / 2, rtol=1e-6, atol=1e-6)
    code, text = cli("predict", *ensemble["ckpts"], session_file, "--out", tmp_path / "both.nwb")
    assert code == 0, text
    from pynwb import NWBHDF5IO

    with NWBHDF5IO(str(tmp_path / "both.nwb"), "r") as io:
        nwb = io.read()
        series = nwb.processing["spiketok"]["hand_velocity"]
        assert "the average of the spiketok models" in series.description
        assert all(str(c.resolve()) in series.description for c in ensemble["ckpts"])
        np.testing.assert_allclose(series.data[:], preds[2], rtol=1e-5, atol=1e-5)
    code, text = cli("predict", ensemble["ckpts"][0], "--out", tmp_path / "x.npz")
    assert code == 2 and "then the recording" in text
