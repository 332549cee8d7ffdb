"""Replay a recorded session through a StreamingDecoder: predictions, recorded behaviour, latency; and its plot.

This is the `spiketok replay` command's work: packets of spikes pushed at a fixed rate, a decode after
each, timed, then scored against the recording.
"""

from __future__ import annotations

import gc
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from tqdm.auto import tqdm

from ..data.session import Behavior, Intervals, SessionLike
from ..evaluate.metrics import r2_per_dim
from ..model.poyo import POYO
from ..model.recurrent import RecurrentPOYO
from .decoder import StreamingDecoder
from .recurrent import RecurrentStreamingDecoder

if TYPE_CHECKING:
    from .exported import ExportedModel


@dataclass
class ReplayResult:
    """What `replay` decoded: predictions at the decode times, the recorded behaviour there, timings."""

    session: str
    target: str
    dims: list[str]
    times: np.ndarray  # (N,) decode times, session clock (s)
    y_pred: np.ndarray  # (N, D) original units
    y_true: np.ndarray | None  # (N, D) recorded behaviour interpolated at the decode times, or None
    weights: np.ndarray  # (N,) 1 where y_true counts in scores (both neighbouring samples usable)
    push_ms: np.ndarray  # (N,) time to push the packet that arrived since the previous decode
    decode_ms: np.ndarray  # (N,) time of the decode itself
    every: float
    wall_s: float  # wall-clock time of the whole replay
    incremental: bool = False  # the decoder merged per-packet attention partials (StreamingDecoder incremental)

    @property
    def latency_ms(self) -> np.ndarray:
        """Per decode: push of the newest packet plus the decode (from packet arrival to output)."""
        return self.push_ms + self.decode_ms

    def r2(self) -> np.ndarray:
        """R^2 per output dimension against the recorded behaviour (weighted samples only)."""
        if self.y_true is None:
            raise ValueError(f"session {self.session}: no recorded {self.target!r} to score against")
        return r2_per_dim(self.y_true, self.y_pred, self.weights)

    def summary(self) -> dict:
        """Numbers for reports and JSON: latencies (ms), R^2, counts."""
        lat = self.latency_ms
        out = {
            "session": self.session,
            "target": self.target,
            "n_decodes": int(len(self.times)),
            "every_s": self.every,
            "stream_s": float(len(self.times) * self.every),
            "wall_s": self.wall_s,
            "incremental": self.incremental,
            "latency_ms": {
                "median": float(np.median(lat)),
                "p99": float(np.percentile(lat, 99)),
                "max": float(lat.max()),
                "mean": float(lat.mean()),
            }
            if len(lat)
            else {},
            "decode_ms": {"median": float(np.median(self.decode_ms)), "p99": float(np.percentile(self.decode_ms, 99))}
            if len(lat)
            else {},
            "over_budget": int((lat > 1000 * self.every).sum()),
        }
        if self.y_true is not None:
            r2 = self.r2()
            out.update(
                {
                    "r2": float(np.nanmean(r2)),
                    "r2_per_dim": [float(v) for v in r2],
                    "dims": self.dims,
                    "n_scored": int((self.weights > 0).sum()),
                }
            )
        return out


def behavior_at(b: Behavior, times: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Behaviour (N, D) linearly interpolated at `times`, and weights (N,): the smaller of the two
    neighbouring samples' weights, 0 where the neighbours are more than 1.5 sample periods apart."""
    ts = b.timestamps
    if len(ts) < 2:
        return np.full((len(times), b.dim), np.nan, np.float32), np.zeros(len(times), np.float32)
    i1 = np.clip(np.searchsorted(ts, times, side="right"), 1, len(ts) - 1)
    i0 = i1 - 1
    gap = ts[i1] - ts[i0]
    ok = (times >= ts[0]) & (times <= ts[-1]) & (gap <= 1.5 * np.median(np.diff(ts)))
    frac = np.clip((times - ts[i0]) / np.maximum(gap, 1e-12), 0, 1)[:, None]
    vals = (b.values[i0] * (1 - frac) + b.values[i1] * frac).astype(np.float32)
    w = np.minimum(b.weights[i0], b.weights[i1]) * ok * np.isfinite(vals).all(1)
    return vals, w.astype(np.float32)


def replay(
    model: POYO | ExportedModel,
    session: SessionLike,
    intervals: Intervals | None = None,
    every: float = 0.02,
    speed: float | None = None,
    target: str | None = None,
    limit: float | None = None,
    progress: bool = True,
    incremental: bool | None = None,
    precision: str = "float32",
) -> ReplayResult:
    """Stream a recorded session through a StreamingDecoder (or, for a model exported with `spiketok export`,
    an ExportedStreamingDecoder), decoding every `every` s inside `intervals`.

    For each interval [s, e): reset, push the spikes of [s - window, s) (warm-up, not timed), then for
    t = s, s + every, ... < e push the packet of spikes in [previous t, t) and decode at t, timing both.
    speed: None = as fast as possible; a factor of real time (1.0 = real time) paces the packets by the
    wall clock. limit: stop after this many seconds of stream. Intervals default to the whole session
    (from one window after its start). Python's garbage collector is paused during the loop.
    incremental: StreamingDecoder's choice (None = incremental for models with latents on the absolute grid).
    precision: StreamingDecoder's linear-layer arithmetic ("float32", "bfloat16", "int8", "auto"); POYO models only.
    """
    if every <= 0:
        raise ValueError(f"every must be positive, got {every}")
    if speed is not None and speed <= 0:
        raise ValueError(f"speed must be positive (or None for as fast as possible), got {speed}")
    if isinstance(model, RecurrentPOYO):
        dec = RecurrentStreamingDecoder(
            model, session.id, target=target, unit_ids=session.unit_ids, precision=precision
        )
        n_dims = model.readouts[dec.target].out_features
    elif isinstance(model, POYO):
        dec = StreamingDecoder(
            model, session.id, target=target, unit_ids=session.unit_ids, incremental=incremental, precision=precision
        )
        n_dims = model.readouts[dec.target].out_features
    else:
        from .exported import ExportedStreamingDecoder
        from .exported_recurrent import ExportedRecurrentDecoder

        make = ExportedRecurrentDecoder if model.recurrent else ExportedStreamingDecoder
        dec = make(model, session.id, unit_ids=session.unit_ids, target=target)
        n_dims = model.dims
    return replay_decoder(dec, n_dims, session, intervals, every, speed, limit, progress)


def replay_decoder(
    dec,
    n_dims: int,
    session: SessionLike,
    intervals: Intervals | None,
    every: float,
    speed: float | None,
    limit: float | None,
    progress: bool,
) -> ReplayResult:
    """`replay` with a ready decoder (anything with StreamingDecoder's reset/push/decode, window and target)."""
    if intervals is None:
        intervals = Intervals([session.start + dec.window], [session.end])
    truth = session.behavior(dec.target) if dec.target in session.behavior_names else None
    grids = [
        s + every * np.arange(int(np.ceil((e - s) / every - 1e-9))) for s, e in zip(intervals.start, intervals.end)
    ]
    if limit is not None:
        left, kept = int(round(limit / every)), []
        for g in grids:
            kept.append(g[: max(left, 0)])
            left -= len(kept[-1])
        grids = kept
    total = sum(len(g) for g in grids)
    times, preds, push_ms, decode_ms = [], [], [], []
    tic_all = time.perf_counter()
    bar = tqdm(total=total, desc=f"replay {session.id}", unit="decode", disable=not progress, leave=False)
    gc_was_on = gc.isenabled()
    gc.disable()  # a garbage-collector pass costs milliseconds; the loop makes no reference cycles
    try:
        stream_grids(dec, session, grids, speed, bar, times, preds, push_ms, decode_ms)
    finally:
        if gc_was_on:
            gc.enable()
    bar.close()
    times_a = np.concatenate(times) if times else np.zeros(0)
    y_pred = np.stack(preds) if preds else np.zeros((0, n_dims), np.float32)
    if truth is not None:
        y_true, weights = behavior_at(truth, times_a)
        dims = list(truth.dims)
    else:
        y_true, weights, dims = None, np.zeros(len(times_a), np.float32), [f"{dec.target}_{i}" for i in range(n_dims)]
    return ReplayResult(
        session.id,
        dec.target,
        dims,
        times_a,
        y_pred,
        y_true,
        weights,
        np.array(push_ms),
        np.array(decode_ms),
        every,
        time.perf_counter() - tic_all,
        bool(getattr(dec, "incremental", False)),
    )


def stream_grids(
    dec: StreamingDecoder,
    session: SessionLike,
    grids: list[np.ndarray],
    speed: float | None,
    bar,
    times: list,
    preds: list,
    push_ms: list,
    decode_ms: list,
) -> None:
    """The replay loop: per interval, warm up (untimed), then push a packet and decode at each grid time."""
    w = dec.window
    for grid in grids:
        if not len(grid):
            continue
        win = session.slice(grid[0] - w, grid[-1] + 1e-9, behavior=[])
        sp_t, sp_u = win.spike_times + win.t0, win.spike_units.astype(np.int64)
        cut = np.searchsorted(sp_t, grid, side="left")  # packet k: spikes in [grid[k-1], grid[k])
        dec.reset()
        dec.push(sp_u[: cut[0]], sp_t[: cut[0]])
        wall0 = time.perf_counter()
        for k, t in enumerate(grid):
            if speed is not None:
                wait = wall0 + (t - grid[0]) / speed - time.perf_counter()
                if wait > 0:
                    time.sleep(wait)
            lo, hi = cut[k - 1] if k else cut[0], cut[k]
            t1 = time.perf_counter()
            dec.push(sp_u[lo:hi], sp_t[lo:hi])
            t2 = time.perf_counter()
            preds.append(dec.decode(t))
            t3 = time.perf_counter()
            push_ms.append(1e3 * (t2 - t1))
            decode_ms.append(1e3 * (t3 - t2))
        times.append(grid)
        bar.update(len(grid))


def plot_replay(result: ReplayResult, path: Path, seconds: float = 30.0) -> Path:
    """PNG: predicted and recorded traces over the first `seconds` of stream, and the latency histogram."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dims = result.y_pred.shape[1]
    n = min(len(result.times), int(round(seconds / result.every)))
    fig, axes = plt.subplots(dims + 1, 1, figsize=(9, 1.9 * (dims + 1)), squeeze=False)
    t = result.times[:n]
    x = np.arange(n) * result.every  # stream time (intervals laid end to end)
    for k in range(dims):
        a = axes[k, 0]
        if result.y_true is not None:
            a.plot(
                x, np.where(result.weights[:n] > 0, result.y_true[:n, k], np.nan), color="0.3", lw=1, label="recorded"
            )
        a.plot(x, result.y_pred[:n, k], color="tab:red", lw=1, label="streamed")
        a.set_ylabel(result.dims[k] if k < len(result.dims) else f"dim {k}", fontsize=8)
    axes[0, 0].legend(fontsize=7, loc="upper right")
    axes[dims - 1, 0].set_xlabel(f"stream time (s) from t = {t[0]:.2f} s" if n else "stream time (s)", fontsize=8)
    lat = result.latency_ms
    a = axes[dims, 0]
    top = min(float(lat.max()), 3 * float(np.percentile(lat, 99)))  # a rare hiccup must not squash the histogram
    a.hist(np.minimum(lat, top), bins=60, range=(0, top), color="tab:blue")
    if (lat > top).any():
        a.text(
            0.99,
            0.5,
            f"{int((lat > top).sum())} above {top:.1f} ms (max {lat.max():.1f} ms), in the last bin",
            transform=a.transAxes,
            ha="right",
            fontsize=7,
        )
    for q, style in ((50, "-"), (99, "--")):
        a.axvline(np.percentile(lat, q), color="k", ls=style, lw=1, label=f"p{q} {np.percentile(lat, q):.2f} ms")
    a.set_xlabel("latency per decode (ms)", fontsize=8)
    a.legend(fontsize=7)
    s = result.summary()
    title = f"{result.session}: {result.target}, decode every {1e3 * result.every:.0f} ms"
    if "r2" in s:
        title += f", R² {s['r2']:.3f}"
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
