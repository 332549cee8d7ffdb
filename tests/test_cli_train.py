"""`spiketok train`, `evaluate` and `predict` on small simulated data, and their error messages."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import cli  # noqa: E402  (runs `spiketok ARGS` in this process)

from spiketok.cli import _register
from spiketok.data.simulate import simulate_to_folder
from spiketok.data.storage import SessionDataset

_register()
TRAIN = [
    "target=hand_velocity",
    "model.window=1",
    "max_steps=12",
    "steps_per_epoch=6",
    "batch_size=8",
    "warmup_steps=3",
    "eval_stride=1.0",
]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict[str, Path]:
    """A run folder trained through `spiketok train` on two simulated sessions."""
    root = tmp_path_factory.mktemp("cli")
    simulate_to_folder(
        root / "sim", n_animals=2, sessions_per_animal=1, n_units=(16, 24), duration=50.0, seed=5, task="center_out"
    )
    code, out = cli(
        "train", "--data", root / "sim", "--out", root / "run", "--accelerator", "cpu", "--no-progress", *TRAIN
    )
    assert code == 0, out
    return {"root": root, "data": root / "sim", "run": root / "run", "train_output": out}


def test_train_writes_checkpoints_logs_and_a_summary(trained: dict[str, Path]) -> None:
    run, out = trained["run"], trained["train_output"]
    assert "done: 12 steps" in out
    for shown in ("model.ckpt", "checkpoints", "metrics.csv", "tensorboard --logdir", "spiketok evaluate"):
        assert shown in out
    assert (run / "model.ckpt").stat().st_size > 10_000
    assert (run / "checkpoints" / "last.ckpt").exists()
    assert len(list((run / "checkpoints").glob("best-*.ckpt"))) == 1
    header, *rows = (run / "logs" / "metrics.csv").read_text().splitlines()
    assert {"epoch", "step", "train_loss", "val_loss", "val_r2"} <= set(header.split(","))
    val = [r for r in rows if r.split(",")[header.split(",").index("val_loss")]]
    assert len(val) == 2  # one validation per epoch

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run / "tb"))
    events.Reload()
    tags = events.Tags()["scalars"]
    assert {"train_loss", "val_loss", "val_r2"} <= set(tags)
    assert [e.step for e in events.Scalars("val_loss")] == [5, 11]


def test_evaluate_writes_json_and_plots(trained: dict[str, Path]) -> None:
    out_dir = trained["root"] / "eval"
    code, out = cli(
        "evaluate",
        trained["run"] / "model.ckpt",
        "--data",
        trained["data"],
        "--json",
        out_dir / "results.json",
        "--plots",
        out_dir / "plots",
    )
    assert code == 0, out
    assert "R² on the test split" in out and "mean" in out
    results = json.loads((out_dir / "results.json").read_text())
    sessions = {s.id for s in SessionDataset(trained["data"])}
    assert set(results["sessions"]) == sessions
    for r in results["sessions"].values():
        assert isinstance(r["r2"], float) and len(r["r2_per_dim"]) == 2
        assert all(isinstance(v, float) for v in r["r2_per_dim"])
        assert r["r2"] == pytest.approx(np.mean(r["r2_per_dim"]))
    assert results["mean_r2"] == pytest.approx(np.mean([r["r2"] for r in results["sessions"].values()]))

    import matplotlib.image

    pngs = sorted((out_dir / "plots").glob("*.png"))
    assert {p.name for p in pngs} == {"r2_per_session.png"} | {f"traces_{s}.png" for s in sessions}
    for png in pngs:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
        pixels = matplotlib.image.imread(png)[..., :3]
        assert pixels.std() > 0.05, f"{png.name} looks blank"
        assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 20


def test_predict_writes_npz_and_csv_at_the_behaviour_timestamps(trained: dict[str, Path]) -> None:
    session = next(iter(SessionDataset(trained["data"])))
    times = session.behavior("hand_velocity").timestamps
    npz, csv = trained["root"] / "pred" / "x.npz", trained["root"] / "pred" / "x.csv"
    code, out = cli("predict", trained["run"] / "model.ckpt", session.path, "--out", npz)
    assert code == 0, out
    assert f"wrote {len(times)} predictions of hand_velocity" in out
    with np.load(npz) as z:
        assert z["predictions"].shape == (len(times), 2)
        np.testing.assert_array_equal(z["timestamps"], times)
        assert np.isfinite(z["predictions"]).all()
        assert str(z["session"]) == session.id and str(z["target"]) == "hand_velocity"
        predictions = z["predictions"]
    code, out = cli("predict", trained["run"] / "model.ckpt", session.path, "--out", csv)
    assert code == 0, out
    lines = csv.read_text().splitlines()
    assert lines[0] == "timestamp,hand_velocity_0,hand_velocity_1"
    table = np.loadtxt(csv, delimiter=",", skiprows=1)
    assert table.shape == (len(times), 3)
    np.testing.assert_allclose(table[:, 0], times, atol=1e-6)
    np.testing.assert_allclose(table[:, 1:], predictions, atol=1e-5, rtol=1e-5)

    code, out = cli("predict", trained["run"] / "model.ckpt", session.path, "--out", trained["root"] / "x.txt")
    assert code == 2 and "error: " in out and ".npz or .csv" in out


def test_predict_matches_what_evaluate_decodes(trained: dict[str, Path]) -> None:
    """The same model on the same span gives the same numbers through `predict` and `evaluate`."""
    from conftest import whole_span_copy

    from spiketok.evaluate.metrics import r2_per_dim
    from spiketok.evaluate.report import evaluate
    from spiketok.train.checkpoint import load

    stored = next(iter(SessionDataset(trained["data"])))
    path = whole_span_copy(stored, trained["root"] / "whole" / stored.path.name)
    npz = trained["root"] / "whole.npz"
    code, out = cli("predict", trained["run"] / "model.ckpt", path, "--out", npz)
    assert code == 0, out
    code, out = cli("evaluate", trained["run"] / "model.ckpt", "--data", path, "--json", trained["root"] / "whole.json")
    assert code == 0, out
    _, decoded = evaluate(load(trained["run"] / "model.ckpt"), SessionDataset(path), "test", progress=False)
    d = decoded[stored.id]
    with np.load(npz) as z:
        np.testing.assert_array_equal(z["timestamps"], d.timestamps)
        np.testing.assert_allclose(z["predictions"], d.y_pred, rtol=1e-6, atol=1e-6)
        r2 = r2_per_dim(d.y_true, z["predictions"], d.weights)
    reported = json.loads((trained["root"] / "whole.json").read_text())["sessions"][stored.id]["r2_per_dim"]
    np.testing.assert_allclose(reported, r2, rtol=1e-5)


def test_evaluate_on_an_unknown_session_says_to_adapt_first(trained: dict[str, Path]) -> None:
    other = trained["root"] / "other"
    simulate_to_folder(other, n_animals=3, sessions_per_animal=1, n_units=12, duration=20.0, seed=9, task="center_out")
    for path in other.glob("sim_a[01]_*.h5"):  # keep only the session the model never saw
        path.unlink()
    code, out = cli("evaluate", trained["run"] / "model.ckpt", "--data", other)
    assert code == 2
    assert "error: " in out and "unknown to this model" in out and "adapt the model to that session first" in out
    assert "Traceback" not in out


@pytest.mark.parametrize(
    "args, message",
    [
        (["nonsense"], "override 'nonsense' is not key=value"),
        (["bogus_key=1"], "unknown config key 'bogus_key'"),
        (["--config", "no-such-config.yaml"], "not a file and not a preset"),
        (["--resume"], "--resume: no "),
    ],
)
def test_train_errors_are_one_clear_line(
    trained: dict[str, Path], tmp_path: Path, args: list[str], message: str
) -> None:
    code, out = cli("train", "--data", trained["data"], "--out", tmp_path / "run", *args)
    assert code == 2
    errors = [line for line in out.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and message in errors[0], out
    assert "Traceback" not in out


def test_resume_with_other_sessions_is_refused(trained: dict[str, Path], tmp_path: Path) -> None:
    other = tmp_path / "other"
    simulate_to_folder(other, n_animals=1, sessions_per_animal=1, n_units=12, duration=20.0, seed=9, task="center_out")
    code, out = cli("train", "--data", other, "--out", trained["run"], "--resume", *TRAIN)
    assert code == 2
    assert "error: --resume:" in out and "same --data" in out and "Traceback" not in out


def test_training_into_a_used_run_folder_needs_resume(trained: dict[str, Path]) -> None:
    before = (trained["run"] / "checkpoints" / "last.ckpt").stat().st_mtime_ns
    code, out = cli("train", "--data", trained["data"], "--out", trained["run"], *TRAIN)
    assert code == 2
    assert "error: " in out and "already holds a run" in out and "--resume" in out
    assert (trained["run"] / "checkpoints" / "last.ckpt").stat().st_mtime_ns == before
