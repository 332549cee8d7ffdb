"""Classical decoders on binned spikes, trained per session: ridge (Wiener filter), GRU and MLP.

Each session's spikes are counted in bins (20 ms by default) inside every interval of a split, never
across the gaps between intervals; bins outside an interval count as empty. A behaviour sample at time t
is decoded from a window of bins around the bin holding t, its *layout*: `causal` (the window ends at
t's bin: spikes up to t only, as a real-time decoder) or `centred` (the same number of bins, half of
them after t, as spiketok's offline model, which sees spikes on both sides of each output time).
Inputs are square-rooted counts z-scored with the training bins' statistics; targets are z-scored with
the training samples' statistics. Everything chosen is chosen on the `valid` split, never the test split:
ridge picks its window length, layout and penalty from a grid; GRU and MLP train one model per layout
(`lags="auto"`) with early stopping (the weights of the lowest validation error are restored) and keep the
better. Scored like `spiketok evaluate`: `r2_per_dim` on the split's behaviour samples with weight > 0,
in the same JSON layout; each session's `fit` says what was chosen. A 1-D behaviour is a (N, 1) signal.
"""

from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from threadpoolctl import threadpool_limits
from torch import nn
from tqdm.auto import tqdm

from ..data.session import DataError, Intervals
from ..data.storage import SessionDataset, StoredSession
from ..data.targets import resolve_target
from .metrics import r2_per_dim

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
            raise ValueError(f"unknown baseline {self.model!r}; choose one of {', '.join(MODELS)}")
        if self.lags not in LAGS:
            raise ValueError(f"unknown lags {self.lags!r}; choose one of {', '.join(LAGS)}")
        if self.bin <= 0:
            raise ValueError(f"bin width must be positive, got {self.bin}")
        histories = [self.history] if self.history is not None else list(self.history_choices)
        if not histories or min(histories) < self.bin or self.lookahead < 0:
            raise ValueError(f"history must cover at least one bin ({self.bin} s) and lookahead must be >= 0")
        if self.lookahead > 0 and self.lags != "causal":
            raise ValueError("lookahead goes with lags='causal' only (lags='centred' already looks ahead)")
        if self.hidden is None:
            self.hidden = 128 if self.model == "gru" else 256
        if self.lr is None:
            self.lr = DEFAULT_LR.get(self.model, 1e-3)
        if self.batch_size is None:
            self.batch_size = 32 if self.model == "gru" else 256

    def layouts(self) -> list["Layout"]:
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
    def make(cls, lags: str, history: float, bin: float, lookahead: float = 0.0) -> "Layout":
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
        return {"lags": self.lags, "history": round(self.history, 6), "bins_before": self.h - 1,
                "bins_after": self.la}


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


def bin_split(session: StoredSession, target: str, split: str, cfg: BaselineConfig,
              layouts: list[Layout] | None = None) -> SplitBins:
    """Count spikes in `cfg.bin` bins inside each interval of `split`, padded for the widest of `layouts`."""
    if split not in session.splits:
        raise DataError(f"{session.path}: has no {split!r} split (it has {list(session.splits)})")
    return bin_intervals(session, target, session.splits[split], cfg, layouts)


def bin_intervals(session: StoredSession, target: str, iv: Intervals, cfg: BaselineConfig,
                  layouts: list[Layout] | None = None) -> SplitBins:
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
        mask[h - 1: h - 1 + n_bins] = True
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
    return SplitBins(np.concatenate(blocks), np.concatenate(real), spans, np.concatenate(first),
                     np.concatenate(s_iv), np.concatenate(s_bin), np.concatenate(times), values_all, weights_all,
                     h, la)


@dataclass
class Standardizer:
    """z-scoring of sqrt counts (per unit) and targets (per dim), with training statistics."""

    x_mean: np.ndarray
    x_std: np.ndarray
    y_mean: np.ndarray
    y_std: np.ndarray

    @classmethod
    def fit(cls, train: SplitBins) -> "Standardizer":
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


# --- ridge -------------------------------------------------------------------------------------

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
    return _Spectrum(sv ** 2, vt.T, sv[:, None] * (u.T @ (y_c * ws)))


def _gram(x: np.ndarray, first: np.ndarray, n_rows: int, w: np.ndarray, y_c: np.ndarray,
          cols: slice) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Weighted feature means, centred Gram matrix and X^T W y of columns `cols`, chunk by chunk."""
    sw, chunk = w.sum(), 4096
    sx = gram = xty = None
    for i in range(0, len(first), chunk):
        f = window_features(x, first[i:i + chunk], n_rows)[:, cols].astype(np.float64)
        wi = w[i:i + chunk, None]
        if sx is None:
            sx, gram, xty = np.zeros(f.shape[1]), np.zeros((f.shape[1],) * 2), np.zeros((f.shape[1], y_c.shape[1]))
        sx += (wi * f).sum(0)
        gram += f.T @ (wi * f)
        xty += f.T @ (wi * y_c[i:i + chunk])
    mean = sx / sw
    return mean, gram - sw * np.outer(mean, mean), xty - np.outer(mean, (w[:, None] * y_c).sum(0))


def _fit_ridge(cfg: BaselineConfig, layouts: list[Layout], xs: dict[str, np.ndarray], bins: dict[str, SplitBins],
               zy: dict[str, np.ndarray], split: str) -> tuple[np.ndarray, dict, Layout]:
    """Weighted ridge with an intercept; window length, layout and penalty chosen by the valid split's error.

    Every layout's window is a contiguous run of the widest window's lags, so its features are a column
    block of one (samples, lags x units) matrix, and its Gram matrix a block of that matrix's Gram matrix.
    """
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
        scores = [_mse(zy["valid"], proj @ (spec.q / (spec.lam + a)[:, None]) + y_mean, va.weights)
                  for a in cfg.alphas]
        k = int(np.argmin(scores))
        grid.append({**lay.describe(), "alpha": float(cfg.alphas[k]), "valid_mse": float(scores[k])})
        if best is None or scores[k] < best[0]:
            best = (float(scores[k]), lay, float(cfg.alphas[k]), spec.coef(cfg.alphas[k]), mean)
    score, lay, alpha, coef, mean = best

    def predict(name: str) -> np.ndarray:
        b, out = bins[name], []
        for i in range(0, len(b.first), 4096):
            f = window_features(xs[name], b.window_start(lay)[i:i + 4096], lay.rows).astype(np.float64)
            out.append((f - mean) @ coef + y_mean)
        return np.concatenate(out) if out else np.zeros((0, y.shape[1]))

    valid_r2 = _r2_mean(zy["valid"], predict("valid"), va.weights)
    info = {**lay.describe(), "alpha": alpha, "valid_mse": score, "valid_r2": valid_r2,
            "n_train_samples": int(len(keep)), "n_features": int(lay.rows * n_units), "grid": grid}
    return predict(split), info, lay


# --- torch models --------------------------------------------------------------------------------

class MLPDecoder(nn.Module):
    """Flattened history window (B, rows * U) -> hidden layers with ReLU and dropout -> (B, D)."""

    def __init__(self, n_in: int, n_out: int, hidden: int, layers: int, dropout: float):
        super().__init__()
        mods: list[nn.Module] = []
        for i in range(layers):
            mods += [nn.Linear(n_in if i == 0 else hidden, hidden), nn.ReLU(), nn.Dropout(dropout)]
        self.net = nn.Sequential(*mods, nn.Linear(hidden, n_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class GRUDecoder(nn.Module):
    """Bins (B, T, U) -> stacked GRU -> linear readout at every bin (B, T, D)."""

    def __init__(self, n_in: int, n_out: int, hidden: int, layers: int, dropout: float):
        super().__init__()
        self.gru = nn.GRU(n_in, hidden, num_layers=layers, batch_first=True, dropout=dropout if layers > 1 else 0.0)
        self.readout = nn.Linear(hidden, n_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.readout(self.gru(x)[0])


@dataclass
class Chunks:
    """Bin sequences for the GRU: every interval cut into chunks of 2H bins every H bins.

    Chunk j of an interval covers bins [jH, jH + 2H) and scores outputs at bins [jH + H, jH + 2H)
    (all of [0, 2H) for j = 0), so each output has at least H bins (or its interval's start) behind it
    and each sample is scored by exactly one chunk. H is the layout's whole window (h + la bins); the
    output for a sample in bin k is read at bin k + la (0 for a causal layout), so at least h bins up to
    the sample's own are behind it.
    """

    x: torch.Tensor  # (C, 2H, U) z-scored inputs, zero-padded past an interval's end
    sample_chunk: np.ndarray  # (S,) chunk of each sample
    sample_pos: np.ndarray  # (S,) position of its output inside the chunk

    @classmethod
    def build(cls, x: np.ndarray, bins: SplitBins, layout: Layout) -> "Chunks":
        h, la = layout.rows, layout.la
        length = 2 * h
        seqs, chunk_base = [], []
        for start, n_bins in bins.interval_rows:
            n_out = n_bins + la
            n_chunks = 1 + max(0, math.ceil((n_out - length) / h))
            chunk_base.append(len(seqs))
            for j in range(n_chunks):
                seg = x[start + j * h: start + min(j * h + length, n_out)]
                pad = np.zeros((length - len(seg), x.shape[1]), np.float32)  # never scored: the GRU is causal
                seqs.append(np.concatenate([seg, pad]) if len(pad) else seg)
        out = bins.sample_bin + la
        j = np.where(out < length, 0, out // h - 1)
        base = np.asarray(chunk_base)[bins.sample_interval]
        return cls(torch.from_numpy(np.stack(seqs)), base + j, out - j * h)


def _torch_fit(cfg: BaselineConfig, layout: Layout, xs: dict[str, np.ndarray], bins: dict[str, SplitBins],
               zy: dict[str, np.ndarray], split: str, progress: bool) -> tuple[np.ndarray, dict]:
    """Train a GRU or MLP on `layout`'s windows with early stopping on the valid error; predict `split`.

    The valid error is measured every `eval_every` steps; training stops after `patience` measurements
    without a new lowest, and the weights of the lowest are restored. `info["curve"]`: (step, valid error).
    """
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    n_units, n_out = xs["train"].shape[1], zy["train"].shape[1]
    n_rows = layout.rows
    if cfg.model == "gru":
        model: nn.Module = GRUDecoder(n_units, n_out, cfg.hidden, cfg.layers, cfg.dropout)
        data = {name: Chunks.build(xs[name], bins[name], layout) for name in {"train", "valid", split}}
    else:
        model = MLPDecoder(n_rows * n_units, n_out, cfg.hidden, cfg.layers, cfg.dropout)
        tensors = {name: torch.from_numpy(xs[name]) for name in {"train", "valid", split}}

    def predict_samples(name: str, idx: np.ndarray) -> torch.Tensor:
        """Normalised predictions (len(idx), D) for samples `idx` of split `name`."""
        b = bins[name]
        if cfg.model == "mlp":
            rows = torch.from_numpy(b.window_start(layout)[idx])[:, None] + torch.arange(n_rows)[None, :]
            return model(tensors[name][rows].flatten(1))
        ch = data[name]
        chunks, inverse = np.unique(ch.sample_chunk[idx], return_inverse=True)
        out = model(ch.x[torch.from_numpy(chunks)])
        return out[torch.from_numpy(inverse), torch.from_numpy(ch.sample_pos[idx])]

    @torch.no_grad()
    def predict_all(name: str) -> np.ndarray:
        model.eval()
        n = len(bins[name].first)
        step = 4096 if cfg.model == "mlp" else 256
        if cfg.model == "gru":  # whole chunks at a time: sort samples by chunk
            order = np.argsort(data[name].sample_chunk, kind="stable")
            parts = np.array_split(order, max(1, math.ceil(len(np.unique(data[name].sample_chunk)) / step)))
        else:
            parts = [np.arange(i, min(i + step, n)) for i in range(0, n, step)]
        pred = np.zeros((n, n_out), np.float32)
        for p in parts:
            if len(p):
                pred[p] = predict_samples(name, p).numpy()
        model.train()
        return pred

    train_idx = np.flatnonzero(bins["train"].weights > 0)
    y_train = torch.from_numpy(zy["train"])
    w_train = torch.from_numpy(bins["train"].weights)
    if cfg.model == "gru":  # batches of chunks: every scored sample of the chosen chunks
        ch = data["train"]
        usable = np.unique(ch.sample_chunk[train_idx])
        by_chunk = np.argsort(ch.sample_chunk, kind="stable")
        starts = np.searchsorted(ch.sample_chunk[by_chunk], np.arange(len(ch.x) + 1))
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    best = (np.inf, 0, copy.deepcopy(model.state_dict()), float("nan"))
    stale, step, curve = 0, 0, []
    model.train()
    bar = tqdm(range(cfg.max_steps), desc=f"{cfg.model} ({layout.lags})", disable=not progress, leave=False)
    for step in bar:
        if cfg.model == "gru":
            picked = rng.choice(usable, size=min(cfg.batch_size, len(usable)), replace=False)
            idx = np.concatenate([by_chunk[starts[c]:starts[c + 1]] for c in picked])
        else:
            idx = rng.choice(train_idx, size=min(cfg.batch_size, len(train_idx)), replace=False)
        pred = predict_samples("train", idx)
        t = torch.from_numpy(idx)
        err = ((pred - y_train[t]) ** 2).mean(-1)
        loss = (err * w_train[t]).sum() / w_train[t].sum().clamp(min=1e-8)
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if (step + 1) % cfg.eval_every == 0 or step + 1 == cfg.max_steps:
            pred_valid = predict_all("valid")
            score = _mse(zy["valid"], pred_valid, bins["valid"].weights)
            curve.append((step + 1, score))
            if score < best[0]:
                r2 = _r2_mean(zy["valid"], pred_valid, bins["valid"].weights)
                best, stale = (score, step + 1, copy.deepcopy(model.state_dict()), r2), 0
            else:
                stale += 1
            bar.set_postfix(valid_mse=f"{score:.3f}", best=f"{best[0]:.3f}")
            if stale >= cfg.patience:
                break
    model.load_state_dict(best[2])
    return predict_all(split), {**layout.describe(), "valid_mse": float(best[0]), "valid_r2": best[3],
                                "best_step": best[1], "steps": step + 1,
                                "parameters": int(sum(p.numel() for p in model.parameters())),
                                "curve": [[int(k), float(v)] for k, v in curve]}


def _fit_neural(cfg: BaselineConfig, layouts: list[Layout], xs: dict[str, np.ndarray], bins: dict[str, SplitBins],
                zy: dict[str, np.ndarray], split: str, progress: bool) -> tuple[np.ndarray, dict]:
    """One GRU/MLP per layout (same seed); the one with the lowest valid error is kept."""
    best: tuple[np.ndarray, dict] | None = None
    tried = []
    for lay in layouts:
        pred, info = _torch_fit(cfg, lay, xs, bins, zy, split, progress)
        tried.append({k: info[k] for k in ("lags", "history", "bins_before", "bins_after", "valid_mse", "best_step",
                                           "steps")})
        if best is None or info["valid_mse"] < best[1]["valid_mse"]:
            best = (pred, info)
    pred, info = best
    return pred, {**info, "grid": tried}


# --- per session and over a dataset -------------------------------------------------------------

def fit_session(session: StoredSession, target: str, cfg: BaselineConfig, split: str = "test",
                progress: bool = False) -> SessionFit:
    """Train a baseline on a session's train split (valid for model choice) and predict `split`.

    When the valid split has fewer than MIN_VALID_SAMPLES samples with weight > 0, the model is chosen on
    the last tenth of each train interval instead (and trained on the rest); `info["validation"]` says which.
    """
    names = ["train", "valid"] + ([split] if split not in ("train", "valid") else [])
    layouts = cfg.layouts()
    bins = {name: bin_split(session, target, name, cfg, layouts) for name in names}
    usable = int((bins["valid"].weights > 0).sum())
    validation = "valid split"
    if usable < MIN_VALID_SAMPLES and split not in ("train", "valid"):
        # e.g. a rat that sits still through the whole valid block, with stationary samples left out (weight 0)
        tr = session.splits["train"]
        cut = tr.start + 0.9 * (tr.end - tr.start)
        bins["train"] = bin_intervals(session, target, Intervals(tr.start, cut), cfg, layouts)
        bins["valid"] = bin_intervals(session, target, Intervals(cut, tr.end), cfg, layouts)
        validation = f"last tenth of each train interval (valid split: {usable} usable samples)"
    std = Standardizer.fit(bins["train"])
    xs = {name: std.inputs(b) for name, b in bins.items()}
    zy = {name: std.targets(b.values) for name, b in bins.items()}
    threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    try:
        with threadpool_limits(cfg.threads):  # BLAS threads (ridge)
            if cfg.model == "ridge":
                pred, info, _ = _fit_ridge(cfg, layouts, xs, bins, zy, split)
            elif cfg.history is not None:
                pred, info = _fit_neural(cfg, layouts, xs, bins, zy, split, progress)
            else:  # the default window, and the one a ridge probe prefers on the valid split
                _, probe, probed = _fit_ridge(cfg, layouts, xs, bins, zy, "valid")
                first = Layout.make("causal" if cfg.lags == "auto" else cfg.lags, DEFAULT_HISTORY[cfg.model], cfg.bin)
                tried = [first] + ([probed] if (probed.h, probed.la) != (first.h, first.la) else [])
                pred, info = _fit_neural(cfg, tried, xs, bins, zy, split, progress)
                info["ridge_probe"] = {k: probe[k] for k in ("lags", "history", "bins_before", "bins_after", "alpha",
                                                             "valid_mse")}
    finally:
        torch.set_num_threads(threads)
    info["validation"] = validation
    out = bins[split]
    dims = list(session.behavior_info[target]["dims"])
    return SessionFit(session.id, target, dims, out.times, out.values, std.untarget(pred), out.weights, info)


def run_baseline(data: SessionDataset, cfg: BaselineConfig, target: str | None = None, split: str = "test",
                 progress: bool = True) -> tuple[dict, dict[str, SessionFit]]:
    """Fit and score a baseline on every session; results in the JSON layout of `spiketok evaluate`."""

    config = {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(cfg).items()}
    results: dict = {"split": split, "model": cfg.model, "config": config, "sessions": {}}
    fits: dict[str, SessionFit] = {}
    for s in tqdm(list(data), desc=f"baseline {cfg.model}", disable=not progress):
        t = resolve_target(s.id, list(s.behavior_info), target)
        fit = fit_session(s, t, cfg, split, progress)
        r2 = fit.r2()
        fits[s.id] = fit
        results["sessions"][s.id] = {
            "target": t, "r2": float(np.nanmean(r2)), "r2_per_dim": [float(v) for v in r2], "dims": fit.dims,
            "n_samples": int((fit.weights > 0).sum()), "n_left_out": int((fit.weights <= 0).sum()), "fit": fit.info,
        }
    results["mean_r2"] = float(np.nanmean([v["r2"] for v in results["sessions"].values()]))
    return results, fits
