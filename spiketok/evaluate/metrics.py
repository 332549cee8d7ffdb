"""Scores: R^2 per output dimension (weighted samples), and the session mean."""

from __future__ import annotations

import numpy as np


def r2_per_dim(y_true: np.ndarray, y_pred: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """Coefficient of determination per column of (T, D) arrays, over samples with weight > 0."""
    y_true, y_pred = np.asarray(y_true, np.float64), np.asarray(y_pred, np.float64)
    if y_true.ndim == 1:
        y_true, y_pred = y_true[:, None], y_pred[:, None]
    keep = np.isfinite(y_true).all(1) & np.isfinite(y_pred).all(1)
    if weights is not None:
        keep &= np.asarray(weights) > 0
    t, p = y_true[keep], y_pred[keep]
    if len(t) < 2:
        return np.full(y_true.shape[1], np.nan)
    sse = ((t - p) ** 2).sum(0)
    sst = ((t - t.mean(0)) ** 2).sum(0)
    return 1 - sse / np.maximum(sst, 1e-12)


def session_scores(target: str, y_true: np.ndarray, y_pred: np.ndarray, weights: np.ndarray, dims: list[str]) -> dict:
    """One session's scores as reports store them: its target, mean R², R² per dimension, the dimensions, and
    the samples scored and left out (weight 0)."""
    r2 = r2_per_dim(y_true, y_pred, weights)
    return {
        "target": target,
        "r2": float(np.nanmean(r2)),
        "r2_per_dim": [float(v) for v in r2],
        "dims": dims,
        "n_samples": int((weights > 0).sum()),
        "n_left_out": int((weights <= 0).sum()),
    }
