"""brainsets / temporaldata session files, written with the real `temporaldata` package, read by spiketok."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import h5py
import numpy as np
import pytest

from spiketok.cli import _register
from spiketok.data.brainsets import read_temporaldata
from spiketok.data.readers import ReadOptions, file_kind, read_recording
from spiketok.data.session import DataError, Session
from spiketok.data.simulate import simulate_sessions
from spiketok.data.splits import make_splits
from spiketok.data.storage import StoredSession

temporaldata = pytest.importorskip("temporaldata")
from conftest import cli  # noqa: E402  (runs `spiketok ARGS` in this process)
from temporaldata import ArrayDict, Data, Interval, IrregularTimeSeries, RegularTimeSeries  # noqa: E402

_register()


def _simulated(duration: float = 60.0) -> Session:
    return simulate_sessions(n_animals=1, sessions_per_animal=1, n_units=20, duration=duration, seed=3)[0]


def _save(data: Data, path: Path) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # temporaldata deprecation notes
        with h5py.File(path, "w") as f:
            data.to_hdf5(f)
    return path


def brainsets_session(path: Path, sim: Session) -> tuple[Path, dict[str, Interval]]:
    """A file shaped like a brainsets session (perich_miller style): spikes, units, trials, cursor with
    pos/vel, session/subject descriptions, and train/valid/test domains made from held-out trials."""
    hv, hp = sim.behavior("hand_velocity"), sim.behavior("hand_position")
    cursor = IrregularTimeSeries(
        timestamps=hv.timestamps, pos=hp.values.astype(np.float64), vel=hv.values.astype(np.float64), domain="auto"
    )
    n_trials = len(sim.trials)
    trials = Interval(
        start=sim.trials.start,
        end=sim.trials.end,
        target_id=sim.trials.columns["target_id"],
        result=np.array(["R"] * n_trials),
    )
    order = np.random.default_rng(0).permutation(n_trials)
    n_test, n_valid = max(1, n_trials // 5), max(1, n_trials // 10)
    test = trials.select_by_mask(np.isin(np.arange(n_trials), order[:n_test]))
    valid = trials.select_by_mask(np.isin(np.arange(n_trials), order[n_test : n_test + n_valid]))
    data = Data(
        session=Data(id=sim.id),
        subject=Data(id="monkey_c", species="macaca mulatta"),
        spikes=IrregularTimeSeries(
            timestamps=sim.spike_times, unit_index=sim.spike_units.astype(np.int64), domain="auto"
        ),
        units=ArrayDict(
            id=np.array([f"elec{i}/unit_0" for i in range(sim.n_units)]), unit_number=np.arange(sim.n_units)
        ),
        trials=trials,
        cursor=cursor,
        domain=cursor.domain,
    )
    domains = {"train": data.domain.difference((valid | test).dilate(1.0)), "valid": valid, "test": test}
    data.train_domain, data.valid_domain, data.test_domain = domains["train"], domains["valid"], domains["test"]
    return _save(data, path), domains


@pytest.fixture(scope="module")
def sim() -> Session:
    return _simulated()


def _same_intervals(a, b: Interval) -> None:
    np.testing.assert_array_equal(a.start, np.asarray(b.start))
    np.testing.assert_array_equal(a.end, np.asarray(b.end))


def test_brainsets_session_is_read_with_its_own_splits(tmp_path, sim):
    path, domains = brainsets_session(tmp_path / "c_20131003_center_out_reaching.h5", sim)
    assert file_kind(path) == "temporaldata"
    session, report = read_temporaldata(path, ReadOptions(behavior=["cursor.vel"]))
    assert session.id == "c_20131003_center_out_reaching"
    assert session.unit_names == [f"elec{i}/unit_0" for i in range(sim.n_units)]
    np.testing.assert_array_equal(session.spike_times, sim.spike_times)
    np.testing.assert_array_equal(session.spike_units, sim.spike_units)
    assert session.behavior_names == ["cursor_vel"]
    vel = session.behavior("cursor_vel")
    assert vel.dims == ["cursor_vel_x", "cursor_vel_y"]
    np.testing.assert_array_equal(vel.timestamps, sim.behavior("hand_velocity").timestamps)
    np.testing.assert_allclose(vel.values, sim.behavior("hand_velocity").values, rtol=1e-6)
    for name in ("train", "valid", "test"):
        _same_intervals(session.splits[name], domains[name])
    np.testing.assert_array_equal(session.trials.start, sim.trials.start)
    assert set(session.trials.columns) == {"target_id", "result"}
    assert list(session.trials.columns["result"][:2]) == ["R", "R"]
    np.testing.assert_array_equal(session.unit_meta["unit_number"], np.arange(sim.n_units))
    assert session.meta["session_id"] == sim.id and session.meta["subject_species"] == "macaca mulatta"
    assert report.behavior == {"cursor_vel": "cursor.vel"}
    assert "splits: train_domain, valid_domain and test_domain of the file" in report.lines()


def test_regular_time_series_without_domains_uses_spiketok_splits(tmp_path, sim):
    hp = sim.behavior("hand_position")
    hand = RegularTimeSeries(pos=hp.values.astype(np.float64), sampling_rate=100.0, domain_start=0.0)
    data = Data(
        spikes=IrregularTimeSeries(
            timestamps=sim.spike_times, unit_index=sim.spike_units.astype(np.int64), domain="auto"
        ),
        hand=hand,
        domain=hand.domain,
    )
    path = _save(data, tmp_path / "plain.h5")
    session, report = read_temporaldata(path, ReadOptions(derive="velocity"))  # the only signal: hand_pos
    assert set(session.behavior_names) == {"hand_pos", "hand_pos_velocity"}
    np.testing.assert_allclose(session.behavior("hand_pos").timestamps, np.arange(len(hp.values)) / 100.0)
    # derived velocity of the simulated position matches the simulated velocity away from segment ends
    v, true = session.behavior("hand_pos_velocity").values, sim.behavior("hand_velocity").values
    assert np.corrcoef(v[1:-1, 0], true[1:-1, 0])[0, 1] > 0.99
    assert session.unit_names == [str(i) for i in range(sim.n_units)]
    expected = make_splits(session.start, session.end, None, scored_times=session.behavior("hand_pos").timestamps)
    for name in ("train", "valid", "test"):
        np.testing.assert_array_equal(session.splits[name].start, expected[name].start)
    assert not any("domain" in line for line in report.lines())


def test_missing_spikes_and_behaviour_are_clear_errors(tmp_path, sim):
    hv = sim.behavior("hand_velocity")
    cursor = IrregularTimeSeries(timestamps=hv.timestamps, vel=hv.values.astype(np.float64), domain="auto")
    no_spikes = _save(Data(cursor=cursor, domain=cursor.domain), tmp_path / "no_spikes.h5")
    with pytest.raises(DataError, match=r"no spikes in this temporaldata file .*holds: cursor") as e:
        read_temporaldata(no_spikes)
    assert str(no_spikes) in str(e.value)
    spikes = IrregularTimeSeries(timestamps=sim.spike_times, unit_index=sim.spike_units.astype(np.int64), domain="auto")
    no_beh = _save(Data(spikes=spikes, domain=spikes.domain), tmp_path / "no_beh.h5")
    with pytest.raises(DataError, match="no behaviour in this temporaldata file"):
        read_temporaldata(no_beh)
    path, _ = brainsets_session(tmp_path / "b.h5", sim)
    with pytest.raises(DataError, match=r"2 behaviour signals found: cursor_pos \(2-D\), cursor_vel \(2-D\)"):
        read_temporaldata(path)
    with pytest.raises(DataError, match="no behaviour signal named 'hand_vel'; available: cursor_pos"):
        read_temporaldata(path, ReadOptions(behavior=["hand_vel"]))
    session, _ = read_temporaldata(path, ReadOptions(behavior=["hand_vel,cursor_vel"]))  # first that exists
    assert session.behavior_names == ["cursor_vel"]


def test_reader_chosen_by_content_not_extension(tmp_path, sim, make_nwb):
    odd, _ = brainsets_session(tmp_path / "session.nwb", sim)  # temporaldata under an NWB name
    session, _ = read_recording(odd, ReadOptions(behavior=["cursor_vel"]))
    assert session.meta["source_format"] == "temporaldata"
    nwb = make_nwb(
        "rec.h5",
        units={"0": [0.5, 1.5], "1": [1.0]},
        behavior={"led": {"timestamps": np.arange(0, 3, 0.1), "data": np.ones((30, 2))}},
    )
    assert file_kind(nwb) == "nwb"
    session, _ = read_recording(nwb)
    assert session.meta["identifier"] == "rec" and session.behavior_names == ["led"]


def test_prepare_train_evaluate_on_a_brainsets_session(tmp_path, sim):
    (tmp_path / "raw").mkdir()
    path, domains = brainsets_session(tmp_path / "raw" / "c_session.h5", sim)
    code, out = cli("prepare", path, "--out", tmp_path / "prepared", "--behavior", "cursor_vel")
    assert code == 0, out
    assert "behaviour cursor_vel <- cursor.vel" in out
    stored = StoredSession(tmp_path / "prepared" / "c_session.h5")
    for name in ("train", "valid", "test"):
        _same_intervals(stored.splits[name], domains[name])
    code, out = cli("info", path, "--json")
    assert code == 0, out
    info = json.loads(out)
    assert info["kind"] == "temporaldata" and info["n_units"] == sim.n_units
    assert set(info["behavior"]) == {"cursor_pos", "cursor_vel"}
    assert info["splits"]["test"]["count"] == len(domains["test"])

    code, out = cli(
        "train",
        "--data",
        tmp_path / "prepared",
        "--out",
        tmp_path / "run",
        "--accelerator",
        "cpu",
        "--no-progress",
        "target=cursor_vel",
        "max_steps=8",
        "steps_per_epoch=4",
        "batch_size=8",
        "warmup_steps=2",
        "eval_stride=1.0",
        "init=none",
    )
    assert code == 0, out
    code, out = cli(
        "evaluate",
        tmp_path / "run" / "model.ckpt",
        "--data",
        tmp_path / "prepared",
        "--json",
        tmp_path / "results.json",
    )
    assert code == 0, out
    r = json.loads((tmp_path / "results.json").read_text())["sessions"]["c_session"]
    assert r["target"] == "cursor_vel" and r["dims"] == ["cursor_vel_x", "cursor_vel_y"]
    ts = stored.behavior("cursor_vel").timestamps
    in_test = (ts[:, None] >= domains["test"].start) & (ts[:, None] < domains["test"].end)
    assert r["n_samples"] == int(in_test.any(axis=1).sum())  # scored exactly on the file's test domain
    assert np.isfinite(r["r2"])


def test_prepare_refuses_to_replace_its_input(tmp_path, sim):
    path, _ = brainsets_session(tmp_path / "s.h5", sim)
    before = path.read_bytes()
    code, out = cli("prepare", path, "--out", tmp_path, "--behavior", "cursor_vel")
    assert code == 2 and "would replace this input file" in out
    assert path.read_bytes() == before
