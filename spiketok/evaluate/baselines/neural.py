"""GRU and MLP decoders on windows of bins, trained with early stopping on `valid`, one per layout."""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from .features import BaselineConfig, FitData, Layout, SplitBins, _mse, _r2_mean


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
    def build(cls, x: np.ndarray, bins: SplitBins, layout: Layout) -> Chunks:
        h, la = layout.rows, layout.la
        length = 2 * h
        seqs, chunk_base = [], []
        for start, n_bins in bins.interval_rows:
            n_out = n_bins + la
            n_chunks = 1 + max(0, math.ceil((n_out - length) / h))
            chunk_base.append(len(seqs))
            for j in range(n_chunks):
                seg = x[start + j * h : start + min(j * h + length, n_out)]
                pad = np.zeros((length - len(seg), x.shape[1]), np.float32)  # never scored: the GRU is causal
                seqs.append(np.concatenate([seg, pad]) if len(pad) else seg)
        out = bins.sample_bin + la
        j = np.where(out < length, 0, out // h - 1)
        base = np.asarray(chunk_base)[bins.sample_interval]
        return cls(torch.from_numpy(np.stack(seqs)), base + j, out - j * h)


def _torch_fit(
    cfg: BaselineConfig,
    layout: Layout,
    data: FitData,
    progress: bool,
) -> tuple[np.ndarray, dict]:
    """Train a GRU or MLP on `layout`'s windows with early stopping on the valid error; predict `split`.

    The valid error is measured every `eval_every` steps; training stops after `patience` measurements
    without a new lowest, and the weights of the lowest are restored. `info["curve"]`: (step, valid error).
    """
    xs, bins, zy, split = data.xs, data.bins, data.zy, data.split
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
            idx = np.concatenate([by_chunk[starts[c] : starts[c + 1]] for c in picked])
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
    return predict_all(split), {
        **layout.describe(),
        "valid_mse": float(best[0]),
        "valid_r2": best[3],
        "best_step": best[1],
        "steps": step + 1,
        "parameters": int(sum(p.numel() for p in model.parameters())),
        "curve": [[int(k), float(v)] for k, v in curve],
    }


def _fit_neural(
    cfg: BaselineConfig,
    layouts: list[Layout],
    data: FitData,
    progress: bool,
) -> tuple[np.ndarray, dict]:
    """One GRU/MLP per layout (same seed); the one with the lowest valid error is kept."""
    best: tuple[np.ndarray, dict] | None = None
    tried = []
    for lay in layouts:
        pred, info = _torch_fit(cfg, lay, data, progress)
        tried.append(
            {k: info[k] for k in ("lags", "history", "bins_before", "bins_after", "valid_mse", "best_step", "steps")}
        )
        if best is None or info["valid_mse"] < best[1]["valid_mse"]:
            best = (pred, info)
    pred, info = best
    return pred, {**info, "grid": tried}
