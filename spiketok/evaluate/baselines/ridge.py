"""Ridge regression (a Wiener filter) on windows of bins: window length, layout and penalty chosen on `valid`."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .features import BaselineConfig, FitData, Layout, _mse, _r2_mean, window_features


@dataclass
class _Spectrum:
    """Eigen-decomposition of a layout's centred, weighted Gram matrix G = V diag(lam) V^T and Q = V^T X^T W y.

    The ridge solution for any penalty is then V diag(1 / (lam + alpha)) Q: one decomposition per layout
    serves every alpha.
    """

    lam: np.ndarray  # (r,)
    v: np.ndarray  # (F, r)
    q: np.ndarray  # (r, D)

    def coef(self, alpha: float) -> np.ndarray:
        return self.v @ (self.q / (self.lam + alpha)[:, None])


MAX_GRAM_FEATURES = 6000  # above this, one Gram matrix per layout instead of one for the widest window
MAX_SVD_VALUES = 30_000_000  # samples x features of the widest window held in memory for the SVD route


def _spectrum_from_gram(gram: np.ndarray, xty: np.ndarray) -> _Spectrum:
    lam, v = np.linalg.eigh(gram)
    return _Spectrum(np.maximum(lam, 0.0), v, v.T @ xty)


def _spectrum_from_samples(x_c: np.ndarray, w: np.ndarray, y_c: np.ndarray) -> _Spectrum:
    """Same spectrum from an SVD of the centred samples (cheaper with fewer samples than features)."""
    ws = np.sqrt(w)[:, None]
    u, sv, vt = np.linalg.svd(x_c * ws, full_matrices=False)
    return _Spectrum(sv**2, vt.T, sv[:, None] * (u.T @ (y_c * ws)))


def _gram(
    x: np.ndarray, first: np.ndarray, n_rows: int, w: np.ndarray, y_c: np.ndarray, cols: slice
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Weighted feature means, centred Gram matrix and X^T W y of columns `cols`, chunk by chunk."""
    sw, chunk = w.sum(), 4096
    sx = gram = xty = None
    for i in range(0, len(first), chunk):
        f = window_features(x, first[i : i + chunk], n_rows)[:, cols].astype(np.float64)
        wi = w[i : i + chunk, None]
        if sx is None:
            sx, gram, xty = np.zeros(f.shape[1]), np.zeros((f.shape[1],) * 2), np.zeros((f.shape[1], y_c.shape[1]))
        sx += (wi * f).sum(0)
        gram += f.T @ (wi * f)
        xty += f.T @ (wi * y_c[i : i + chunk])
    mean = sx / sw
    return mean, gram - sw * np.outer(mean, mean), xty - np.outer(mean, (w[:, None] * y_c).sum(0))


def _fit_ridge(
    cfg: BaselineConfig,
    layouts: list[Layout],
    data: FitData,
) -> tuple[np.ndarray, dict, Layout]:
    """Weighted ridge with an intercept; window length, layout and penalty chosen by the valid split's error.

    Every layout's window is a contiguous run of the widest window's lags, so its features are a column
    block of one (samples, lags x units) matrix, and its Gram matrix a block of that matrix's Gram matrix.
    """
    xs, bins, zy, split = data.xs, data.bins, data.zy, data.split
    tr, va = bins["train"], bins["valid"]
    n_units, n_rows = xs["train"].shape[1], tr.pad_h + tr.pad_la
    keep = np.flatnonzero(tr.weights > 0)
    if len(keep) > cfg.max_train_samples:
        keep = np.sort(np.random.default_rng(cfg.seed).choice(keep, cfg.max_train_samples, replace=False))
    w, y = tr.weights[keep].astype(np.float64), zy["train"][keep].astype(np.float64)
    y_mean = (w[:, None] * y).sum(0) / w.sum()
    y_c = y - y_mean
    n_feat = n_rows * n_units
    few = len(keep) < n_feat and len(keep) * n_feat <= MAX_SVD_VALUES
    if few:  # fewer samples than features: SVD of the samples, all in memory (small)
        f_all = window_features(xs["train"], tr.first[keep], n_rows).astype(np.float64)
        mean_all = (w[:, None] * f_all).sum(0) / w.sum()
        f_all -= mean_all
    elif n_feat <= MAX_GRAM_FEATURES:
        mean_all, gram_all, xty_all = _gram(xs["train"], tr.first[keep], n_rows, w, y_c, slice(None))
    x_va = window_features(xs["valid"], va.first, n_rows)
    grid, best = [], None
    for lay in layouts:
        lo = (tr.pad_h - lay.h) * n_units
        cols = slice(lo, lo + lay.rows * n_units)
        if few:
            mean, spec = mean_all[cols], _spectrum_from_samples(f_all[:, cols], w, y_c)
        elif n_feat <= MAX_GRAM_FEATURES:
            mean, spec = mean_all[cols], _spectrum_from_gram(gram_all[cols, cols], xty_all[cols])
        else:
            mean, gram, xty = _gram(xs["train"], tr.first[keep], n_rows, w, y_c, cols)
            spec = _spectrum_from_gram(gram, xty)
        proj = (x_va[:, cols].astype(np.float64) - mean) @ spec.v  # (S_valid, r)
        scores = [_mse(zy["valid"], proj @ (spec.q / (spec.lam + a)[:, None]) + y_mean, va.weights) for a in cfg.alphas]
        k = int(np.argmin(scores))
        grid.append({**lay.describe(), "alpha": float(cfg.alphas[k]), "valid_mse": float(scores[k])})
        if best is None or scores[k] < best[0]:
            best = (float(scores[k]), lay, float(cfg.alphas[k]), spec.coef(cfg.alphas[k]), mean)
    score, lay, alpha, coef, mean = best

    def predict(name: str) -> np.ndarray:
        b, out = bins[name], []
        for i in range(0, len(b.first), 4096):
            f = window_features(xs[name], b.window_start(lay)[i : i + 4096], lay.rows).astype(np.float64)
            out.append((f - mean) @ coef + y_mean)
        return np.concatenate(out) if out else np.zeros((0, y.shape[1]))

    valid_r2 = _r2_mean(zy["valid"], predict("valid"), va.weights)
    info = {
        **lay.describe(),
        "alpha": alpha,
        "valid_mse": score,
        "valid_r2": valid_r2,
        "n_train_samples": int(len(keep)),
        "n_features": int(lay.rows * n_units),
        "grid": grid,
    }
    return predict(split), info, lay
