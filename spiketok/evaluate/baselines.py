"""Classical decoders on binned spikes, trained per session: ridge (Wiener filter), GRU and MLP.

Each session's spikes are counted in bins (20 ms by default) inside every interval of a split, never
across the gaps between intervals; a behaviour sample at time t is decoded from the `history` seconds
of bins up to the bin holding t (plus `lookahead` seconds after it). Bins before an interval's start
count as empty. Inputs are square-rooted counts z-scored with the training bins' statistics; targets
are z-scored with the training samples' statistics. Models train on the `train` split, pick their
penalty (ridge) or stop early (GRU, MLP) by the error on the `valid` split, and are scored like `spiketok evaluate`:
`r2_per_dim` on the split's behaviour samples with weight > 0, in the same JSON layout.
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
from .metrics import r2_per_dim

MODELS = ("ridge", "gru", "mlp")
MIN_VALID_SAMPLES = 20  # fewer usable samples in the valid split: validate on the end of each train interval
DEFAULT_HISTORY = {"ridge": 0.5, "gru": 0.5, "mlp": 0.5}  # seconds of spikes before each sample
DEFAULT_LR = {"gru": 3e-3, "mlp": 1e-3}


@dataclass
class BaselineConfig:
    """Settings of a baseline decoder; `history=None` takes the model's default (DEFAULT_HISTORY)."""

    model: str = "ridge"
    bin: float = 0.02
    history: float | None = None
    lookahead: float = 0.0
    alphas: tuple[float, ...] = tuple(float(a) for a in np.logspace(-1, 5, 13))
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
        if self.bin <= 0:
            raise ValueError(f"bin width must be positive, got {self.bin}")
        if self.history is None:
            self.history = DEFAULT_HISTORY[self.model]
        if self.history < self.bin or self.lookahead < 0:
            raise ValueError("history must cover at least one bin and lookahead must be >= 0")
        if self.hidden is None:
            self.hidden = 128 if self.model == "gru" else 256
        if self.lr is None:
            self.lr = DEFAULT_LR.get(self.model, 1e-3)
        if self.batch_size is None:
            self.batch_size = 32 if self.model == "gru" else 256

    @property
    def history_bins(self) -> int:
        return max(1, int(round(self.history / self.bin)))

    @property
    def lookahead_bins(self) -> int:
        return int(round(self.lookahead / self.bin))


@dataclass
class SplitBins:
    """Binned spikes of one split, interval by interval, and the behaviour samples inside it.

    `rows` (R, U) holds every interval's counts back to back, each interval preceded by
    `history_bins - 1` empty bins and followed by `lookahead_bins` empty bins. Sample i's bin is row
    `first[i] + history_bins - 1`, so its input rows are `first[i] : first[i] + history_bins + lookahead_bins`.
    """

    rows: np.ndarray  # (R, U) float32 spike counts
    real: np.ndarray  # (R,) bool, rows that are bins of the interval (not padding)
    interval_rows: list[tuple[int, int]]  # per interval: (first row of its first real bin, number of real bins)
    first: np.ndarray  # (S,) int, first input row of each sample
    sample_interval: np.ndarray  # (S,) int
    sample_bin: np.ndarray  # (S,) int, bin of the sample inside its interval
    times: np.ndarray  # (S,) absolute sample times
    values: np.ndarray  # (S, D)
    weights: np.ndarray  # (S,) 0 where a sample is left out (or not finite)


def bin_split(session: StoredSession, target: str, split: str, cfg: BaselineConfig) -> SplitBins:
    """Count spikes in `cfg.bin` bins inside each interval of `split`, padded for history and lookahead."""
    if split not in session.splits:
        raise DataError(f"{session.path}: has no {split!r} split (it has {list(session.splits)})")
    return bin_intervals(session, target, session.splits[split], cfg)


def bin_intervals(session: StoredSession, target: str, iv: Intervals, cfg: BaselineConfig) -> SplitBins:
    """Binned spikes and behaviour samples of the intervals `iv` (see SplitBins)."""
    h, la = cfg.history_bins, cfg.lookahead_bins
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
        values.append(beh.values)
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
                     np.concatenate(s_iv), np.concatenate(s_bin), np.concatenate(times), values_all, weights_all)


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
    return float(np.nanmean(r2_per_dim(y, pred, w)))


def _mse(y: np.ndarray, pred: np.ndarray, w: np.ndarray) -> float:
    """Weighted mean squared error over samples (weights w), mean over dims: the model-choice score.

    Not R²: a validation block where the animal sits still has almost no variance, and R² there is
    meaningless (hugely negative) while the error is still a fair score.
    """
    err = ((y - pred) ** 2).mean(1)
    return float((err * w).sum() / max(float(w.sum()), 1e-12))


# --- ridge -------------------------------------------------------------------------------------

def _fit_ridge(cfg: BaselineConfig, xs: dict[str, np.ndarray], bins: dict[str, SplitBins], zy: dict[str, np.ndarray],
               split: str) -> tuple[np.ndarray, dict]:
    from sklearn.linear_model import Ridge

    n_rows = cfg.history_bins + cfg.lookahead_bins
    tr = bins["train"]
    keep = np.flatnonzero(tr.weights > 0)
    if len(keep) > cfg.max_train_samples:
        keep = np.sort(np.random.default_rng(cfg.seed).choice(keep, cfg.max_train_samples, replace=False))
    x_tr = window_features(xs["train"], tr.first[keep], n_rows)
    y_tr, w_tr = zy["train"][keep], tr.weights[keep]
    va = bins["valid"]
    x_va = window_features(xs["valid"], va.first, n_rows)
    best: tuple[float, float, Ridge | None] = (np.inf, float("nan"), None)
    for alpha in cfg.alphas:
        model = Ridge(alpha=alpha).fit(x_tr, y_tr, sample_weight=w_tr)
        score = _mse(zy["valid"], model.predict(x_va), va.weights)
        if score < best[0]:
            best = (score, alpha, model)
    model = best[2]
    out = bins[split]
    parts = [model.predict(window_features(xs[split], out.first[i:i + 20_000], n_rows))
             for i in range(0, len(out.first), 20_000)]
    pred = np.concatenate(parts) if parts else np.zeros((0, y_tr.shape[1]))
    valid_r2 = _r2_mean(zy["valid"], model.predict(x_va), va.weights)
    return pred, {"alpha": best[1], "valid_mse": best[0], "valid_r2": valid_r2, "n_train_samples": int(len(keep)),
                  "n_features": int(x_tr.shape[1])}


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
    and each sample is scored by exactly one chunk. The output for a sample in bin k is read at bin
    k + lookahead.
    """

    x: torch.Tensor  # (C, 2H, U) z-scored inputs, zero-padded past an interval's end
    sample_chunk: np.ndarray  # (S,) chunk of each sample
    sample_pos: np.ndarray  # (S,) position of its output inside the chunk

    @classmethod
    def build(cls, x: np.ndarray, bins: SplitBins, cfg: BaselineConfig) -> "Chunks":
        h, la = cfg.history_bins, cfg.lookahead_bins
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


def _torch_fit(cfg: BaselineConfig, xs: dict[str, np.ndarray], bins: dict[str, SplitBins], zy: dict[str, np.ndarray],
               split: str, progress: bool) -> tuple[np.ndarray, dict]:
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    n_units, n_out = xs["train"].shape[1], zy["train"].shape[1]
    n_rows = cfg.history_bins + cfg.lookahead_bins
    if cfg.model == "gru":
        model: nn.Module = GRUDecoder(n_units, n_out, cfg.hidden, cfg.layers, cfg.dropout)
        data = {name: Chunks.build(xs[name], bins[name], cfg) for name in {"train", "valid", split}}
    else:
        model = MLPDecoder(n_rows * n_units, n_out, cfg.hidden, cfg.layers, cfg.dropout)
        tensors = {name: torch.from_numpy(xs[name]) for name in {"train", "valid", split}}

    def predict_samples(name: str, idx: np.ndarray) -> torch.Tensor:
        """Normalised predictions (len(idx), D) for samples `idx` of split `name`."""
        b = bins[name]
        if cfg.model == "mlp":
            rows = torch.from_numpy(b.first[idx])[:, None] + torch.arange(n_rows)[None, :]
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
    stale, step = 0, 0
    model.train()
    bar = tqdm(range(cfg.max_steps), desc=f"{cfg.model}", disable=not progress, leave=False)
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
            if score < best[0]:
                r2 = _r2_mean(zy["valid"], pred_valid, bins["valid"].weights)
                best, stale = (score, step + 1, copy.deepcopy(model.state_dict()), r2), 0
            else:
                stale += 1
            bar.set_postfix(valid_mse=f"{score:.3f}", best=f"{best[0]:.3f}")
            if stale >= cfg.patience:
                break
    model.load_state_dict(best[2])
    return predict_all(split), {"valid_mse": float(best[0]), "valid_r2": best[3], "best_step": best[1],
                                "steps": step + 1,
                                "parameters": int(sum(p.numel() for p in model.parameters()))}


# --- per session and over a dataset -------------------------------------------------------------

def fit_session(session: StoredSession, target: str, cfg: BaselineConfig, split: str = "test",
                progress: bool = False) -> SessionFit:
    """Train a baseline on a session's train split (valid for model choice) and predict `split`.

    When the valid split has fewer than MIN_VALID_SAMPLES samples with weight > 0, the model is chosen on
    the last tenth of each train interval instead (and trained on the rest); `info["validation"]` says which.
    """
    names = ["train", "valid"] + ([split] if split not in ("train", "valid") else [])
    bins = {name: bin_split(session, target, name, cfg) for name in names}
    usable = int((bins["valid"].weights > 0).sum())
    validation = "valid split"
    if usable < MIN_VALID_SAMPLES and split not in ("train", "valid"):
        # e.g. a rat that sits still through the whole valid block, with stationary samples left out (weight 0)
        tr = session.splits["train"]
        cut = tr.start + 0.9 * (tr.end - tr.start)
        bins["train"] = bin_intervals(session, target, Intervals(tr.start, cut), cfg)
        bins["valid"] = bin_intervals(session, target, Intervals(cut, tr.end), cfg)
        validation = f"last tenth of each train interval (valid split: {usable} usable samples)"
    std = Standardizer.fit(bins["train"])
    xs = {name: std.inputs(b) for name, b in bins.items()}
    zy = {name: std.targets(b.values) for name, b in bins.items()}
    threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    try:
        with threadpool_limits(cfg.threads):  # BLAS threads (ridge)
            if cfg.model == "ridge":
                pred, info = _fit_ridge(cfg, xs, bins, zy, split)
            else:
                pred, info = _torch_fit(cfg, xs, bins, zy, split, progress)
    finally:
        torch.set_num_threads(threads)
    info["validation"] = validation
    out = bins[split]
    dims = list(session.behavior_info[target]["dims"])
    return SessionFit(session.id, target, dims, out.times, out.values, std.untarget(pred), out.weights, info)


def run_baseline(data: SessionDataset, cfg: BaselineConfig, target: str | None = None, split: str = "test",
                 progress: bool = True) -> tuple[dict, dict[str, SessionFit]]:
    """Fit and score a baseline on every session; results in the JSON layout of `spiketok evaluate`."""
    from ..train.data import choose_target

    config = {k: v for k, v in asdict(cfg).items() if k != "alphas"}
    results: dict = {"split": split, "model": cfg.model, "config": config, "sessions": {}}
    fits: dict[str, SessionFit] = {}
    for s in tqdm(list(data), desc=f"baseline {cfg.model}", disable=not progress):
        t = choose_target(s, target)
        fit = fit_session(s, t, cfg, split, progress)
        r2 = fit.r2()
        fits[s.id] = fit
        results["sessions"][s.id] = {
            "target": t, "r2": float(np.nanmean(r2)), "r2_per_dim": [float(v) for v in r2], "dims": fit.dims,
            "n_samples": int((fit.weights > 0).sum()), "n_left_out": int((fit.weights <= 0).sum()), "fit": fit.info,
        }
    results["mean_r2"] = float(np.nanmean([v["r2"] for v in results["sessions"].values()]))
    return results, fits
