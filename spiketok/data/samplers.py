"""The training sampler: batches of random windows across sessions (layout: `data.windows`)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch.distributed as dist

from .session import Intervals
from .windows import WindowSpec, causal_windows, random_windows, sliding_windows


def _rank_world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class RandomWindowBatchSampler:
    """Batches of random windows across sessions, sessions weighted by usable duration.

    Each epoch draws `batches_per_epoch * world_size` batches from a generator seeded by
    (seed, epoch); rank r takes every world_size-th batch, so ranks draw disjoint windows and a
    resumed run that sets the same epoch gets the same batches. Windows of similar size (estimated
    tokens) are grouped into the same batch to keep padding low. `skip` batches at the start of the
    next epoch iterated are left out (a run resumed mid-epoch continues where it stopped);
    `record_dir`, when set, gets one JSON line per batch yielded (`windows_rank<r>.jsonl`, for tests).
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
        if batch_size < 1 or batches_per_epoch < 1:
            raise ValueError(f"batch_size ({batch_size}) and batches_per_epoch ({batches_per_epoch}) must be >= 1")
        self.window, self.batch_size, self.batches_per_epoch = window, batch_size, batches_per_epoch
        self.seed, self.epoch, self.bucket_batches = seed, 0, bucket_batches
        self.skip = 0
        self.record_dir: Path | None = None
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
        """Called by Lightning before each epoch; a new epoch starts from its first batch."""
        if epoch != self.epoch:
            self.skip = 0
        self.epoch = epoch

    def __len__(self) -> int:
        return self.batches_per_epoch

    def rank_world(self) -> tuple[int, int]:
        """This process's rank and the world size: as given, else from torch.distributed, else (0, 1)."""
        rank, world = _rank_world()
        return (self._rank if self._rank is not None else rank), (self._world if self._world is not None else world)

    def epoch_batches(self, epoch: int) -> list[list[WindowSpec]]:
        """All batches this rank draws in `epoch`, in order (a pure function of seed, epoch, rank, world)."""
        rank, world = self.rank_world()
        rng = np.random.default_rng([self.seed, epoch])
        n_batches = self.batches_per_epoch * world
        n = n_batches * self.batch_size
        k = rng.choice(len(self.prob), size=n, p=self.prob)
        t0, length = random_windows(self.starts[k], self.ends[k], self.window, rng.uniform(0, 1, n))
        draws = np.random.default_rng([self.seed, epoch, 1]).integers(0, 2**31, n)  # own stream: windows unchanged
        cost = self.rate[k] * length
        order = np.arange(n)
        pool = self.bucket_batches * self.batch_size
        for p0 in range(0, n, pool):  # sort by cost within pools of a few batches
            sl = order[p0 : p0 + pool]
            order[p0 : p0 + pool] = sl[np.argsort(cost[sl], kind="stable")]
        batches = order.reshape(n_batches, self.batch_size)
        batches = batches[rng.permutation(n_batches)]
        return [
            [WindowSpec(str(self.sessions[k[i]]), float(t0[i]), float(t0[i] + length[i]), int(draws[i])) for i in b]
            for b in batches[rank::world]
        ]

    def __iter__(self):
        epoch, first = self.epoch, self.skip
        self.skip = 0  # a skip applies to one epoch only
        batches = self.epoch_batches(epoch)
        for index in range(first, len(batches)):
            if self.record_dir is not None:
                self._record(epoch, index, batches[index])
            yield batches[index]

    def _record(self, epoch: int, index: int, batch: list[WindowSpec]) -> None:
        rank, world = self.rank_world()
        line = {
            "epoch": epoch,
            "index": index,
            "rank": rank,
            "world": world,
            "windows": [[w.session, w.t0, w.t1] for w in batch],
        }
        path = Path(self.record_dir) / f"windows_rank{rank}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a") as f:
            f.write(json.dumps(line) + "\n")


__all__ = ["RandomWindowBatchSampler", "WindowSpec", "causal_windows", "sliding_windows"]
