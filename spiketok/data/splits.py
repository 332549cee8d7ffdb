"""Train/valid/test splits: whole trials when a session has trials, else time blocks.

"interleaved" (the default) makes validation and test look like training: trials are dealt out in runs of
ten consecutive trials of one condition (a trials column such as `target_id`), seven to train, one to
valid and two to test in an order drawn by the seed, so every condition and every part of the session is
in every split; a recording without trials is cut into blocks of about `BLOCK_SECONDS` dealt out the same
way. "blocks" is the chronological split a closed-loop user meets: ten equal time blocks, the 3rd and 8th
test (the protocol of the floors in shared/data/README.md), one further block (drawn by the seed) valid.
"random" shuffles whole trials (or blocks) by the seed.
"""

from __future__ import annotations

import numpy as np

from .intervals import DataError, Intervals

SPLIT_NAMES = ("train", "valid", "test")
SPLIT_METHODS = ("interleaved", "blocks", "random")
TEST_BLOCKS = (2, 7)
DEAL = ("train",) * 7 + ("valid",) + ("test",) * 2  # one run of ten: 70% train, 10% valid, 20% test
BLOCK_SECONDS = 30.0  # interleaved blocks of continuous data: several 4 s windows long, dozens per session
CONDITION_COLUMNS = ("condition", "target_id", "target", "direction", "stimulus")
MIN_SPLIT_TRIALS = 3  # with fewer trials a session is split in time blocks


def _block_of(t: np.ndarray, start: float, end: float, n_blocks: int) -> np.ndarray:
    width = (end - start) / n_blocks
    return np.clip(((t - start) // width).astype(int), 0, n_blocks - 1)


def condition_column(trials: Intervals) -> str | None:
    """The trials column that names each trial's condition (the first of CONDITION_COLUMNS with 2 or more
    values and at least 4 trials per value on average), or None."""
    for name in CONDITION_COLUMNS:
        values = trials.columns.get(name)
        if values is None or values.ndim != 1:
            continue
        n_values = len(np.unique(values.astype(str)))
        if 2 <= n_values <= len(trials) / 4:
            return name
    return None


def deal(groups: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Labels for items in time order: each group's items, in runs of ten, get DEAL in an order drawn by rng.

    groups: (n,) condition of each item (all equal when there are none). Returns (n,) split names.
    """
    label = np.empty(len(groups), dtype=object)
    for g in np.unique(groups):
        members = np.flatnonzero(groups == g)
        for first in range(0, len(members), len(DEAL)):
            run = members[first : first + len(DEAL)]
            label[run] = np.asarray(DEAL, dtype=object)[rng.permutation(len(DEAL))[: len(run)]]
    return label


def _thin_blocks(scored_times: np.ndarray | None, start: float, end: float, n_blocks: int) -> np.ndarray:
    """(n_blocks,) True where a block holds under a quarter of the average block's scored samples."""
    if scored_times is None or not len(scored_times):
        return np.zeros(n_blocks, dtype=bool)
    per_block = np.bincount(_block_of(np.asarray(scored_times, float), start, end, n_blocks), minlength=n_blocks)
    return per_block < 0.25 * per_block.mean()


def make_splits(
    start: float,
    end: float,
    trials: Intervals | None = None,
    method: str = "interleaved",
    seed: int = 0,
    n_blocks: int = 10,
    fractions: tuple[float, float, float] = (0.7, 0.1, 0.2),
    scored_times: np.ndarray | None = None,
) -> dict[str, Intervals]:
    """Return {"train", "valid", "test"} intervals; deterministic from `seed`.

    `scored_times`: times of the behaviour samples that count (weight > 0). With "blocks", the valid
    block is then drawn only among blocks holding at least a quarter of the average block's share of
    them, so validation never lands on a stretch where every sample is left out (a parked animal); with
    "interleaved" blocks, a valid block on such a stretch trades places with a train block of its run of ten.
    """
    if not (np.isfinite(start) and np.isfinite(end)) or end <= start:
        raise DataError(f"cannot split the time span [{start}, {end}]: it is empty or not finite (NaN times?)")
    if method not in SPLIT_METHODS:
        raise DataError(f"unknown split method {method!r}: use one of {', '.join(map(repr, SPLIT_METHODS))}")
    rng = np.random.default_rng(seed)
    with_trials = trials is not None and len(trials) >= MIN_SPLIT_TRIALS
    if with_trials:
        units = trials
    else:
        if method == "interleaved":
            n_blocks = max(n_blocks, len(DEAL) * round((end - start) / (len(DEAL) * BLOCK_SECONDS)))
        edges = np.linspace(start, end, n_blocks + 1)
        units = Intervals(edges[:-1], edges[1:])
    n = len(units)
    label = np.empty(n, dtype=object)
    if method == "interleaved":
        column = condition_column(units) if with_trials else None
        groups = units.columns[column].astype(str) if column else np.zeros(n, dtype=int)
        label = deal(groups, rng)
        if column and not all((label == name).any() for name in SPLIT_NAMES):
            label = deal(np.zeros(n, dtype=int), np.random.default_rng(seed))  # too few trials per condition
        if not with_trials:
            thin = _thin_blocks(scored_times, start, end, n)
            for first in range(0, n, len(DEAL)):
                run = np.arange(first, min(n, first + len(DEAL)))
                spare = run[(label[run] == "train") & ~thin[run]]
                for b in run[(label[run] == "valid") & thin[run]]:
                    if len(spare):
                        label[b], label[spare[0]] = "train", "valid"
                        spare = spare[1:]
    elif method == "blocks":
        block = _block_of((units.start + units.end) / 2, start, end, n_blocks)
        others = [b for b in range(n_blocks) if b not in TEST_BLOCKS]
        if scored_times is not None and len(scored_times):
            per_block = np.bincount(
                _block_of(np.asarray(scored_times, float), start, end, n_blocks), minlength=n_blocks
            )
            enough = [b for b in others if per_block[b] >= 0.25 * per_block[others].mean()]
            others = enough or others
        valid_block = others[int(rng.integers(len(others)))]
        label[:] = "train"
        label[np.isin(block, TEST_BLOCKS)] = "test"
        label[block == valid_block] = "valid"
    else:
        order = rng.permutation(n)
        n_train = int(round(fractions[0] * n))
        n_valid = max(1, int(round(fractions[1] * n)))
        label[order[:n_train]] = "train"
        label[order[n_train : n_train + n_valid]] = "valid"
        label[order[n_train + n_valid :]] = "test"
    splits = {name: units.select(label == name) for name in SPLIT_NAMES}
    for name, iv in splits.items():
        if len(iv) == 0:
            raise DataError(
                f"split {name!r} is empty: the session has too few trials or blocks to split "
                f"({n} {'trials' if with_trials else 'blocks'}; method {method!r})"
            )
        order = np.argsort(iv.start)
        splits[name] = iv.select(order)
    return splits
