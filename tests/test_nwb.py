"""read_nwb, its report, and the `prepare`/`info` commands, on real NWB files written with pynwb."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
from typer.testing import CliRunner

import spiketok.cli.data_commands  # noqa: F401  (registers the commands)
from spiketok.cli import app
from spiketok.data.nwb import read_nwb
from spiketok.data.readers import ReadOptions
from spiketok.data.session import DataError
from spiketok.data.storage import StoredSession, write_session

RATE = 100.0
T = np.arange(0, 20, 1 / RATE)


def _units(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {str(i): np.sort(rng.uniform(0, 20, 200 + 50 * i)) for i in range(4)}


def _led(ts: np.ndarray = T, data: np.ndarray | None = None) -> dict:
    if data is None:
        data = np.stack([100 + 50 * np.sin(ts), 200 + 30 * np.cos(ts)], axis=1)
    return {"timestamps": ts, "data": data, "unit": "px", "kind": "spatial"}


def _trials(n: int = 10) -> dict:
    starts = np.arange(n) * 2.0
    return {"start_time": starts, "stop_time": starts + 1.5, "target_id": np.arange(n) % 8}


def test_round_trip(make_nwb, tmp_path):
    units = _units()
    path = make_nwb(
        units=units, behavior={"led": _led()}, trials=_trials(), unit_columns={"location": ["CA1", "CA1", "CA3", "CA3"]}
    )
    session, report = read_nwb(path)
    assert session.id == "session"
    assert report.n_spikes == report.n_spikes_in == sum(len(v) for v in units.values())
    assert report.dropped_units == [] and report.dropped_spikes == 0
    assert session.meta["subject"] == "rat1" and session.meta["lab"] == "test lab"
    assert set(session.splits) == {"train", "valid", "test"}
    stored = StoredSession(write_session(session, tmp_path / "out" / "session.h5"))
    loaded = stored.load()
    assert stored.n_spikes == session.n_spikes
    assert loaded.unit_names == list(units)
    for i, times in enumerate(units.values()):
        np.testing.assert_array_equal(loaded.spike_times[loaded.spike_units == i], times)
    np.testing.assert_allclose(loaded.behavior("led").values, _led()["data"], rtol=1e-6)
    np.testing.assert_array_equal(loaded.behavior("led").timestamps, T)
    np.testing.assert_array_equal(loaded.trials.columns["target_id"], np.arange(10) % 8)
    assert list(loaded.unit_meta["location"]) == ["CA1", "CA1", "CA3", "CA3"]
    assert stored.behavior_info["led"]["unit"] == "px" and stored.behavior_info["led"]["dims"] == ["led_x", "led_y"]


def test_named_units_rate_timing_and_behavior_path(make_nwb):
    vel = {"rate": 50.0, "starting_time": 2.0, "data": np.ones((100, 2)), "kind": "timeseries", "unit": "cm/s"}
    path = make_nwb(units={"a": [2.5, 3.0], "b": [3.5]}, behavior={"hand_velocity": vel, "hand": _led()})
    session, _ = read_nwb(path, ReadOptions(behavior=["behavior/hand_velocity"]))
    assert session.unit_names == ["a", "b"]
    np.testing.assert_allclose(session.behavior("hand_velocity").timestamps, 2.0 + np.arange(100) / 50.0)
    assert session.behavior_names == ["hand_velocity"]
    session, report = read_nwb(path, ReadOptions(behavior=["processing/behavior/Position/hand"], session_id="day1"))
    assert (
        session.id == "day1"
        and session.behavior_names == ["hand"]
        and report.behavior["hand"] == "behavior/Position/hand"
    )


def test_comma_alternatives_take_first_existing(make_nwb):
    path = make_nwb(units=_units(), behavior={"led": _led()})
    session, _ = read_nwb(path, ReadOptions(behavior=["hand_velocity,led"]))
    assert session.behavior_names == ["led"]


def test_no_units_table(make_nwb):
    path = make_nwb(units=None, behavior={"led": _led()})
    with pytest.raises(DataError, match="no units table") as e:
        read_nwb(path)
    assert str(path) in str(e.value)


def test_missing_behavior_lists_available(make_nwb):
    path = make_nwb(units=_units(), behavior={"led": _led(), "head": _led()})
    with pytest.raises(DataError, match="no behaviour signal named 'hand'") as e:
        read_nwb(path, ReadOptions(behavior=["hand"]))
    assert "led" in str(e.value) and "head" in str(e.value) and str(path) in str(e.value)


def test_several_behaviors_without_choice_lists_them(make_nwb):
    path = make_nwb(units=_units(), behavior={"led": _led(), "head": _led()})
    with pytest.raises(DataError, match="2 behaviour signals") as e:
        read_nwb(path)
    assert "behavior/Position/led" in str(e.value) and "behavior/Position/head" in str(e.value)


def test_unsorted_and_duplicated_spikes(make_nwb):
    units = {"0": [3.0, 1.0, 2.0, 2.0, 5.0], "1": [1.0, 1.0, 1.0, 4.0], "2": [0.5, 6.0]}
    path = make_nwb(units=units, behavior={"led": _led()})
    session, report = read_nwb(path)
    assert report.unsorted_units == ["0"]
    assert report.duplicate_spikes == 3
    assert report.n_spikes == 11 - 3 == session.n_spikes
    np.testing.assert_array_equal(session.spike_times[session.spike_units == 0], [1.0, 2.0, 3.0, 5.0])
    np.testing.assert_array_equal(session.spike_times[session.spike_units == 1], [1.0, 4.0])
    assert any("out of order" in line for line in report.lines())
    assert any("3 duplicated" in line for line in report.lines())


def test_non_increasing_timestamps_dropped(make_nwb):
    ts = T.copy()
    ts[100] = ts[99]  # repeat
    ts[200] = ts[150]  # step back
    path = make_nwb(units=_units(), behavior={"led": _led(ts)})
    session, report = read_nwb(path)
    assert report.dropped_timestamps == {"led": 2}
    b = session.behavior("led")
    assert len(b.timestamps) == len(T) - 2 and np.all(np.diff(b.timestamps) > 0)
    assert any("dropped 2 samples with non-increasing" in line for line in report.lines())


def test_nan_and_inf_masked(make_nwb):
    data = _led()["data"]
    data[[10, 11, 500], 0] = np.nan
    data[700, 1] = np.inf
    path = make_nwb(units=_units(), behavior={"led": _led(data=data)})
    session, report = read_nwb(path)
    b = session.behavior("led")
    assert report.masked_samples == {"led": 4}
    assert np.all(b.weights[[10, 11, 500, 700]] == 0) and b.weights.sum() == len(T) - 4
    assert np.all(np.isfinite(b.values))


def test_units_without_spikes_dropped(make_nwb):
    units = {"0": [1.0, 2.0], "1": [], "2": [3.0], "3": []}
    path = make_nwb(units=units, behavior={"led": _led()}, unit_columns={"location": ["a", "b", "c", "d"]})
    session, report = read_nwb(path)
    assert report.dropped_units == ["1", "3"]
    assert session.unit_names == ["0", "2"] and report.n_units == 2
    assert list(session.unit_meta["location"]) == ["a", "c"]
    np.testing.assert_array_equal(session.spike_units, [0, 0, 1])


def test_spikes_outside_span_dropped(make_nwb):
    # behaviour covers [0, 19.99] s: the span is [-1, 20.99]
    units = {"0": [-5.0, -0.5, 1.0, 20.5, 21.5], "1": [30.0, 40.0], "2": [2.0]}
    path = make_nwb(units=units, behavior={"led": _led()})
    session, report = read_nwb(path)
    assert report.outside_span == 4
    assert report.span == pytest.approx((-1.0, T[-1] + 1.0))
    assert report.dropped_units == ["1"]  # every spike of unit 1 was outside
    np.testing.assert_array_equal(session.spike_times, [-0.5, 1.0, 2.0, 20.5])


def test_not_nwb_text_file(tmp_path):
    path = tmp_path / "notes.nwb"
    path.write_text("this is not a recording\n")
    with pytest.raises(DataError, match="not an NWB file") as e:
        read_nwb(path)
    assert str(path) in str(e.value)


def test_hdf5_without_nwb_structure(tmp_path):
    path = tmp_path / "plain.nwb"
    with h5py.File(path, "w") as f:
        f["x"] = np.arange(3)
    with pytest.raises(DataError, match="without NWB structure"):
        read_nwb(path)


@pytest.mark.parametrize("keep", [0.5, 0.98])
def test_truncated_file(make_nwb, tmp_path, keep):
    good = make_nwb(units=_units(), behavior={"led": _led()})
    raw = good.read_bytes()
    bad = tmp_path / "cut.nwb"
    bad.write_bytes(raw[: int(len(raw) * keep)])
    with pytest.raises(DataError, match="truncated") as e:
        read_nwb(bad)
    assert str(bad) in str(e.value)


def test_derive_velocity_known_trajectory(make_nwb):
    # x = 3t + 1, y = t^2 on two segments with a 5 s gap and a jump between them
    t1, t2 = np.arange(0, 5, 0.01), np.arange(10, 15, 0.01)
    ts = np.concatenate([t1, t2])
    pos = np.stack([3 * ts + 1 + 100 * (ts >= 10), ts**2], axis=1)
    path = make_nwb(units=_units(), behavior={"led": _led(ts, pos)})
    session, report = read_nwb(path, ReadOptions(derive="velocity"))
    v = session.behavior("led_velocity")
    assert v.unit == "px/s" and v.dims == ["led_x_velocity", "led_y_velocity"]
    np.testing.assert_array_equal(v.timestamps, ts)
    np.testing.assert_allclose(v.values[:, 0], 3.0, atol=1e-3)  # never differentiated across the jump
    ends = np.isin(np.arange(len(ts)), [0, len(t1) - 1, len(t1), len(ts) - 1])
    np.testing.assert_allclose(v.values[~ends, 1], 2 * ts[~ends], atol=1e-3)  # central: exact for t^2
    np.testing.assert_allclose(v.values[ends, 1], 2 * ts[ends], atol=0.011)  # one-sided at segment ends
    assert "led_velocity" in report.behavior


def test_keep_moving_fraction(make_nwb):
    ts = np.arange(0, 100, 1 / 60)
    x = 20.0 * np.clip(ts - 50, 0, None)  # parked for 50 s, then 20 px/s
    path = make_nwb(units=_units(), behavior={"led": _led(ts, np.stack([x, np.full_like(x, 7.0)], 1))})
    session, report = read_nwb(path, ReadOptions(derive="velocity", keep_moving=5.0))
    # |x(t+.5) - x(t-.5)| = 20 (t - 49.5) near the start of motion: <= 5 px while t <= 49.75
    expected = np.mean(ts <= 49.75)
    assert report.moving_left_out["led"] == pytest.approx(expected, abs=1.5 / len(ts))
    w = session.behavior("led").weights
    assert np.all(w[ts < 49.7] == 0) and np.all(w[ts > 49.8] == 1)
    np.testing.assert_array_equal(session.behavior("led_velocity").weights, w)
    assert any("left out" in line for line in report.lines())


def test_constant_signal_is_flagged(make_nwb):
    path = make_nwb(units=_units(), behavior={"hand": _led(data=np.zeros((len(T), 2)))})
    _, report = read_nwb(path, ReadOptions(derive="velocity"))
    assert any("hand: every sample is [0.0, 0.0]" in line for line in report.lines())


def test_keep_moving_needs_position(make_nwb):
    vel = {"rate": 10.0, "data": np.ones((50, 2)), "kind": "timeseries"}
    path = make_nwb(units=_units(), behavior={"hand_velocity": vel})
    with pytest.raises(DataError, match="needs a position"):
        read_nwb(path, ReadOptions(keep_moving=5.0))


# --- CLI -------------------------------------------------------------------------------------------

runner = CliRunner()


def test_cli_prepare_writes_and_summarises(make_nwb, tmp_path):
    path = make_nwb(units={"0": [1.0, 1.0, 2.0], "1": []}, behavior={"led": _led()})
    out = tmp_path / "prepared"
    result = runner.invoke(
        app,
        [
            "prepare",
            str(path),
            "--out",
            str(out),
            "--behavior",
            "hand_velocity,led",
            "--derive",
            "velocity",
            "--keep-moving",
            "1",
        ],
    )
    assert result.exit_code == 0, result.output
    assert (out / "session.h5").exists()
    assert "wrote 1 session files" in result.output
    assert "dropped 1 units with no spikes: 1" in result.output
    assert "removed 1 duplicated spikes" in result.output
    stored = StoredSession(out / "session.h5")
    assert set(stored.behavior_info) == {"led", "led_velocity"} and stored.n_spikes == 2


def test_cli_prepare_failure_writes_nothing_for_that_file(make_nwb, tmp_path):
    good = make_nwb("good.nwb", units=_units(), behavior={"led": _led()})
    two = make_nwb("two.nwb", units=_units(), behavior={"led": _led(), "head": _led()})
    bad = tmp_path / "bad.nwb"
    bad.write_bytes(good.read_bytes()[:5000])
    out = tmp_path / "prepared"
    result = runner.invoke(app, ["prepare", str(bad), str(two), str(good), "--out", str(out)])
    assert result.exit_code == 2
    assert "Traceback" not in result.output
    assert f"error: {bad}" in result.output and "truncated" in result.output
    assert f"error: {two}" in result.output and "behavior/Position/head" in result.output
    assert sorted(p.name for p in out.iterdir()) == ["good.h5"]  # no partial or temporary files


def test_cli_prepare_only_failures(tmp_path):
    bad = tmp_path / "bad.nwb"
    bad.write_text("nope")
    out = tmp_path / "prepared"
    result = runner.invoke(app, ["prepare", str(bad), "--out", str(out)])
    assert result.exit_code == 2 and "not an NWB file" in result.output
    assert not out.exists() or not any(out.iterdir())


def test_cli_info_json(make_nwb, tmp_path):
    path = make_nwb(units=_units(), behavior={"led": _led()}, trials=_trials())
    assert runner.invoke(app, ["prepare", str(path), "--out", str(tmp_path / "p")]).exit_code == 0
    for target in (tmp_path / "p" / "session.h5", path):
        result = runner.invoke(app, ["info", str(target), "--json"])
        assert result.exit_code == 0, result.output
        d = json.loads(result.stdout)
        assert {"n_units", "n_spikes", "duration_s", "behavior", "trials", "splits"} <= set(d)
        assert d["n_units"] == 4 and d["n_spikes"] == sum(len(v) for v in _units().values())
        assert d["behavior"]["led"] == {
            "n_samples": len(T),
            "dim": 2,
            "unit": "px",
            "dims": ["led_x", "led_y"],
            "masked_fraction": 0.0,
        }
        assert d["trials"]["count"] == 10 and set(d["splits"]) == {"train", "valid", "test"}
    plain = runner.invoke(app, ["info", str(tmp_path / "p" / "session.h5")])
    assert plain.exit_code == 0 and "splits" in plain.output


def test_cli_info_bad_file(tmp_path):
    bad = tmp_path / "x.h5"
    bad.write_text("nope")
    result = runner.invoke(app, ["info", str(bad)])
    assert result.exit_code == 2 and "not HDF5" in result.output and "Traceback" not in result.output
