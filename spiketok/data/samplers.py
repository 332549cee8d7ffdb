"""Where windows come from: random training windows and sliding evaluation windows.

Windows never leave the intervals they are drawn from (a split's trials or time blocks), so they
never cross into another split or into a gap with no data. An interval shorter than the context
window is taken whole, as one shorter window.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch.distributed as dist

from .session import Intervals


@dataclass(frozen=True)
class WindowSpec:
    """One window to read: session id and [t0, t1) in the session's clock."""

    session: str
    t0: float
    t1: float


def _rank_world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class RandomWindowBatchSampler:
    """Batches of random windows across sessions, sessions weighted by usable duration.

    Each epoch draws `batches_per_epoch * world_size` batches from a generator seeded by
    (seed, epoch); rank r takes every world_size-th batch, so ranks draw disjoint windows and a
    resumed run that sets the same epoch gets the same batches. Windows of similar size (estimated
    tokens) are grouped into the same batch to keep padding low.
    """

    def __init__(
        self,
        intervals: dict[str, Intervals],
        window: float,
        batch_size: int,
        batches_per_epoch: int,
        seed: int = 0,
        tokens_per_second: dict[str, float] | None = None,
        bucket_batches: int = 8,
        rank: int | None = None,
        world_size: int | None = None,
    ):
        self.window, self.batch_size, self.batches_per_epoch = window, batch_size, batches_per_epoch
        self.seed, self.epoch, self.bucket_batches = seed, 0, bucket_batches
        self._rank, self._world = rank, world_size
        sess, starts, ends = [], [], []
        for sid, iv in intervals.items():
            keep = iv.end > iv.start
            sess += [sid] * int(keep.sum())
            starts.append(iv.start[keep])
            ends.append(iv.end[keep])
        if not sess:
            raise ValueError("no intervals to draw training windows from")
        self.sessions = np.array(sess)
        self.starts, self.ends = np.concatenate(starts), np.concatenate(ends)
        lengths = self.ends - self.starts
        self.prob = lengths / lengths.sum()
        rate = tokens_per_second or {}
        self.rate = np.array([rate.get(s, 1.0) for s in self.sessions])

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.batches_per_epoch

    def __iter__(self):
        rank, world = _rank_world()
        rank = self._rank if self._rank is not None else rank
        world = self._world if self._world is not None else world
        rng = np.random.default_rng([self.seed, self.epoch])
        n_batches = self.batches_per_epoch * world
        n = n_batches * self.batch_size
        k = rng.choice(len(self.prob), size=n, p=self.prob)
        length = np.minimum(self.window, self.ends[k] - self.starts[k])
        t0 = self.starts[k] + rng.uniform(0, 1, n) * (self.ends[k] - self.starts[k] - length)
        cost = self.rate[k] * length
        order = np.arange(n)
        pool = self.bucket_batches * self.batch_size
        for p0 in range(0, n, pool):  # sort by cost within pools of a few batches
            sl = order[p0:p0 + pool]
            order[p0:p0 + pool] = sl[np.argsort(cost[sl], kind="stable")]
        batches = order.reshape(n_batches, self.batch_size)
        batches = batches[rng.permutation(n_batches)]
        for b in batches[rank::world]:
            yield [WindowSpec(str(self.sessions[k[i]]), float(t0[i]), float(t0[i] + length[i])) for i in b]


def sliding_windows(intervals: Intervals, window: float, stride: float, session: str) -> list[WindowSpec]:
    """Overlapping windows covering every interval: starts every `stride` s, the last flush with the end."""
    specs = []
    for s, e in zip(intervals.start, intervals.end):
        if e - s <= window:
            specs.append(WindowSpec(session, float(s), float(e)))
            continue
        starts = np.arange(s, e - window, stride)
        starts = np.append(starts, e - window)
        specs.extend(WindowSpec(session, float(t), float(t + window)) for t in starts)
    return specs


def causal_windows(intervals: Intervals, window: float, stride: float, session: str) -> list[WindowSpec]:
    """Windows ending every `stride` s inside each interval (for models with outputs at the window end)."""
    specs = []
    for s, e in zip(intervals.start, intervals.end):
        ends = np.arange(s + stride, e + 1e-9, stride)
        specs.extend(WindowSpec(session, float(max(s, t - window)), float(t)) for t in ends)
    return specs
