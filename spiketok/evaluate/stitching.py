"""Stitching: average the predictions that overlapping windows make for the same behaviour sample."""

from __future__ import annotations

import numpy as np


class Stitcher:
    """Accumulates predictions keyed by absolute sample time; `result` gives the per-sample mean."""

    def __init__(self, timestamps: np.ndarray, dim: int):
        self.timestamps = np.asarray(timestamps, np.float64)
        self.sum = np.zeros((len(self.timestamps), dim))
        self.count = np.zeros(len(self.timestamps))

    def add(self, times: np.ndarray, preds: np.ndarray, tol: float = 1e-6) -> None:
        """Add predictions (n, dim) made at absolute `times` (n,) that match stored timestamps."""
        idx = np.searchsorted(self.timestamps, times - tol)
        idx = np.clip(idx, 0, len(self.timestamps) - 1)
        ok = np.abs(self.timestamps[idx] - times) <= tol * 10 + 1e-5
        np.add.at(self.sum, idx[ok], preds[ok])
        np.add.at(self.count, idx[ok], 1)

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        """Mean prediction (T, dim), NaN where no window covered a sample, and the covered mask."""
        covered = self.count > 0
        out = np.full_like(self.sum, np.nan)
        out[covered] = self.sum[covered] / self.count[covered, None]
        return out, covered
