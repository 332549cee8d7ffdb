"""The data a model adapts on: part of a new session's training split, with a validation part held out.

`--train-trials N` takes N whole trials of the training split (the first N in time, or N drawn with a
seed); `--train-seconds S` takes its first S seconds. The last `valid_fraction` of that data (whole
trials, or the last seconds) is held out for early stopping. With fewer than `min_valid_trials`
trials (or `min_valid_seconds` s) nothing is held out and training runs a fixed number of steps on
all of it: a held-out part that small is too noisy to choose a stopping point by (on Mihi, 2 of 10
trials are 10 behaviour samples). No labelled data beyond the N trials is ever used.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..data.session import DataError, Intervals
from ..data.storage import SessionDataset, StoredSession


@dataclass
class AdaptationData:
    """Intervals of the new session to train on and to validate on (None: nothing held out)."""

    train: Intervals
    valid: Intervals | None
    description: str


def as_session(session: StoredSession | str | Path) -> StoredSession:
    """A prepared session (a StoredSession, or the path of a prepared .h5 file)."""
    if isinstance(session, StoredSession):
        return session
    path = Path(session)
    if not path.is_file():
        raise DataError(f"{path}: no such prepared session file (run `spiketok prepare` on the NWB file first)")
    try:
        return StoredSession(path)
    except DataError as e:  # the reader's reason, and what to do
        raise DataError(f"{path}: not a prepared session ({e}); run `spiketok prepare` on the NWB file first") from None


def has_trials(session: StoredSession) -> bool:
    """Whether the session's splits are made of whole trials (else of time blocks)."""
    return session.trials is not None and len(session.trials) >= 3


def _sorted(iv: Intervals) -> Intervals:
    return iv.select(np.argsort(iv.start, kind="stable"))


def select_trials(session: StoredSession, n_trials: int, pick: str = "first", seed: int = 0) -> Intervals:
    """N whole trials of the training split, in time order: the first N, or N drawn with `seed`."""
    if not has_trials(session):
        raise DataError(
            f"{session.path}: the session has no trials table, so its training split is made of time "
            "blocks; choose the adaptation data in seconds instead (--train-seconds / seconds=)"
        )
    pool = _sorted(session.splits["train"])
    if n_trials < 1:
        raise DataError(f"the number of adaptation trials must be at least 1, got {n_trials}")
    if n_trials > len(pool):
        raise DataError(f"{session.id}: asked for {n_trials} trials but its training split has only {len(pool)}")
    if pick == "first":
        chosen = np.arange(n_trials)
    elif pick == "random":
        chosen = np.sort(np.random.default_rng(seed).choice(len(pool), size=n_trials, replace=False))
    else:
        raise ValueError(f"pick must be 'first' or 'random', got {pick!r}")
    mask = np.zeros(len(pool), dtype=bool)
    mask[chosen] = True
    return pool.select(mask)


def first_seconds(session: StoredSession, seconds: float) -> Intervals:
    """The first `seconds` of the training split (its intervals in time order, the last one cut)."""
    pool = _sorted(session.splits["train"])
    if seconds <= 0:
        raise DataError(f"the adaptation time must be positive, got {seconds} s")
    if seconds > pool.duration + 1e-9:
        raise DataError(
            f"{session.id}: asked for {seconds:g} s but its training split holds only {pool.duration:.1f} s"
        )
    starts, ends, left = [], [], float(seconds)
    for a, b in zip(pool.start, pool.end):
        if left <= 1e-9:
            break
        take = min(b - a, left)
        starts.append(a)
        ends.append(a + take)
        left -= take
    return Intervals(np.array(starts), np.array(ends))


def adaptation_data(
    session: StoredSession,
    n_trials: int | None = None,
    seconds: float | None = None,
    pick: str = "first",
    seed: int = 0,
    valid_fraction: float = 0.2,
    min_valid_trials: int = 20,
    min_valid_seconds: float = 10.0,
) -> AdaptationData:
    """Split the chosen adaptation data into a training part and a held-out validation part.

    The last `valid_fraction` is held out when there are at least `min_valid_trials` trials (or
    `min_valid_seconds` s); else nothing is (valid None). With neither `n_trials` nor `seconds`,
    the whole training split is used, and the session's own valid split validates.
    """
    if n_trials is not None and seconds is not None:
        raise ValueError("give the adaptation data as trials or as seconds, not both")
    if n_trials is None and seconds is None:
        return AdaptationData(
            _sorted(session.splits["train"]),
            _sorted(session.splits["valid"]),
            "whole training split; the session's valid split for early stopping",
        )
    if n_trials is not None:
        trials = select_trials(session, int(n_trials), pick, seed)
        n = len(trials)
        if n < min_valid_trials:
            return AdaptationData(trials, None, f"{n} trial(s) ({pick}), none held out: fixed number of steps")
        n_valid = max(1, int(round(valid_fraction * n)))
        is_valid = np.arange(n) >= n - n_valid  # the last ones in time
        return AdaptationData(
            trials.select(~is_valid),
            trials.select(is_valid),
            f"{n} trials ({pick}): {n - n_valid} to train on, the last {n_valid} held out",
        )
    part = first_seconds(session, float(seconds))
    hold = valid_fraction * part.duration
    if part.duration < min_valid_seconds:
        return AdaptationData(part, None, f"first {seconds:g} s, none held out: fixed number of steps")
    # cut at the time where the last `hold` seconds of data begin
    cum = np.cumsum(part.end - part.start)
    k = int(np.searchsorted(cum, part.duration - hold))
    cut = part.end[k] - (cum[k] - (part.duration - hold))
    train = Intervals(np.append(part.start[:k], part.start[k]), np.append(part.end[:k], cut))
    valid = Intervals(np.insert(part.start[k + 1 :], 0, cut), np.insert(part.end[k + 1 :], 0, part.end[k]))
    train, valid = (iv.select(iv.end - iv.start > 1e-9) for iv in (train, valid))
    return AdaptationData(train, valid, f"first {seconds:g} s: the last {hold:.1f} s held out")


def restricted_session(session: StoredSession, data: AdaptationData) -> StoredSession:
    """A view of the session whose train/valid splits are the adaptation data (test split unchanged)."""
    view = copy.copy(session)  # through __getstate__: its own file handle, opened on first read
    view._file, view._d, view._pid = None, {}, None
    view.splits = {
        **session.splits,
        "train": data.train,
        "valid": data.valid if data.valid is not None else Intervals([], []),
    }
    return view


def single_session_dataset(session: StoredSession) -> SessionDataset:
    """A SessionDataset holding one (possibly restricted) session object as is."""
    ds = SessionDataset.__new__(SessionDataset)  # the constructor reads files; this one is already open
    ds.sessions = {session.id: session}
    return ds
