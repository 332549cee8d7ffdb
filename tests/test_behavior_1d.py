"""A 1-D behaviour (an NWB TimeSeries of shape (N,)) through every command: prepare, train, evaluate,
baseline, predict, replay and adapt. It is stored as (N, 1) and comes out as (N, 1) predictions."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
from typer.testing import CliRunner

import spiketok
from spiketok.cli import _register, app
from spiketok.data.nwb import read_nwb
from spiketok.data.storage import StoredSession

_register()
runner = CliRunner()
# 250 steps decode the track: test R² 0.95 to 0.96 measured over seeds 0-2 (300 steps: 0.93 to 0.97), in ~15 s
TRAIN = [
    "causal=true",
    "model.window=1",
    "max_steps=250",
    "steps_per_epoch=50",
    "batch_size=16",
    "warmup_steps=12",
    "eval_stride=1.0",
]
R2_BAR = 0.8  # above the ridge floor on this track (test_baselines below: 0.7)


def cli(*args: str | Path) -> str:
    """Run `spiketok ARGS` in this process; assert it succeeded; everything it printed."""
    result = runner.invoke(app, [str(a) for a in args])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    assert result.exit_code == 0, result.output
    return result.output


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # see conftest.py


@pytest.fixture(scope="module")
def run(track_1d, tmp_path_factory) -> dict:
    """Both 1-D files prepared, and a tiny causal model trained on `a` for 250 steps (all through the CLI).

    Chronological blocks (`--split blocks`): the test split is the 3rd and 8th of ten 4 s blocks, one on each half
    of the track (position is a sine of period 8 s). The interleaved split can deal both test blocks the same half,
    where R² says little (measured: 0.09 to 0.83 over seeds, with validation R² above 0.9)."""
    root = tmp_path_factory.mktemp("run_1d")
    cli("prepare", track_1d["a"], track_1d["b"], "--out", root / "prepared", "--split", "blocks")
    train_out = cli(
        "train",
        "--data",
        root / "prepared" / "track_a.h5",
        "--out",
        root / "run",
        "--accelerator",
        "cpu",
        "--no-progress",
        *TRAIN,
    )
    return {
        "root": root,
        "a": root / "prepared" / "track_a.h5",
        "b": root / "prepared" / "track_b.h5",
        "ckpt": root / "run" / "model.ckpt",
        "train_output": train_out,
    }


def test_the_fixture_is_one_dimensional(track_1d):
    with h5py.File(track_1d["a"], "r") as f:
        assert f["processing/behavior/pos/data"].shape == (1600,)


def test_prepare_stores_a_column(run, track_1d):
    session, _ = read_nwb(track_1d["a"])
    assert session.behavior("pos").values.shape == (1600, 1)
    s = StoredSession(run["a"])
    assert s.behavior_info["pos"]["dim"] == 1 and s.behavior_info["pos"]["dims"] == ["pos_0"]
    b = s.behavior("pos")
    assert b.values.shape == (1600, 1) and np.allclose(b.values[:, 0].max(), 90.0, atol=0.1)


def test_train_evaluate_predict(run, tmp_path):
    assert "done: 250 steps" in run["train_output"]
    out = cli(
        "evaluate", run["ckpt"], "--data", run["a"], "--json", tmp_path / "ev.json", "--plots", tmp_path / "plots"
    )
    res = json.loads((tmp_path / "ev.json").read_text())
    r = res["sessions"]["track_a"]
    assert r["dims"] == ["pos_0"] and len(r["r2_per_dim"]) == 1
    assert r["r2"] > R2_BAR, r  # position decoded from the place cells, not merely a finite number
    assert (tmp_path / "plots" / "traces_track_a.png").stat().st_size > 10_000
    assert "pos_0=" in out
    cli("predict", run["ckpt"], run["a"], "--out", tmp_path / "pred.npz")
    pred = np.load(tmp_path / "pred.npz")
    assert pred["predictions"].shape == (1600, 1) and list(pred["dims"]) == ["pos_0"]
    assert np.isfinite(pred["predictions"]).all()
    cli("predict", run["ckpt"], run["a"], "--out", tmp_path / "pred.csv")
    header, *rows = (tmp_path / "pred.csv").read_text().splitlines()
    assert header == "timestamp,pos_0" and len(rows) == 1600
    assert np.allclose([float(r.split(",")[1]) for r in rows], pred["predictions"][:, 0], atol=1e-5)


def test_replay(run, tmp_path):
    out = cli("replay", run["ckpt"], run["a"], "--every", "0.05", "--json", tmp_path / "replay.json")
    s = json.loads((tmp_path / "replay.json").read_text())
    assert s["n_decodes"] > 50 and np.isfinite(s["r2"]) and "R² (pos)" in out


def test_adapt_to_a_new_1d_session(run, tmp_path):
    out = cli(
        "adapt",
        run["ckpt"],
        run["b"],
        "--mode",
        "finetune",
        "--train-seconds",
        20,
        "--out",
        tmp_path / "adapted.ckpt",
        "fixed_steps=5",
        "max_steps=5",
        "batch_size=8",
    )
    assert "R² on track_b's test split" in out
    model = spiketok.load(tmp_path / "adapted.ckpt")
    assert "track_b" in model.session_emb.ids
    cli("predict", tmp_path / "adapted.ckpt", run["b"], "--out", tmp_path / "b.npz")
    assert np.load(tmp_path / "b.npz")["predictions"].shape == (1600, 1)


@pytest.mark.parametrize("model,floor", [("ridge", 0.7), ("mlp", 0.5), ("gru", 0.4)])
def test_baselines(run, tmp_path, model, floor):
    out = cli("baseline", "--model", model, "--data", run["a"], "--max-steps", 150, "--json", tmp_path / "b.json")
    res = json.loads((tmp_path / "b.json").read_text())
    r = res["sessions"]["track_a"]
    assert r["dims"] == ["pos_0"] and len(r["r2_per_dim"]) == 1
    assert r["r2"] > floor, r  # place cells on a track: position is decodable
    assert r["fit"]["lags"] in ("causal", "centred") and "track_a" in out
