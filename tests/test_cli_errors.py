"""One error policy through the real CLI: every wrong input ends in one `error:` line and exit status 2.

Each case runs the real `spiketok` app on real files (damaged checkpoints, truncated or foreign HDF5,
sessions without behaviour in a split, a recording shorter than a window); --debug shows the traceback.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import cli  # noqa: E402  (runs `spiketok ARGS` in this process)
from typer.testing import CliRunner

from spiketok.cli import _register, app
from spiketok.data.session import Behavior, Intervals, Session
from spiketok.data.simulate import simulate_to_folder
from spiketok.data.storage import write_session

_register()
runner = CliRunner()
TRAIN = [
    "target=hand_velocity",
    "model.window=1",
    "max_steps=4",
    "steps_per_epoch=2",
    "batch_size=4",
    "warmup_steps=1",
    "eval_stride=1.0",
]


def assert_user_error(code: int, out: str, *phrases: str) -> None:
    """Exit status 2, exactly one `error:` line that holds every phrase, and no traceback."""
    errors = [line for line in out.splitlines() if line.startswith("error: ")]
    assert code == 2, out
    assert len(errors) == 1, out
    assert "Traceback" not in out, out
    for p in phrases:
        assert p in errors[0], errors[0]


def session_file(
    path: Path,
    sid: str,
    duration: float,
    behavior_spans: list[tuple[float, float]],
    splits: dict[str, list[tuple[float, float]]],
    n_units: int = 8,
    rate: float = 20.0,
    seed: int = 0,
) -> Path:
    """A prepared session: uniform spikes (`rate` Hz per unit) and a 2-D hand_velocity at 100 Hz in the spans."""
    rng = np.random.default_rng(seed)
    spikes = {f"u{k}": np.sort(rng.uniform(0, duration, int(rate * duration))) for k in range(n_units)}
    ts = np.concatenate([np.arange(a, b, 0.01) for a, b in behavior_spans]) if behavior_spans else np.zeros(0)
    beh = Behavior("hand_velocity", ts, np.stack([np.sin(ts), np.cos(ts)], axis=1), unit="cm/s")
    ivs = {name: Intervals(np.array([a for a, _ in iv]), np.array([b for _, b in iv])) for name, iv in splits.items()}
    session = Session.from_unit_spikes(
        sid, spikes, behaviors={"hand_velocity": beh}, splits=ivs, start=0.0, end=duration
    )
    return write_session(session, path)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """A simulated session, a model trained on it for 4 steps, and damaged copies of both."""
    root = tmp_path_factory.mktemp("errors")
    (good,) = simulate_to_folder(
        root / "sim", n_animals=1, sessions_per_animal=1, n_units=(10, 10), duration=40.0, seed=3, task="center_out"
    )
    code, out = cli("train", "--data", good, "--out", root / "run", "--accelerator", "cpu", "--no-progress", *TRAIN)
    assert code == 0, out
    model = root / "run" / "model.ckpt"
    truncated_model = root / "truncated.ckpt"
    truncated_model.write_bytes(model.read_bytes()[: model.stat().st_size // 2])
    corrupt_model = root / "corrupt.ckpt"
    corrupt_model.write_bytes(os.urandom(4096))
    truncated_h5 = root / "bad" / "truncated.h5"
    truncated_h5.parent.mkdir()
    truncated_h5.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    foreign_h5 = root / "foreign" / "foreign.h5"
    foreign_h5.parent.mkdir()
    with h5py.File(foreign_h5, "w") as f:
        f["x"] = np.arange(10)
        f.attrs["made_by"] = "another tool"
    return {
        "root": root,
        "good": good,
        "model": model,
        "run": root / "run",
        "truncated_model": truncated_model,
        "corrupt_model": corrupt_model,
        "truncated_h5": truncated_h5,
        "foreign_h5": foreign_h5,
    }


# --- damaged checkpoints: every command that reads a model --------------------------------------------------


@pytest.mark.parametrize("which", ["truncated_model", "corrupt_model"])
def test_evaluate_with_a_damaged_checkpoint(files, which) -> None:
    assert_user_error(*cli("evaluate", files[which], "--data", files["good"]), str(files[which]), "damaged")


def test_predict_with_a_truncated_checkpoint(files) -> None:
    code, out = cli("predict", files["truncated_model"], files["good"], "--out", files["root"] / "p.npz")
    assert_user_error(code, out, "truncated.ckpt")
    assert not (files["root"] / "p.npz").exists()


def test_model_info_with_a_truncated_checkpoint(files) -> None:
    assert_user_error(*cli("model-info", files["truncated_model"]), "truncated.ckpt")


def test_adapt_with_a_truncated_checkpoint(files) -> None:
    code, out = cli("adapt", files["truncated_model"], files["good"], "--out", files["root"] / "a.ckpt")
    assert_user_error(code, out, "truncated.ckpt")


def test_fewshot_with_a_truncated_checkpoint(files) -> None:
    code, out = cli("fewshot", files["truncated_model"], files["good"], "--out", files["root"] / "fs", "--trials", "1")
    assert_user_error(code, out, "truncated.ckpt")


def test_replay_with_a_truncated_checkpoint(files) -> None:
    assert_user_error(*cli("replay", files["truncated_model"], files["good"]), "truncated.ckpt")


def test_embeddings_with_a_truncated_checkpoint(files) -> None:
    code, out = cli("embeddings", files["truncated_model"], "--out", files["root"] / "e.png")
    assert_user_error(code, out, "truncated.ckpt")


def test_train_resume_with_a_truncated_last_checkpoint(files) -> None:
    run = files["root"] / "run-resume"
    (run / "checkpoints").mkdir(parents=True)
    last = files["run"] / "checkpoints" / "last.ckpt"
    (run / "checkpoints" / "last.ckpt").write_bytes(last.read_bytes()[: last.stat().st_size // 3])
    code, out = cli(
        "train", "--data", files["good"], "--out", run, "--resume", "--accelerator", "cpu", "--no-progress", *TRAIN
    )
    assert_user_error(code, out, "last.ckpt", "damaged")


# --- truncated or foreign prepared files --------------------------------------------------------------------


@pytest.mark.parametrize("which", ["truncated_h5", "foreign_h5"])
def test_train_with_a_bad_session_file(files, which) -> None:
    code, out = cli(
        "train",
        "--data",
        files[which],
        "--out",
        files["root"] / f"run-{which}",
        "--accelerator",
        "cpu",
        "--no-progress",
        *TRAIN,
    )
    assert_user_error(code, out, files[which].name, "spiketok prepare")


@pytest.mark.parametrize("which", ["truncated_h5", "foreign_h5"])
def test_evaluate_with_a_bad_session_file(files, which) -> None:
    assert_user_error(*cli("evaluate", files["model"], "--data", files[which]), files[which].name)


@pytest.mark.parametrize("which", ["truncated_h5", "foreign_h5"])
def test_baseline_with_a_bad_session_file(files, which) -> None:
    assert_user_error(*cli("baseline", "--data", files[which]), files[which].name)


@pytest.mark.parametrize("which", ["truncated_h5", "foreign_h5"])
def test_adapt_with_a_bad_session_file(files, which) -> None:
    code, out = cli("adapt", files["model"], files[which], "--out", files["root"] / "a.ckpt")
    assert_user_error(code, out, files[which].name, "spiketok prepare")


# --- data that cannot be decoded -----------------------------------------------------------------------------


def test_evaluate_on_a_split_with_no_behaviour_samples(files) -> None:
    # the trained session again (same id and units), its behaviour removed from the test split
    from spiketok.data.storage import StoredSession

    good = StoredSession(files["good"])
    w = good.slice(good.start, good.end + 1.0)
    test = good.splits["test"]
    beh = w.behavior["hand_velocity"]
    keep = ~test.contains(beh.timestamps + good.start)
    beh = Behavior("hand_velocity", beh.timestamps[keep] + good.start, beh.values[keep], unit=beh.unit)
    session = Session(
        good.id,
        w.spike_times + good.start,
        w.spike_units,
        good.unit_names,
        behaviors={"hand_velocity": beh},
        splits=good.splits,
        start=good.start,
        end=good.end,
    )
    path = write_session(session, files["root"] / "nobeh" / files["good"].name)
    code, out = cli("evaluate", files["model"], "--data", path)
    assert_user_error(code, out, good.id, "'test' split holds no 'hand_velocity' sample")


def test_train_on_a_recording_too_short_for_one_window(files) -> None:
    path = session_file(
        files["root"] / "short" / "short.h5",
        "short",
        0.6,
        [(0.0, 0.6)],
        {"train": [(0.0, 0.3)], "valid": [(0.3, 0.45)], "test": [(0.45, 0.6)]},
    )
    code, out = cli(
        "train", "--data", path, "--out", files["root"] / "run-short", "--accelerator", "cpu", "--no-progress", *TRAIN
    )  # model.window=1: a window the user set (auto would pick 0.5 s)
    assert_user_error(code, out, "short.h5", "shorter than one 1 s context window")


def test_baseline_on_a_split_with_no_samples(files) -> None:
    path = session_file(
        files["root"] / "nobeh2" / "nobeh2.h5",
        "nobeh2",
        40.0,
        [(0.0, 30.0)],
        {"train": [(0.0, 24.0)], "valid": [(24.0, 30.0)], "test": [(30.0, 40.0)]},
    )
    code, out = cli("baseline", "--data", path)
    assert_user_error(code, out, "nobeh2", "test")
    assert "nan" not in out


# --- --debug and SPIKETOK_DEBUG show the traceback ------------------------------------------------------------


def test_debug_flag_shows_the_traceback(files) -> None:
    result = runner.invoke(app, ["--debug", "model-info", str(files["truncated_model"])])
    from spiketok.model.file import ModelFileError

    assert isinstance(result.exception, ModelFileError)  # re-raised, so the CLI prints its traceback


def test_real_command_line_one_error_line_and_env_debug(files) -> None:
    cmd = [sys.executable, "-m", "spiketok.cli", "model-info", str(files["truncated_model"])]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    env.pop("SPIKETOK_DEBUG", None)
    plain = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert plain.returncode == 2 and plain.stderr.count("error: ") == 1, plain.stderr
    assert "Traceback" not in plain.stderr
    debug = subprocess.run(cmd, capture_output=True, text=True, env={**env, "SPIKETOK_DEBUG": "1"}, timeout=120)
    assert debug.returncode == 1 and "Traceback" in debug.stderr and "ModelFileError" in debug.stderr
