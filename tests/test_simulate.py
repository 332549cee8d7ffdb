"""Tests for the multi-session motor cortex simulator and `spiketok simulate`."""

from __future__ import annotations

import time

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from spiketok.cli.simulate_command import simulate
from spiketok.data.session import DataError
from spiketok.data.simulate import ridge_r2, simulate_sessions, simulate_to_folder
from spiketok.data.storage import SessionDataset, StoredSession


@pytest.fixture(scope="module")
def sessions():
    return simulate_sessions(
        n_animals=2, sessions_per_animal=2, n_units=(80, 120), duration=120.0, seed=0, task="mixed"
    )


def test_deterministic_from_seed():
    a = simulate_sessions(1, 1, 50, 60.0, seed=3)[0]
    b = simulate_sessions(1, 1, 50, 60.0, seed=3)[0]
    c = simulate_sessions(1, 1, 50, 60.0, seed=4)[0]
    assert np.array_equal(a.spike_times, b.spike_times) and np.array_equal(a.spike_units, b.spike_units)
    assert np.array_equal(a.behavior("hand_velocity").values, b.behavior("hand_velocity").values)
    assert a.n_spikes != c.n_spikes or not np.array_equal(a.spike_times, c.spike_times)


def test_ids_meta_and_sorted_spikes(sessions):
    assert [s.id for s in sessions] == ["sim_a0_s0", "sim_a0_s1", "sim_a1_s0", "sim_a1_s1"]
    for s in sessions:
        assert np.all(np.diff(s.spike_times) >= 0)
        assert s.start == 0.0 and s.end == 120.0
        assert s.spike_times[0] >= 0 and s.spike_times[-1] < 120.0
        assert s.meta["species"] == "simulated macaque" and s.meta["lab"] == "spiketok simulator"
        assert 80 <= s.n_units <= 120 and all(n.startswith("n") and len(n) == 5 for n in s.unit_names)
    assert sessions[0].meta["subject"] == "animal0" and sessions[2].meta["subject"] == "animal1"
    assert sessions[0].meta["task"] == "center_out" and sessions[1].meta["task"] == "random_target"


def test_rates_realistic(sessions):
    for s in sessions:
        rates = np.bincount(s.spike_units, minlength=s.n_units) / s.duration
        assert rates.min() >= 1.0 and rates.max() <= 50.0
        assert 5.0 <= rates.mean() <= 30.0


def test_units_shared_within_animal_not_across(sessions):
    a0, a1 = set(sessions[0].unit_names), set(sessions[1].unit_names)
    assert a0 & a1 and a0 - a1 and a1 - a0
    pd0 = dict(zip(sessions[0].unit_names, sessions[0].unit_meta["preferred_direction"]))
    pd1 = dict(zip(sessions[1].unit_names, sessions[1].unit_meta["preferred_direction"]))
    assert all(pd0[n] == pd1[n] for n in a0 & a1)  # same neuron, same tuning
    other = dict(zip(sessions[2].unit_names, sessions[2].unit_meta["preferred_direction"]))
    common = a0 & set(other)
    assert common and all(pd0[n] != other[n] for n in common)  # another animal's n0007 is another neuron


def test_behavior_and_trials(sessions):
    for s in sessions:
        vel, pos = s.behavior("hand_velocity"), s.behavior("hand_position")
        assert vel.values.shape == (12000, 2) and pos.values.shape == (12000, 2)
        assert vel.dims == ["vx", "vy"] and vel.unit == "cm/s" and pos.unit == "cm"
        assert np.allclose(np.diff(vel.timestamps), 0.01)
        speed = np.hypot(*vel.values.T)
        assert 10 < speed.max() < 80 and np.abs(pos.values).max() < 20
        # velocity is the derivative of position (smooth, consistent)
        assert np.allclose(np.gradient(pos.values[:, 0], 0.01), vel.values[:, 0], atol=0.5)
        dur = s.trials.end - s.trials.start
        assert len(s.trials) > 30 and dur.min() >= 1.2 and dur.max() <= 3.2
        assert set(s.splits) == {"train", "valid", "test"}
        if s.meta["task"] == "center_out":
            assert set(s.trials.columns["target_id"]) <= set(range(8))


def test_bad_arguments():
    with pytest.raises(DataError):
        simulate_sessions(task="juggling")
    with pytest.raises(DataError):
        simulate_sessions(duration=2.0)


def test_fast():
    t = time.perf_counter()
    simulate_sessions(1, 1, 100, 300.0, seed=1)
    assert time.perf_counter() - t < 2.0


def test_ridge_decodes_velocity(sessions):
    for s in sessions[:2]:
        assert ridge_r2(s) > 0.7


def test_to_folder(tmp_path):
    paths = simulate_to_folder(tmp_path, n_animals=1, sessions_per_animal=2, n_units=30, duration=30.0)
    assert [p.name for p in paths] == ["sim_a0_s0.h5", "sim_a0_s1.h5"]
    assert SessionDataset(tmp_path).ids == ["sim_a0_s0", "sim_a0_s1"]


def test_cli_writes_readable_files(tmp_path):
    from spiketok.cli.errors import ErrorPolicyGroup

    app = typer.Typer(cls=ErrorPolicyGroup)  # the real app's error policy
    app.callback()(lambda: None)  # keep `simulate` a subcommand, as under the real `spiketok` app
    app.command("simulate")(simulate)
    args = [
        "simulate",
        "--out",
        str(tmp_path),
        "--animals",
        "1",
        "--sessions",
        "2",
        "--units",
        "40",
        "--duration",
        "30",
        "--task",
        "random_target",
        "--seed",
        "5",
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "sim_a0_s1" in result.output and "trials" in result.output
    s = StoredSession(tmp_path / "sim_a0_s1.h5")
    assert s.n_units == 40 and s.meta["task"] == "random_target" and s.trials is not None
    w = s.slice(10.0, 11.0)
    assert w.behavior["hand_velocity"].values.shape == (100, 2) and len(w.spike_times) > 0
    assert CliRunner().invoke(app, ["simulate", "--out", str(tmp_path), "--task", "nope"]).exit_code == 2
