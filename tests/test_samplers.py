"""Training and evaluation windows: inside the train split, weighted by duration, disjoint across ranks."""

from __future__ import annotations

import numpy as np
import pytest

from spiketok.data.samplers import RandomWindowBatchSampler, WindowSpec, causal_windows, sliding_windows
from spiketok.data.session import Intervals
from spiketok.data.simulate import simulate_to_folder
from spiketok.data.storage import SessionDataset
from spiketok.train.config import load_config
from spiketok.train.data import train_sampler

EPS = 1e-9  # float slack on window ends (t0 + length may round one ulp past an interval end)


@pytest.fixture(scope="module")
def sim(tmp_path_factory) -> SessionDataset:
    """Two small simulated sessions with trials (so the train split has gaps between trials)."""
    out = tmp_path_factory.mktemp("sim")
    simulate_to_folder(out, n_animals=2, sessions_per_animal=1, n_units=12, duration=60.0, seed=3, task="center_out")
    return SessionDataset(out)


def _all_windows(sampler: RandomWindowBatchSampler, epochs: range) -> list[WindowSpec]:
    windows = []
    for epoch in epochs:
        sampler.set_epoch(epoch)
        for batch in sampler:
            assert len(batch) == sampler.batch_size
            windows.extend(batch)
    return windows


def _interval_of(w: WindowSpec, iv: Intervals) -> int:
    """Index of the one interval that holds the whole window, or -1."""
    inside = np.flatnonzero((iv.start <= w.t0) & (w.t1 <= iv.end + EPS))
    return int(inside[0]) if len(inside) == 1 else -1


def test_training_windows_stay_inside_the_train_split(sim: SessionDataset) -> None:
    cfg = load_config("tiny", ["batch_size=16", "steps_per_epoch=20", "seed=5"])
    sampler = train_sampler(sim, 1.0, cfg)
    windows = _all_windows(sampler, range(3))
    assert len(windows) == 3 * 20 * 16
    sessions = {s.id: s for s in sim}
    assert {w.session for w in windows} == set(sessions)
    for w in windows:
        splits = sessions[w.session].splits
        k = _interval_of(w, splits["train"])
        assert k >= 0, f"{w} is not inside one train interval of {w.session}"
        length = splits["train"].end[k] - splits["train"].start[k]
        assert w.t1 - w.t0 == pytest.approx(min(1.0, length), abs=1e-9)
        for other in ("valid", "test"):  # never overlaps another split
            iv = splits[other]
            assert not np.any((iv.start < w.t1 - EPS) & (w.t0 + EPS < iv.end)), f"{w} overlaps the {other} split"


def test_sessions_and_intervals_are_weighted_by_duration() -> None:
    # session a: 30 s of training intervals, session b: 10 s; intervals of unequal length
    a = Intervals([0.0, 20.0, 40.0], [5.0, 30.0, 55.0])  # 5 + 10 + 15 s
    b = Intervals([100.0, 200.0], [102.0, 208.0])  # 2 + 8 s
    sampler = RandomWindowBatchSampler({"a": a, "b": b}, 1.0, batch_size=32, batches_per_epoch=50, seed=0)
    windows = _all_windows(sampler, range(4))  # 6400 windows
    n = len(windows)
    share_a = np.mean([w.session == "a" for w in windows])
    assert share_a == pytest.approx(0.75, abs=0.03)  # 30 / (30 + 10); binomial sd is 0.005
    counts = np.zeros(5)
    for w in windows:
        iv, offset = (a, 0) if w.session == "a" else (b, 3)
        counts[offset + _interval_of(w, iv)] += 1
    expected = np.array([5, 10, 15, 2, 8]) / 40 * n
    np.testing.assert_allclose(counts, expected, rtol=0.15)


def test_short_intervals_are_taken_whole() -> None:
    iv = Intervals([0.0, 10.0, 20.0], [0.4, 10.7, 25.0])
    sampler = RandomWindowBatchSampler({"s": iv}, 1.0, batch_size=8, batches_per_epoch=40, seed=1)
    windows = _all_windows(sampler, range(1))
    short = [w for w in windows if w.t0 < 15.0]
    assert short, "no window drawn from the short intervals"
    for w in short:
        assert (w.t0, w.t1) in {(0.0, 0.4), (10.0, 10.7)}
    long_ = [w for w in windows if w.t0 >= 15.0]
    assert all(w.t1 - w.t0 == pytest.approx(1.0) and 20.0 <= w.t0 and w.t1 <= 25.0 + EPS for w in long_)


def test_same_seed_and_epoch_give_the_same_batches_and_skip_resumes_mid_epoch() -> None:
    iv = {"s": Intervals([0.0, 50.0], [40.0, 90.0])}
    one = RandomWindowBatchSampler(iv, 1.0, batch_size=4, batches_per_epoch=10, seed=7)
    two = RandomWindowBatchSampler(iv, 1.0, batch_size=4, batches_per_epoch=10, seed=7)
    one.set_epoch(3)
    two.set_epoch(3)
    assert list(one) == list(two) == one.epoch_batches(3)
    assert one.epoch_batches(3) != one.epoch_batches(4)
    assert RandomWindowBatchSampler(iv, 1.0, 4, 10, seed=8).epoch_batches(3) != one.epoch_batches(3)
    two.skip = 6  # as restored from a checkpoint taken after 6 steps of epoch 3
    assert list(two) == one.epoch_batches(3)[6:]
    assert list(two) == one.epoch_batches(3)  # the skip applies once
    two.skip = 6
    two.set_epoch(4)  # a new epoch starts from its first batch
    assert list(two) == one.epoch_batches(4)


def test_distributed_ranks_draw_disjoint_windows() -> None:
    iv = {"a": Intervals([0.0], [100.0]), "b": Intervals([0.0, 30.0], [20.0, 60.0])}
    world, per_rank = 3, 6
    ranks = [RandomWindowBatchSampler(iv, 1.0, 4, per_rank, seed=2, rank=r, world_size=world) for r in range(world)]
    # one process drawing world * per_rank batches draws the same batches: rank r holds every world-th one
    single = RandomWindowBatchSampler(iv, 1.0, 4, per_rank * world, seed=2, rank=0, world_size=1)
    for epoch in (0, 1):
        everything = single.epoch_batches(epoch)
        drawn = []
        for r, sampler in enumerate(ranks):
            sampler.set_epoch(epoch)
            batches = list(sampler)
            assert len(batches) == len(sampler) == per_rank
            assert batches == everything[r::world]
            drawn.append({(w.session, w.t0) for b in batches for w in b})
        for r in range(world):
            for q in range(r + 1, world):
                assert not drawn[r] & drawn[q], f"ranks {r} and {q} share windows in epoch {epoch}"
        assert sum(len(d) for d in drawn) == per_rank * world * 4


@pytest.mark.parametrize("stride", [0.5, 0.3])
def test_sliding_windows_cover_every_sample(stride: float) -> None:
    iv = Intervals([0.0, 3.0, 10.0, 20.0], [0.6, 4.0, 13.37, 27.05])  # shorter, equal to, and longer than 1 s
    specs = sliding_windows(iv, 1.0, stride, "s")
    for s, e in zip(iv.start, iv.end):
        times = np.arange(s, e, 0.01)
        mine = [w for w in specs if s <= w.t0 and w.t1 <= e + EPS]
        assert mine, f"no window in [{s}, {e})"
        covered = np.zeros(len(times), bool)
        for w in mine:
            covered |= (times >= w.t0) & (times < w.t1)
            assert w.t1 - w.t0 == pytest.approx(min(1.0, e - s))
        assert covered.all(), f"samples of [{s}, {e}) not covered: {times[~covered][:5]}"
        assert max(w.t1 for w in mine) == pytest.approx(e)  # the last window is flush with the end
        starts = np.sort([w.t0 for w in mine])
        assert np.all(np.diff(starts) <= stride + 1e-9)
    assert len(specs) == sum(1 for w in specs if _interval_of(w, iv) >= 0)  # none crosses a gap


def test_causal_windows_end_inside_their_interval() -> None:
    iv = Intervals([0.0, 5.0], [2.0, 9.0])
    specs = causal_windows(iv, 1.0, 0.5, "s")
    assert len(specs) == 4 + 8
    for w in specs:
        assert _interval_of(w, iv) >= 0
        assert w.t1 - w.t0 <= 1.0 + 1e-9


def test_unit_dropout_differs_between_draws_of_the_same_short_trial(sim: SessionDataset) -> None:
    # a trial shorter than the window is always read whole, from the same t0; dropout must still vary
    from spiketok.tokenize import TOKEN_START
    from spiketok.train.data import WindowDataset
    from spiketok.train.run import build_model

    cfg = load_config("tiny", ["target=hand_velocity", "model.window=1"])
    model, targets = build_model(cfg, sim)
    s = next(iter(sim))
    trial = Intervals([10.0], [10.6])
    sampler = RandomWindowBatchSampler({s.id: trial}, 1.0, batch_size=4, batches_per_epoch=2, seed=0)
    data = WindowDataset.for_model(model, sim, targets, unit_dropout=True, min_units=2)
    kept = []
    for w in _all_windows(sampler, range(5)):  # 40 draws of one trial
        assert (w.t0, w.t1) == (10.0, 10.6)
        sample = data[w]
        kept.append(frozenset(sample.input_units[sample.input_types == TOKEN_START].tolist()))
        assert data[w].input_units.tolist() == sample.input_units.tolist()  # same draw, same units
    assert len(set(kept)) > 30
    assert min(map(len, kept)) >= 2 and max(map(len, kept)) <= s.n_units
