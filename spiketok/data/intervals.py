"""Time intervals (trials, splits) and the error bad input data raises: the ground floor of spiketok.data."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import SpiketokError


class DataError(SpiketokError, ValueError):
    """Bad input data, with a message that names the file, the field and what to do."""


@dataclass
class Intervals:
    """Half-open time intervals [start, end) in seconds, with optional per-interval columns."""

    start: np.ndarray
    end: np.ndarray
    columns: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.start = np.asarray(self.start, dtype=np.float64).reshape(-1)
        self.end = np.asarray(self.end, dtype=np.float64).reshape(-1)
        if self.start.shape != self.end.shape:
            raise DataError(f"intervals: start has {len(self.start)} entries, end has {len(self.end)}")
        if np.any(self.end < self.start):
            raise DataError("intervals: some end before their start")

    def __len__(self) -> int:
        return len(self.start)

    @property
    def duration(self) -> float:
        return float(np.sum(self.end - self.start))

    def contains(self, t: np.ndarray) -> np.ndarray:
        """Boolean mask of the times that fall inside any interval."""
        t = np.asarray(t)
        order = np.argsort(self.start)
        starts, ends = self.start[order], self.end[order]
        i = np.searchsorted(starts, t, side="right") - 1
        ok = i >= 0
        out = np.zeros(t.shape, dtype=bool)
        out[ok] = t[ok] < ends[i[ok]]
        return out

    def select(self, mask: np.ndarray) -> Intervals:
        return Intervals(self.start[mask], self.end[mask], {k: v[mask] for k, v in self.columns.items()})
