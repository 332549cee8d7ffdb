"""Binned spikes for the baselines: settings, window layouts, bins of a split, standardisation, features."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ...data.session import DataError, Intervals
from ...data.storage import StoredSession
from ...schema import ConfigError
from ..metrics import r2_per_dim

MODELS = ("ridge", "gru", "mlp")
LAGS = ("auto", "causal", "centred")
MIN_VALID_SAMPLES = 20  # fewer usable samples in the valid split: validate on the end of each train interval
HISTORY_CHOICES = (0.02, 0.06, 0.1, 0.2, 0.3, 0.5, 1.0)  # ridge: window lengths (s) tried; 1 to 50 bins of 20 ms
DEFAULT_HISTORY = {"gru": 0.5, "mlp": 0.5}  # seconds: GRU/MLP's first window; the ridge probe may add another
DEFAULT_LR = {"gru": 3e-3, "mlp": 1e-3}


@dataclass
class BaselineConfig:
    """Settings of a baseline decoder.

    history: seconds of spikes in each input window. None: ridge tries every HISTORY_CHOICES length; GRU/MLP
      train two windows, DEFAULT_HISTORY (causal unless lags says centred) and the one a ridge probe
      prefers on the valid split, and keep the better on the valid split.
    lags: 'causal', 'centred' or 'auto' (both tried; the valid split picks).
    lookahead: with lags='causal' only, extra seconds of bins after the sample's bin.
    """

    model: str = "ridge"
    bin: float = 0.02
    history: float | None = None
    lags: str = "auto"
    lookahead: float = 0.0
    alphas: tuple[float, ...] = tuple(float(a) for a in np.logspace(-1, 6, 15))
    history_choices: tuple[float, ...] = HISTORY_CHOICES
    max_train_samples: int = 60_000  # ridge only: a random subset of training samples beyond this
    hidden: int | None = None  # 128 for the GRU, 256 for the MLP
    layers: int = 2
    dropout: float = 0.2
    lr: float | None = None  # 3e-3 for the GRU, 1e-3 for the MLP
    weight_decay: float = 1e-4
    batch_size: int | None = None  # 32 chunks (GRU), 256 samples (MLP)
    max_steps: int = 2000
    eval_every: int = 100
    patience: int = 5  # evaluations without a lower validation error before stopping
    threads: int = 1  # torch threads while fitting: these small models gain little from more, and lose on a busy CPU
    seed: int = 0

    def __post_init__(self) -> None:
        if self.model not in MODELS:
            raise ConfigError(f"unknown baseline {self.model!r}; choose one of {', '.join(MODELS)}")
        if self.lags not in LAGS:
            raise ConfigError(f"unknown lags {self.lags!r}; choose one of {', '.join(LAGS)}")
        if self.bin <= 0:
            raise ConfigError(f"bin width must be positive, got {self.bin}")
        if self.history is None:  # windows shorter than one bin cannot be built: try the others
            self.history_choices = tuple(h for h in self.history_choices if h >= self.bin - 1e-12)
        histories = [self.history] if self.history is not None else list(self.history_choices)
        if not histories or min(histories) < self.bin or self.lookahead < 0:
            raise ConfigError(f"history must cover at least one bin ({self.bin} s) and lookahead must be >= 0")
        if self.lookahead > 0 and self.lags != "causal":
            raise ConfigError("lookahead goes with lags='causal' only (lags='centred' already looks ahead)")
        if self.hidden is None:
            self.hidden = 128 if self.model == "gru" else 256
        if self.lr is None:
            self.lr = DEFAULT_LR.get(self.model, 1e-3)
        if self.batch_size is None:
            self.batch_size = 32 if self.model == "gru" else 256

    def layouts(self) -> list[Layout]:
        """The input windows a ridge tries: every history length (one, or the choices) in every layout asked."""
        histories = [self.history] if self.history is not None else list(self.history_choices)
        lags = ["causal", "centred"] if self.lags == "auto" else [self.lags]
        out: list[Layout] = []
        for hist in histories:
            for lag in lags:
                c = Layout.make(lag, hist, self.bin, self.lookahead)
                if all((c.h, c.la) != (o.h, o.la) for o in out):  # a 1-bin window is both causal and centred
                    out.append(c)
        return out


@dataclass(frozen=True)
class Layout:
    """An input window: `h` bins up to and including the sample's bin, then `la` bins after it."""

    lags: str
    history: float  # seconds the window spans, (h + la) * bin
    h: int
    la: int

    @classmethod
    def make(cls, lags: str, history: float, bin: float, lookahead: float = 0.0) -> Layout:
        n = max(1, int(round(history / bin)))
        if lags == "centred":
            la = (n - 1) // 2
            return cls(lags, (n * bin), n - la, la)
        la = int(round(lookahead / bin))
        return cls(lags, (n + la) * bin, n, la)

    @property
    def rows(self) -> int:
        return self.h + self.la

    def describe(self) -> dict:
        return {"lags": self.lags, "history": round(self.history, 6), "bins_before": self.h - 1, "bins_after": self.la}


@dataclass
class SplitBins:
    """Binned spikes of one split, interval by interval, and the behaviour samples inside it.

    `rows` (R, U) holds every interval's counts back to back, each interval preceded by `pad_h - 1`
    empty bins and followed by `pad_la` empty bins. Sample i's bin is row `first[i] + pad_h - 1`, so a
    layout (h, la) reads rows `first[i] + pad_h - h : first[i] + pad_h + la`.
    """

    rows: np.ndarray  # (R, U) float32 spike counts
    real: np.ndarray  # (R,) bool, rows that are bins of the interval (not padding)
    interval_rows: list[tuple[int, int]]  # per interval: (first row of its first real bin, number of real bins)
    first: np.ndarray  # (S,) int, first row of the widest window of each sample
    sample_interval: np.ndarray  # (S,) int
    sample_bin: np.ndarray  # (S,) int, bin of the sample inside its interval
    times: np.ndarray  # (S,) absolute sample times
    values: np.ndarray  # (S, D)
    weights: np.ndarray  # (S,) 0 where a sample is left out (or not finite)
    pad_h: int = 1
    pad_la: int = 0

    def window_start(self, layout: Layout) -> np.ndarray:
        """(S,) first row of each sample's window in `layout`."""
        if layout.h > self.pad_h or layout.la > self.pad_la:
            raise ValueError(f"layout {layout} is wider than the bins' padding ({self.pad_h}, {self.pad_la})")
        return self.first + (self.pad_h - layout.h)


def bin_split(
    session: StoredSession, target: str, split: str, cfg: BaselineConfig, layouts: list[Layout] | None = None
) -> SplitBins:
    """Count spikes in `cfg.bin` bins inside each interval of `split`, padded for the widest of `layouts`."""
    if split not in session.splits:
        raise DataError(f"{session.path}: has no {split!r} split (it has {list(session.splits)})")
    return bin_intervals(session, target, session.splits[split], cfg, layouts)


def bin_intervals(
    session: StoredSession, target: str, iv: Intervals, cfg: BaselineConfig, layouts: list[Layout] | None = None
) -> SplitBins:
    """Binned spikes and behaviour samples of the intervals `iv` (see SplitBins); layouts: cfg.layouts()."""
    layouts = layouts or cfg.layouts()
    h, la = max(c.h for c in layouts), max(c.la for c in layouts)
    n_units = session.n_units
    blocks, real, spans = [], [], []
    first, s_iv, s_bin, times, values, weights = [], [], [], [], [], []
    row = 0
    for s, e in zip(iv.start, iv.end):
        if e <= s:
            continue
        k = len(spans)
        n_bins = max(1, int(math.ceil((e - s) / cfg.bin - 1e-9)))
        w = session.slice(float(s), float(e), behavior=[target])
        counts = np.zeros((h - 1 + n_bins + la, n_units), np.float32)
        b = np.minimum((w.spike_times / cfg.bin).astype(np.int64), n_bins - 1)
        np.add.at(counts, (h - 1 + b, w.spike_units), 1.0)
        mask = np.zeros(len(counts), bool)
        mask[h - 1 : h - 1 + n_bins] = True
        beh = w.behavior[target]
        sb = np.minimum((beh.timestamps / cfg.bin).astype(np.int64), n_bins - 1)
        blocks.append(counts)
        real.append(mask)
        spans.append((row + h - 1, n_bins))
        first.append(row + sb)
        s_iv.append(np.full(len(sb), k))
        s_bin.append(sb)
        times.append(beh.timestamps + s)
        values.append(beh.values.reshape(len(sb), -1))
        weights.append(beh.weights)
        row += len(counts)
    if not blocks:
        raise DataError(f"{session.path}: no non-empty intervals to bin")
    values_all = np.concatenate(values).astype(np.float32)
    weights_all = np.concatenate(weights).astype(np.float32)
    finite = np.isfinite(values_all).all(1)
    weights_all[~finite] = 0.0
    values_all[~finite] = 0.0
    return SplitBins(
        np.concatenate(blocks),
        np.concatenate(real),
        spans,
        np.concatenate(first),
        np.concatenate(s_iv),
        np.concatenate(s_bin),
        np.concatenate(times),
        values_all,
        weights_all,
        h,
        la,
    )


@dataclass
class Standardizer:
    """z-scoring of sqrt counts (per unit) and targets (per dim), with training statistics."""

    x_mean: np.ndarray
    x_std: np.ndarray
    y_mean: np.ndarray
    y_std: np.ndarray

    @classmethod
    def fit(cls, train: SplitBins) -> Standardizer:
        x = np.sqrt(train.rows[train.real])
        keep = train.weights > 0
        if keep.sum() < 2:
            raise DataError("fewer than 2 usable behaviour samples in the train split")
        y = train.values[keep]
        # std floored so that a nearly silent unit's rare spike does not become a huge input
        return cls(x.mean(0), np.maximum(x.std(0), 0.05), y.mean(0), y.std(0) + 1e-6)

    def inputs(self, bins: SplitBins) -> np.ndarray:
        """(R, U) float32 z-scored sqrt counts, padding rows included (they are empty bins)."""
        return ((np.sqrt(bins.rows) - self.x_mean) / self.x_std).astype(np.float32)

    def targets(self, values: np.ndarray) -> np.ndarray:
        return ((values - self.y_mean) / self.y_std).astype(np.float32)

    def untarget(self, z: np.ndarray) -> np.ndarray:
        return z * self.y_std + self.y_mean


def window_features(x: np.ndarray, first: np.ndarray, n_rows: int) -> np.ndarray:
    """Flattened input windows (S, n_rows * U) of z-scored rows x (R, U) starting at `first` (S,)."""
    idx = first[:, None] + np.arange(n_rows)[None, :]
    return x[idx].reshape(len(first), -1)


@dataclass
class FitData:
    """One session's baseline inputs per split name: bins, standardised inputs (T, n_units) and z-scored
    targets (T, D); `split` is the split predicted."""

    bins: dict[str, SplitBins]
    xs: dict[str, np.ndarray]
    zy: dict[str, np.ndarray]
    split: str


@dataclass
class SessionFit:
    """A fitted baseline's predictions on one split and how it was fitted."""

    session: str
    target: str
    dims: list[str]
    times: np.ndarray
    y_true: np.ndarray
    y_pred: np.ndarray
    weights: np.ndarray
    info: dict = field(default_factory=dict)

    def r2(self) -> np.ndarray:
        return r2_per_dim(self.y_true, self.y_pred, self.weights)


def _r2_mean(y: np.ndarray, pred: np.ndarray, w: np.ndarray) -> float:
    return float(np.nanmean(r2_per_dim(y, np.asarray(pred).reshape(y.shape), w)))


def _mse(y: np.ndarray, pred: np.ndarray, w: np.ndarray) -> float:
    """Weighted mean squared error over samples (weights w), mean over dims: the model-choice score.

    Not R²: a validation block where the animal sits still has almost no variance, and R² there is
    meaningless (hugely negative) while the error is still a fair score.
    """
    err = ((y - np.asarray(pred).reshape(y.shape)) ** 2).mean(1)  # never broadcast a (S,) against (S, 1)
    return float((err * w).sum() / max(float(w.sum()), 1e-12))
