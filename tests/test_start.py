"""`spiketok train` with init: auto tries the shipped model as a start beside scratch and keeps the better."""

from __future__ import annotations

import json

import pytest
from conftest import cli

from spiketok.adapt.start import why_not_shipped
from spiketok.data.simulate import simulate_to_folder
from spiketok.model.file import read_model_file
from spiketok.train.config import load_config

pytestmark = pytest.mark.usefixtures("one_torch_thread")
SHORT = [
    "target=hand_velocity",
    "max_steps=40",
    "steps_per_epoch=10",
    "batch_size=8",
    "model.window=auto",
    "init_unit_id_restarts=1",
    "init_lr_factor=1",
    "eval_stride=1.0",
]


def test_the_shipped_start_is_tried_only_where_it_keeps_the_users_settings():
    assert why_not_shipped(load_config("tiny")) is None
    assert "model settings" in why_not_shipped(load_config("tiny", ["model.window=2"]))
    assert "model settings" in why_not_shipped(load_config("poyo-1.3M", ["init=auto"]))
    assert "causal" in why_not_shipped(load_config("tiny", ["causal=true"]))
    assert "--ensemble" in why_not_shipped(load_config("tiny"), ensemble=3)
    assert load_config("poyo-1.3M").init is None and load_config("tiny").init == "auto"


@pytest.mark.slow
def test_default_train_compares_scratch_with_the_shipped_start_and_keeps_the_better(tmp_path):
    simulate_to_folder(
        tmp_path / "sim", n_animals=1, sessions_per_animal=1, n_units=(16, 20), duration=60.0, seed=4, task="center_out"
    )
    run = tmp_path / "run"
    code, out = cli("train", "--data", tmp_path / "sim", "--out", run, "--accelerator", "cpu", "--no-progress", *SHORT)
    assert code == 0, out
    choice = json.loads((run / "start.json").read_text())
    scores = choice["val_r2"]
    assert choice["start"] == "pretrained:primate-reaching" and set(scores) == {"scratch", "pretrained"}
    kept = max(scores, key=lambda arm: scores[arm])
    assert choice["kept"] == kept
    recipe = json.loads((run / "recipe.json").read_text())
    assert recipe["settings"]["init"] == ("pretrained:primate-reaching" if kept == "pretrained" else "none")
    assert f"{scores['pretrained']:.3f} starting from pretrained:primate-reaching" in recipe["reasons"]["init"]
    assert "init = " in out and "validation R²" in out  # the closing summary says which start and why
    _, meta = read_model_file(run / "model.ckpt")
    _, arm_meta = read_model_file(run / kept / "model.ckpt")
    assert meta.step == arm_meta.step and meta.extra["recipe"]["settings"]["init"] == recipe["settings"]["init"]
    shipped_sessions = set(read_model_file(run / "pretrained" / "model.ckpt")[1].session_ids)
    assert {"m1_mihi_2014-03-03", "sim_a0_s0"} <= shipped_sessions  # fine-tuned from the shipped model
    assert set(read_model_file(run / "scratch" / "model.ckpt")[1].session_ids) == {"sim_a0_s0"}
    # a finished run resumed: both arms read back, nothing trains again
    before = {p: p.stat().st_mtime for p in run.rglob("model.ckpt") if "checkpoints" not in p.parts}
    code, out = cli(
        "train", "--data", tmp_path / "sim", "--out", run, "--resume", "--accelerator", "cpu", "--no-progress", *SHORT
    )
    assert code == 0, out
    assert all(p.stat().st_mtime == t for p, t in before.items() if p.parent != run)
    # init=none trains from scratch only, in the run folder itself
    code, out = cli(
        "train",
        "--data",
        tmp_path / "sim",
        "--out",
        tmp_path / "plain",
        "--accelerator",
        "cpu",
        "--no-progress",
        *SHORT,
        "init=none",
    )
    assert code == 0, out
    assert (tmp_path / "plain" / "checkpoints").is_dir() and not (tmp_path / "plain" / "scratch").exists()
    # init: auto where the shipped start would not keep the user's settings: scratch alone, and recipe.json says why
    code, out = cli(
        "train",
        "--data",
        tmp_path / "sim",
        "--out",
        tmp_path / "causal",
        "--accelerator",
        "cpu",
        "--no-progress",
        *SHORT,
        "causal=true",
    )
    assert code == 0, out
    recipe = json.loads((tmp_path / "causal" / "recipe.json").read_text())
    assert recipe["settings"]["init"] == "none" and not (tmp_path / "causal" / "scratch").exists()
    assert recipe["reasons"]["init"].startswith("from scratch: causal=true")
