"""Train/valid/test splits: whole trials when a session has trials, else contiguous time blocks.

The default ("blocks") cuts the session into `n_blocks` equal time blocks; the 3rd and 8th form the
test split (the protocol of the floors in shared/data/README.md), one further block picked by the
seed is the validation split, the rest train. With trials, each whole trial goes to the block that
holds its midpoint, so no trial is cut. "random" shuffles whole trials (or blocks) by the seed.
"""

from __future__ import annotations

import numpy as np

from .session import DataError, Intervals

SPLIT_NAMES = ("train", "valid", "test")
TEST_BLOCKS = (2, 7)


def _block_of(t: np.ndarray, start: float, end: float, n_blocks: int) -> np.ndarray:
    width = (end - start) / n_blocks
    return np.clip(((t - start) // width).astype(int), 0, n_blocks - 1)


def make_splits(
    start: float,
    end: float,
    trials: Intervals | None = None,
    method: str = "blocks",
    seed: int = 0,
    n_blocks: int = 10,
    fractions: tuple[float, float, float] = (0.7, 0.1, 0.2),
    scored_times: np.ndarray | None = None,
) -> dict[str, Intervals]:
    """Return {"train", "valid", "test"} intervals; deterministic from `seed`.

    `scored_times`: times of the behaviour samples that count (weight > 0). With "blocks", the valid
    block is then drawn only among blocks holding at least a quarter of the average block's share of
    them, so validation never lands on a stretch where every sample is left out (a parked animal).
    """
    if end <= start:
        raise DataError(f"cannot split an empty time span [{start}, {end}]")
    rng = np.random.default_rng(seed)
    if trials is not None and len(trials) >= 3:
        units = trials
    else:
        edges = np.linspace(start, end, n_blocks + 1)
        units = Intervals(edges[:-1], edges[1:])
    n = len(units)
    label = np.empty(n, dtype=object)
    if method == "blocks":
        block = _block_of((units.start + units.end) / 2, start, end, n_blocks)
        others = [b for b in range(n_blocks) if b not in TEST_BLOCKS]
        if scored_times is not None and len(scored_times):
            per_block = np.bincount(_block_of(np.asarray(scored_times, float), start, end, n_blocks), minlength=n_blocks)
            enough = [b for b in others if per_block[b] >= 0.25 * per_block[others].mean()]
            others = enough or others
        valid_block = others[int(rng.integers(len(others)))]
        label[:] = "train"
        label[np.isin(block, TEST_BLOCKS)] = "test"
        label[block == valid_block] = "valid"
    elif method == "random":
        order = rng.permutation(n)
        n_train = int(round(fractions[0] * n))
        n_valid = max(1, int(round(fractions[1] * n)))
        label[order[:n_train]] = "train"
        label[order[n_train:n_train + n_valid]] = "valid"
        label[order[n_train + n_valid:]] = "test"
    else:
        raise DataError(f"unknown split method {method!r}: use 'blocks' or 'random'")
    splits = {name: units.select(label == name) for name in SPLIT_NAMES}
    for name, iv in splits.items():
        if len(iv) == 0:
            raise DataError(f"split {name!r} is empty: the session has too few trials or blocks to split")
        order = np.argsort(iv.start)
        splits[name] = iv.select(order)
    return splits
