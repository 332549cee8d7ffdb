"""Session model, HDF5 storage (atomic, lazy) and splits."""

from __future__ import annotations

import os

import h5py
import numpy as np
import pytest

from spiketok.data import Behavior, DataError, Intervals, Session, SessionDataset, StoredSession, write_session
from spiketok.data.splits import make_splits


def make_session(sid: str = "s1", n_units: int = 30, duration: float = 120.0, seed: int = 0) -> Session:
    rng = np.random.default_rng(seed)
    spikes = {f"u{i}": np.sort(rng.uniform(0, duration, rng.integers(50, 2000))) for i in range(n_units)}
    ts = np.arange(0, duration, 0.01)
    beh = Behavior("vel", ts, np.stack([np.sin(ts), np.cos(ts)], 1), unit="cm/s", dims=["vx", "vy"])
    trials = Intervals(
        np.arange(0, duration - 2, 3.0),
        np.arange(0, duration - 2, 3.0) + 2.0,
        {"target_id": np.arange(len(np.arange(0, duration - 2, 3.0))) % 8},
    )
    s = Session.from_unit_spikes(
        sid, spikes, behaviors={"vel": beh}, trials=trials, meta={"subject": "m1", "species": "macaque"}
    )
    s.splits = make_splits(s.start, s.end, trials, seed=1)
    return s


def test_session_slice_is_relative_and_half_open():
    s = make_session()
    w = s.slice(10.0, 11.0)
    inside = (s.spike_times >= 10.0) & (s.spike_times < 11.0)
    assert len(w.spike_times) == inside.sum()
    assert w.spike_times.min() >= 0 and w.spike_times.max() < 1.0
    assert np.array_equal(w.spike_units, s.spike_units[inside])
    assert len(w.behavior["vel"].timestamps) == 100 and w.behavior["vel"].timestamps[0] == pytest.approx(0.0)
    assert s.unit_ids[0] == "s1/u0"


def test_session_rejects_bad_input():
    with pytest.raises(DataError, match="sorted"):
        Session("s", np.array([2.0, 1.0]), np.array([0, 0]), ["a"])
    with pytest.raises(DataError, match="outside the units table"):
        Session("s", np.array([1.0, 2.0]), np.array([0, 3]), ["a"])
    with pytest.raises(DataError, match="'/'"):
        Session("a/b", np.zeros(0), np.zeros(0), [])


def test_stored_windows_equal_in_memory_windows(tmp_path):
    s = make_session()
    path = write_session(s, tmp_path / "s1.h5")
    st = StoredSession(path)
    rng = np.random.default_rng(3)
    for t0 in np.concatenate([[-1.0, 0.0, 119.5], rng.uniform(0, 119, 50)]):
        a, b = s.slice(t0, t0 + 1.0), st.slice(t0, t0 + 1.0)
        assert np.array_equal(a.spike_units, b.spike_units)
        assert np.allclose(a.spike_times, b.spike_times)
        assert np.allclose(a.behavior["vel"].values, b.behavior["vel"].values)
    back = st.load()
    assert back.n_spikes == s.n_spikes and back.unit_names == s.unit_names
    assert back.meta == s.meta and back.trials.columns["target_id"].tolist() == s.trials.columns["target_id"].tolist()
    assert set(back.splits) == {"train", "valid", "test"}
    assert np.allclose(back.splits["test"].start, s.splits["test"].start)


def test_window_read_touches_only_nearby_chunks(tmp_path):
    # a long session stored in chunks: one window read must not read the whole spike table
    s = make_session(n_units=200, duration=600.0)
    path = write_session(s, tmp_path / "big.h5")
    st = StoredSession(path)
    with h5py.File(path) as f:
        chunk = f["spikes/times"].chunks
    assert chunk is not None and chunk[0] < s.n_spikes
    lo, hi = st._rows(st._spike_index, 300.0, 301.0)
    assert hi - lo < s.n_spikes / 100  # a few seconds of rows at most, of 600 s


def test_failed_write_leaves_nothing(tmp_path):
    s = make_session()
    s.unit_meta = {"bad": np.array([object()] * s.n_units, dtype=object)}  # h5py cannot store this
    with pytest.raises(TypeError):
        write_session(s, tmp_path / "s1.h5")
    assert os.listdir(tmp_path) == []


def test_dataset_indexes_many_sessions_and_rejects_duplicates(tmp_path):
    for i in range(3):
        write_session(make_session(f"s{i}", n_units=5, duration=30, seed=i), tmp_path / f"s{i}.h5")
    ds = SessionDataset(tmp_path)
    assert ds.ids == ["s0", "s1", "s2"] and len(ds.unit_ids()) == 15
    assert all(s._file is None for s in ds)  # files stay closed until a window is read
    ds["s1"].slice(1.0, 2.0)
    write_session(make_session("s0", n_units=5, duration=30), tmp_path / "copy.h5")
    with pytest.raises(DataError, match="appears twice"):
        SessionDataset(tmp_path)
    with pytest.raises(DataError, match="no such file"):
        SessionDataset(tmp_path / "missing")


def test_splits_are_disjoint_deterministic_and_cover_trials():
    trials = Intervals(np.arange(0, 100, 2.0), np.arange(0, 100, 2.0) + 1.5)
    a = make_splits(0, 100, trials, method="blocks", seed=4)
    b = make_splits(0, 100, trials, method="blocks", seed=4)
    assert all(np.array_equal(a[k].start, b[k].start) for k in a)
    starts = np.concatenate([a[k].start for k in a])
    assert len(starts) == len(trials) and len(np.unique(starts)) == len(trials)
    # test trials sit in the 3rd and 8th tenth of the session
    mid = (a["test"].start + a["test"].end) / 2
    assert set(np.floor(mid / 10).astype(int)) == {2, 7}
    blocks = make_splits(0, 100, None, method="blocks", seed=0)
    assert blocks["test"].duration == pytest.approx(20.0) and blocks["train"].duration == pytest.approx(70.0)
    r = make_splits(0, 100, trials, method="random", seed=1)
    assert len(r["train"]) == 35 and len(r["valid"]) == 5 and len(r["test"]) == 10


def test_valid_block_avoids_stretches_without_scored_samples():
    # samples count (weight > 0) only in the first half: the valid block must come from there, for any seed
    scored = np.arange(0.0, 50.0, 0.1)
    for seed in range(20):
        splits = make_splits(0, 100, None, method="blocks", seed=seed, scored_times=scored)
        assert splits["valid"].end.max() <= 50.0 + 1e-9
    # when every block is scored alike, the splits are those made without scored_times
    everywhere = np.arange(0.0, 100.0, 0.1)
    for seed in range(5):
        assert (
            make_splits(0, 100, None, method="blocks", seed=seed, scored_times=everywhere)["valid"].start.tolist()
            == make_splits(0, 100, None, method="blocks", seed=seed)["valid"].start.tolist()
        )


def test_interleaved_split_deals_every_condition_into_every_split_across_the_session():
    # 160 trials in blocks of 20 of one target (the design where a chronological split misleads)
    target = np.repeat(np.arange(8), 20)
    trials = Intervals(np.arange(160) * 2.0, np.arange(160) * 2.0 + 1.5, {"target_id": target})
    splits = make_splits(0, 320, trials, seed=3)
    again = make_splits(0, 320, trials, seed=3)
    assert all(np.array_equal(splits[k].start, again[k].start) for k in splits)
    assert [len(splits[k]) for k in ("train", "valid", "test")] == [112, 16, 32]  # 7 / 1 / 2 of every run of ten
    for name, per_target in (("train", 14), ("valid", 2), ("test", 4)):
        assert np.bincount(splits[name].columns["target_id"], minlength=8).tolist() == [per_target] * 8
    starts = np.concatenate([splits[k].start for k in splits])
    assert len(np.unique(starts)) == 160  # disjoint, every trial once
    chrono = make_splits(0, 320, trials, method="blocks", seed=3)
    assert len(np.unique(chrono["valid"].columns["target_id"])) <= 2  # one block: one or two targets
    assert make_splits(0, 320, trials, seed=4)["valid"].start.tolist() != splits["valid"].start.tolist()


def test_interleaved_split_of_a_continuous_recording_uses_many_short_blocks():
    splits = make_splits(0, 900, None, seed=0)  # 15 min: 30 blocks of 30 s, dealt in runs of ten
    assert [len(splits[k]) for k in ("train", "valid", "test")] == [21, 3, 6]
    assert splits["valid"].duration == pytest.approx(90.0) and splits["test"].duration == pytest.approx(180.0)
    assert np.diff(np.sort(splits["valid"].start)).min() > 0  # three separate blocks, one per run of ten
    assert {int(t // 300) for t in splits["valid"].start} == {0, 1, 2}
    # a stretch with no scored samples (a parked animal): a valid block there trades places with a train
    # block of its run of ten (300 s) that is scored
    scored = np.concatenate([np.arange(0.0, 330.0, 0.1), np.arange(480.0, 900.0, 0.1)])
    moved = 0
    for seed in range(20):
        valid = make_splits(0, 900, None, seed=seed, scored_times=scored)["valid"]
        unsteered = make_splits(0, 900, None, seed=seed)["valid"]
        assert len(valid) == 3 and not np.any((valid.start >= 330) & (valid.start < 480))
        moved += int(np.any((unsteered.start >= 330) & (unsteered.start < 480)))
    assert moved >= 5  # the check above was reached by seeds whose valid block fell in the stretch
