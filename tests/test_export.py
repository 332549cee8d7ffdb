"""Predictions out to NWB (`predict --out x.nwb`, read back with pynwb) and pynapple interop."""

from __future__ import annotations

import hashlib
from datetime import datetime, timezone

import numpy as np
import pytest
from conftest import (
    cli,  # noqa: E402  (runs `spiketok ARGS` in this process)
    write_nwb,
)

from spiketok.cli import _register
from spiketok.data.session import Session
from spiketok.data.simulate import simulate_sessions
from spiketok.data.storage import StoredSession, write_session

_register()


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict:
    """A simulated session written as rec.nwb with pynwb, prepared, and a tiny model trained on it."""
    root = tmp_path_factory.mktemp("export")
    sim = simulate_sessions(n_animals=1, sessions_per_animal=1, n_units=16, duration=40.0, seed=4)[0]
    units = {name: sim.spike_times[sim.spike_units == i] for i, name in enumerate(sim.unit_names)}
    hv = sim.behavior("hand_velocity")
    rec = write_nwb(
        root / "rec.nwb",
        units,
        behavior={
            "hand_velocity": {"timestamps": hv.timestamps, "data": hv.values, "unit": "cm/s", "kind": "timeseries"}
        },
        trials={"start_time": sim.trials.start, "stop_time": sim.trials.end},
    )
    code, out = cli("prepare", rec, "--out", root / "prepared", "--behavior", "hand_velocity")
    assert code == 0, out
    code, out = cli(
        "train",
        "--data",
        root / "prepared",
        "--out",
        root / "run",
        "--accelerator",
        "cpu",
        "--no-progress",
        "target=hand_velocity",
        "max_steps=6",
        "steps_per_epoch=3",
        "batch_size=8",
        "warmup_steps=2",
        "eval_stride=1.0",
        "init=none",
    )
    assert code == 0, out
    return {"root": root, "rec": rec, "model": root / "run" / "model.ckpt", "sim": sim}


def test_predict_writes_nwb_that_pynwb_reads_back(trained):
    from pynwb import NWBHDF5IO, TimeSeries

    root, rec, model = trained["root"], trained["rec"], trained["model"]
    code, out = cli("predict", model, rec, "--out", root / "p.npz")
    assert code == 0, out
    code, out = cli("predict", model, rec, "--out", root / "p.nwb")
    assert code == 0, out
    with np.load(root / "p.npz") as z:
        times, pred = z["timestamps"], z["predictions"]
    np.testing.assert_array_equal(times, trained["sim"].behavior("hand_velocity").timestamps)
    with NWBHDF5IO(str(root / "p.nwb"), "r") as io:
        nwb = io.read()
        ts = nwb.processing["spiketok"]["hand_velocity"]
        assert isinstance(ts, TimeSeries)
        np.testing.assert_array_equal(ts.timestamps[:], times)
        np.testing.assert_allclose(ts.data[:], pred, rtol=1e-6, atol=1e-6)
        assert ts.unit == "cm/s"
        sha = hashlib.sha256(model.read_bytes()).hexdigest()
        assert str(model.resolve()) in ts.description and sha in ts.description
        assert "hand_velocity_0, hand_velocity_1" in ts.description
        assert nwb.session_start_time == datetime(2024, 1, 1, tzinfo=timezone.utc)  # the source's clock
        assert nwb.session_id == "rec" and nwb.identifier != "rec"
        assert str(rec.resolve()) in nwb.notes and "NWB identifier rec" in nwb.notes
    before = rec.read_bytes()
    code, out = cli("predict", model, rec, "--out", rec)
    assert code == 2 and "this is the input recording" in out
    assert rec.read_bytes() == before


def test_from_pynapple_round_trips_through_a_session_file(tmp_path):
    nap = pytest.importorskip("pynapple")
    rng = np.random.default_rng(1)
    spikes = {3: np.sort(rng.uniform(0, 30, 200)), 7: np.sort(rng.uniform(0, 30, 50))}
    group = nap.TsGroup(
        {k: nap.Ts(t=v) for k, v in spikes.items()},
        metadata={"location": np.array(["M1", "PMd"]), "depth": np.array([100.0, 250.0])},
    )
    t = np.arange(0, 30, 0.01)
    vel = np.stack([np.sin(t), np.cos(t)], axis=1)
    vel[5] = np.nan
    trials = nap.IntervalSet(start=np.arange(0, 30, 3.0), end=np.arange(0, 30, 3.0) + 2.5)
    session = Session.from_pynapple(
        group, nap.TsdFrame(t=t, d=vel, columns=["x", "y"]), id="pn", name="hand_velocity", unit="cm/s", trials=trials
    )
    assert session.unit_names == ["3", "7"] and session.n_spikes == 250
    np.testing.assert_array_equal(session.spike_times[session.spike_units == 1], spikes[7])
    assert list(session.unit_meta["location"]) == ["M1", "PMd"]
    np.testing.assert_array_equal(session.unit_meta["depth"], [100.0, 250.0])
    b = session.behavior("hand_velocity")
    assert b.dims == ["hand_velocity_x", "hand_velocity_y"] and b.unit == "cm/s"
    assert b.weights[5] == 0 and b.weights.sum() == len(t) - 1 and np.all(np.isfinite(b.values))
    # whole trials, each in exactly one split
    assert sum(len(iv) for iv in session.splits.values()) == len(trials)
    np.testing.assert_array_equal(np.sort(np.concatenate([iv.start for iv in session.splits.values()])), trials.start)
    stored = StoredSession(write_session(session, tmp_path / "pn.h5"))
    np.testing.assert_array_equal(stored.behavior("hand_velocity").weights, b.weights)
    own = {"train": nap.IntervalSet(0, 20), "valid": nap.IntervalSet(20, 25), "test": nap.IntervalSet(25, 30)}
    one = Session.from_pynapple(group, nap.Tsd(t=t, d=vel[:, 0]), splits=own)
    assert one.behavior_names == ["behavior"] and one.behavior("behavior").dim == 1
    assert one.splits["valid"].start.tolist() == [20.0] and one.splits["test"].end.tolist() == [30.0]


def test_predictions_as_tsdframe(trained):
    nap = pytest.importorskip("pynapple")
    import spiketok
    from spiketok.evaluate import decode_split, to_tsdframe

    model = spiketok.load(trained["model"])
    stored = StoredSession(trained["root"] / "prepared" / "rec.h5")
    decoded = decode_split(model, stored, "hand_velocity", "test")
    frame = to_tsdframe(decoded)
    assert isinstance(frame, nap.TsdFrame)
    assert list(frame.columns) == decoded.dims == ["hand_velocity_0", "hand_velocity_1"]
    np.testing.assert_array_equal(frame.t, decoded.timestamps)
    np.testing.assert_array_equal(frame.values, decoded.y_pred)
    # pynapple's own tools work on it: restrict to the first test interval
    first = stored.splits["test"]
    part = frame.restrict(nap.IntervalSet(first.start[0], first.end[0]))
    assert 0 < len(part) < len(frame)
