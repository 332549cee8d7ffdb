"""Real-time streaming decoding: push spikes as they arrive, decode the behaviour at any time t.

`StreamingDecoder` gives exactly what the offline path gives for the window [t - window, t) of a
session (tokenizer + model, output query at the window end; `spiketok.evaluate.decode_times` on a
causal model), but reuses everything that does not change between calls:

- per unit, the encoder's key and value of its spike, START and END tokens (the unit embedding plus a
  token-type row, layer-normed and projected: a token's key/value depends only on its unit and type);
- per spike, its key and value rotated by its *absolute* time, computed once when the spike is pushed
  (rotary attention only sees time differences, so the latent queries are rotated by their absolute
  times too); these live in a growing buffer of recent spikes;
- the latent queries, the rotary tables of the latents and of the output query (constant for a fixed
  window), the session query and the normalisation statistics.

A decode then costs one cross-attention of the latents over the window's keys (a view into the
buffer, no copy), the latent self-attention blocks and the read-out; no Python loop over spikes.
For the lowest latency run it with `torch.set_num_threads(1)` (small ops; on a busy machine several
threads wait on each other). A decoder is not thread-safe: push and decode from one thread.

`replay` streams a recorded session through a decoder (the `spiketok replay` command).
"""

from __future__ import annotations

import gc
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .data.session import Behavior, Intervals, SessionLike
from .evaluate.metrics import r2_per_dim
from .model.poyo import POYO
from .model.rotary import rotate
from .tokenize import TOKEN_END, TOKEN_SPIKE, TOKEN_START, SpikeTokenizer

__all__ = ["StreamingDecoder", "StreamOrderError", "LateSpikeError", "ReplayResult", "replay", "behavior_at"]


class StreamOrderError(ValueError):
    """A packet whose spikes are older than spikes already pushed (packets must arrive in time order)."""


class LateSpikeError(StreamOrderError):
    """A spike older than a decode already returned: that decode went out without it."""


def _is_causal(model: POYO) -> bool | None:
    hp = getattr(model, "hparams", None)
    if not hp:
        return None
    return bool(hp.get("train", {}).get("causal", False))


class StreamingDecoder:
    """Decode one session's behaviour from a live spike stream with a trained (causal) POYO model.

    decoder = StreamingDecoder(model, "session_id")
    decoder.push(unit_ids, times)      # as packets arrive, in time order
    y = decoder.decode(t)              # (D,) behaviour at t, original units, from spikes in [t - window, t)

    Args:
        model: a trained POYO (ideally trained with `causal=true`: outputs at the window end).
        session_id: the session (recording) the spikes come from; the model must know it and its units
            (else `UnknownIdError`: adapt the model to the session first).
        window: context length in seconds; None (default) = the model's window (1 s for all presets).
        target: behaviour task to read out; default = the one the model was trained to decode for this
            session, or the model's only task.
        unit_ids: the session's unit ids ("<session>/<unit>") in the order of the local indices that
            `push` receives; default = the model's vocabulary ids of this session, in vocabulary order
            (the order of `StoredSession.unit_ids` for sessions the model was trained on).
        late: what `push` does with spikes older than the last decode time: "raise" (LateSpikeError) or
            "drop" (leave them out and count them in `n_late`).
        capacity: initial spike capacity of the buffer (it grows as needed).

    Timing: a decode at t uses the spikes pushed so far with times in [t - window, t) (times in the
    session's clock, seconds); the stream is taken as silent before its first spike. Decode times must
    not decrease. A decode does not wait for spikes: push everything up to t before decoding at t; a
    spike that arrives afterwards with a time before t is late (see `late`).
    """

    def __init__(
        self,
        model: POYO,
        session_id: str,
        window: float | None = None,
        target: str | None = None,
        unit_ids: Sequence[str] | None = None,
        late: str = "raise",
        capacity: int = 16384,
    ):
        if late not in ("raise", "drop"):
            raise ValueError(f"late={late!r}: use 'raise' or 'drop'")
        self.model, self.session_id, self.late = model.eval(), session_id, late
        c = model.config
        self.window = float(c.window if window is None else window)
        if self.window <= 0:
            raise ValueError(f"window must be positive, got {self.window}")
        if abs(self.window - c.window) > 1e-9:
            warnings.warn(f"streaming window {self.window} s differs from the model's {c.window} s window",
                          stacklevel=2)
        if _is_causal(model) is False:
            warnings.warn("this model was trained with outputs throughout its windows (causal=false); streaming reads "
                          "it out at the window end only: train with causal=true for real-time decoding", stacklevel=2)
        sess_row = int(model.session_emb.lookup([session_id])[0])  # UnknownIdError: adapt first
        if unit_ids is None:
            prefix = f"{session_id}/"
            unit_ids = [u for u in model.unit_emb.ids if u.startswith(prefix)]
            if not unit_ids:
                raise ValueError(f"the model knows session {session_id!r} but none of its units; pass unit_ids")
        self.unit_ids = list(unit_ids)
        rows = model.unit_emb.lookup(self.unit_ids)  # UnknownIdError for units the model has never seen
        self.target = self._target(target)
        self.n_units = len(self.unit_ids)
        self._build_id_table()
        self.device = next(model.parameters()).device
        self.dtype = next(model.parameters()).dtype
        self._tok = SpikeTokenizer(c.num_latents_per_step, c.latent_step, self.window)
        with torch.inference_mode():
            self._precompute(rows.to(self.device), sess_row)
        self._alloc(max(int(capacity), 16))
        self.n_late = 0

    # ------------------------------------------------------------------ set-up

    def _target(self, target: str | None) -> str:
        from .evaluate.report import session_target

        names = self.model.task_names
        if target is not None:
            if target not in names:
                raise ValueError(f"target {target!r} is not a task of this model (it has {names})")
            return target
        return session_target(self.model, self.session_id, names)

    def _build_id_table(self) -> None:
        """Sorted string ids (full ids and bare unit names) -> local index, for vectorised lookups."""
        prefix = f"{self.session_id}/"
        keys = self.unit_ids + [u[len(prefix):] for u in self.unit_ids if u.startswith(prefix)]
        local = list(range(self.n_units)) + [i for i, u in enumerate(self.unit_ids) if u.startswith(prefix)]
        if len(set(keys)) < len(keys):  # a bare name equal to another unit's full id: keep full ids only
            keys, local = self.unit_ids, list(range(self.n_units))
        order = np.argsort(keys)
        self._id_keys = np.asarray(keys)[order]
        self._id_local = np.asarray(local, dtype=np.int64)[order]

    def _kv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Encoder keys and values (1, n, H, d) of input embeddings x (n, dim), not yet rotated."""
        enc = self.model.encoder
        a = enc.attn
        k, v = a.to_kv(enc.norm_ctx(x)).chunk(2, dim=-1)
        return tuple(t.reshape(1, -1, a.heads, a.head_dim).contiguous() for t in (k, v))

    def _precompute(self, rows: torch.Tensor, sess_row: int) -> None:
        m, c = self.model, self.model.config
        unit = m.unit_emb.weight[rows]  # (n_units, dim)
        types = m.token_type_emb.weight
        self._k_spike, self._v_spike = (t[0] for t in self._kv(unit + types[TOKEN_SPIKE]))  # (n_units, H, d)
        self._k_start, self._v_start = self._kv(unit + types[TOKEN_START])  # (1, n_units, H, d)
        self._k_end, self._v_end = self._kv(unit + types[TOKEN_END])
        lat_ids, lat_times = self._tok.latents()
        self._lat_times = torch.from_numpy(lat_times)[None].to(self.device)  # (1, n_lat) float64, from window start
        self._lat = m.latent_emb(torch.from_numpy(lat_ids).to(self.device))[None]  # (1, n_lat, dim)
        enc = m.encoder
        q = enc.attn.to_q(enc.norm_q(self._lat))
        self._q_lat = q.view(1, -1, enc.attn.heads, enc.attn.head_dim).contiguous()  # (1, n_lat, H, d)
        self._lat_rot = m.rotary(self._lat_times)  # relative to the window start: constant
        self._out_rot = m.rotary(torch.tensor([[self.window]], dtype=torch.float64, device=self.device))
        self._query = m.session_emb.weight[sess_row].reshape(1, 1, -1)
        mean, std = m.normalizer.get(self.session_id, self.target)
        self._mean, self._std = mean.to(self.device), std.to(self.device)
        self._readout = m.readouts[self.target]
        self._heads, self._head_dim = enc.attn.heads, enc.attn.head_dim

    def _alloc(self, capacity: int) -> None:
        """Empty buffers: 2 * n_units slots for START/END tokens, then `capacity` spike slots."""
        self._p = 2 * self.n_units
        shape = (1, self._p + capacity, self._heads, self._head_dim)
        self._k = torch.zeros(shape, dtype=self.dtype, device=self.device)
        self._v = torch.zeros(shape, dtype=self.dtype, device=self.device)
        self._times = np.zeros(capacity, dtype=np.float64)
        self._units = np.zeros(capacity, dtype=np.int64)
        self._lo = self._hi = 0  # live spikes are buffer slots [lo, hi) (plus the START/END prefix)
        self._last_time = -np.inf  # newest spike pushed
        self._last_decode = -np.inf

    def reset(self) -> None:
        """Forget all spikes and decode times (e.g. before streaming another stretch of the recording)."""
        self._alloc(len(self._times))
        self.n_late = 0

    @property
    def capacity(self) -> int:
        return len(self._times)

    @property
    def n_buffered(self) -> int:
        """Spikes held in the buffer (those a later decode may still need)."""
        return self._hi - self._lo

    # ------------------------------------------------------------------ streaming

    def local_index(self, unit_ids: Sequence[str] | np.ndarray) -> np.ndarray:
        """Local unit indices (n,) of string ids (full "<session>/<unit>" ids or bare unit names)."""
        ids = np.asarray(unit_ids)
        if ids.dtype.kind not in "UO":
            raise TypeError(f"unit ids must be strings or integer local indices, got dtype {ids.dtype}")
        ids = ids.astype(str)
        pos = np.clip(np.searchsorted(self._id_keys, ids), 0, len(self._id_keys) - 1)
        bad = self._id_keys[pos] != ids
        if bad.any():
            raise KeyError(f"{int(bad.sum())} spike(s) from units unknown to this decoder (first: {ids[bad][0]!r}); "
                           f"session {self.session_id!r} has {self.n_units} units")
        return self._id_local[pos]

    @torch.inference_mode()
    def push(self, unit_ids: Sequence | np.ndarray, times: Sequence[float] | np.ndarray) -> int:
        """Add a packet of spikes; returns how many were added.

        unit_ids (n,): integer local indices 0..n_units-1 (the order of `unit_ids` given to the decoder),
            or string ids (full "<session>/<unit>" ids or bare unit names).
        times (n,): spike times in seconds, in the session's clock. A packet may be unsorted within itself
            (it is sorted here), but it must not hold spikes older than the newest spike already pushed
            (StreamOrderError), nor older than the last decode time (LateSpikeError, or dropped with late="drop").
        """
        times = np.asarray(times, dtype=np.float64).reshape(-1)
        ids = np.asarray(unit_ids).reshape(-1)
        if len(ids) != len(times):
            raise ValueError(f"push: {len(ids)} unit ids but {len(times)} times")
        if len(times) == 0:
            return 0
        if ids.dtype.kind in "iu":
            units = ids.astype(np.int64)
            if units.min() < 0 or units.max() >= self.n_units:
                raise IndexError(f"push: local unit index outside 0..{self.n_units - 1} (got {units.min()}..{units.max()})")
        else:
            units = self.local_index(ids)
        if not np.isfinite(times).all():
            raise ValueError("push: spike times must be finite")
        if np.any(times[1:] < times[:-1]):
            order = np.argsort(times, kind="stable")
            times, units = times[order], units[order]
        if times[0] < self._last_decode:
            n_late = int(np.searchsorted(times, self._last_decode, side="left"))
            if self.late == "raise":
                raise LateSpikeError(
                    f"push: {n_late} spike(s) at t={times[0]:.6f} s and later arrived after a decode at "
                    f"t={self._last_decode:.6f} s already went out without them; push spikes before decoding "
                    "(or use late='drop')")
            self.n_late += n_late
            times, units = times[n_late:], units[n_late:]
            if len(times) == 0:
                return 0
        if times[0] < self._last_time:
            raise StreamOrderError(
                f"push: packet starts at t={times[0]:.6f} s, before the newest spike already pushed "
                f"(t={self._last_time:.6f} s); packets must arrive in time order")
        n = len(times)
        self._make_room(n)
        lo, hi = self._hi, self._hi + n
        self._times[lo:hi], self._units[lo:hi] = times, units
        rot = self.model.rotary(torch.from_numpy(times)[None].to(self.device))  # absolute times
        u = torch.from_numpy(units).to(self.device)
        p = self._p
        self._k[:, p + lo:p + hi] = rotate(self._k_spike[u][None], rot)
        self._v[:, p + lo:p + hi] = rotate(self._v_spike[u][None], rot)
        self._hi = hi
        self._last_time = float(times[-1])
        return n

    def _make_room(self, n: int) -> None:
        """Ensure n free slots at the end: move the live spikes to the front, growing the buffer if needed."""
        cap = len(self._times)
        if self._hi + n <= cap:
            return
        live = self._hi - self._lo
        if live + n > cap // 4:  # keep compactions rare: at most one per ~3/4 buffer of new spikes
            cap = max(2 * cap, 4 * (live + n))
        p, lo, hi = self._p, self._lo, self._hi
        times, units, k, v = self._times, self._units, self._k, self._v
        if cap != len(times):
            shape = (1, p + cap, self._heads, self._head_dim)
            self._k = torch.zeros(shape, dtype=self.dtype, device=self.device)
            self._v = torch.zeros(shape, dtype=self.dtype, device=self.device)
            self._times, self._units = np.zeros(cap, np.float64), np.zeros(cap, np.int64)
        self._times[:live], self._units[:live] = times[lo:hi].copy(), units[lo:hi].copy()
        self._k[:, p:p + live] = k[:, p + lo:p + hi].clone()
        self._v[:, p:p + live] = v[:, p + lo:p + hi].clone()
        self._lo, self._hi = 0, live

    @torch.inference_mode()
    def decode(self, t: float) -> np.ndarray:
        """Behaviour (D,) at time t in original units, from the spikes pushed with times in [t - window, t)."""
        return self.decode_normalised(t).mul(self._std).add(self._mean).cpu().numpy()

    @torch.inference_mode()
    def decode_normalised(self, t: float) -> torch.Tensor:
        """The model's raw (normalised) output (D,) at time t; `decode` maps it to original units."""
        t = float(t)
        if t < self._last_decode:
            raise StreamOrderError(f"decode: t={t:.6f} s is before the previous decode time {self._last_decode:.6f} s; "
                                   "decode times must not decrease (call reset() to start over)")
        t0 = t - self.window
        live = self._times[self._lo:self._hi]
        a = self._lo + int(np.searchsorted(live, t0, side="left"))
        b = self._lo + int(np.searchsorted(live, t, side="left"))
        m, p, n_u = self.model, self._p, self.n_units
        # START/END tokens go in the n_units*2 slots just before the window's first spike: spikes there are
        # older than t - window and, since decode times never decrease, never needed again.
        edge = m.rotary(torch.tensor([[t0, t]], dtype=torch.float64, device=self.device))  # absolute times
        at_start, at_end = edge[:, :1], edge[:, 1:]
        s = a  # buffer slot of spike a - 2 * n_units
        self._k[:, s:s + n_u] = rotate(self._k_start, at_start)
        self._v[:, s:s + n_u] = rotate(self._v_start, at_start)
        self._k[:, s + n_u:s + p] = rotate(self._k_end, at_end)
        self._v[:, s + n_u:s + p] = rotate(self._v_end, at_end)
        k, v = self._k[:, s:p + b].transpose(1, 2), self._v[:, s:p + b].transpose(1, 2)  # (1, H, m, d) views
        # encoder: latent queries rotated by their absolute times, over the window's keys
        lat_rot = m.rotary(self._lat_times + t0)
        attn = m.encoder.attn
        q = rotate(self._q_lat, lat_rot).transpose(1, 2)
        o = rotate(F.scaled_dot_product_attention(q, k, v).transpose(1, 2), lat_rot, inverse=True)
        lat = self._lat + attn.to_out(o.reshape(1, -1, self._heads * self._head_dim))
        lat = lat + m.encoder.ff(m.encoder.norm_ff(lat))
        for block in m.processor:
            lat = block(lat, self._lat_rot)
        out = m.norm_out(m.decoder(self._query, self._out_rot, lat, self._lat_rot))
        self._lo = a  # spikes before t - window are dead from now on
        self._last_decode = t
        return self._readout(out[0, 0]).float()

    def window_spikes(self, t: float) -> tuple[np.ndarray, np.ndarray]:
        """Buffered spikes in [t - window, t): local unit indices and times relative to t - window (for checks)."""
        live, units = self._times[self._lo:self._hi], self._units[self._lo:self._hi]
        a, b = np.searchsorted(live, [t - self.window, t], side="left")
        return units[a:b].copy(), live[a:b] - (t - self.window)


# ---------------------------------------------------------------------- replay of recorded sessions


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
            "session": self.session, "target": self.target, "n_decodes": int(len(self.times)), "every_s": self.every,
            "stream_s": float(len(self.times) * self.every), "wall_s": self.wall_s,
            "latency_ms": {"median": float(np.median(lat)), "p99": float(np.percentile(lat, 99)),
                           "max": float(lat.max()), "mean": float(lat.mean())} if len(lat) else {},
            "decode_ms": {"median": float(np.median(self.decode_ms)), "p99": float(np.percentile(self.decode_ms, 99))}
            if len(lat) else {},
            "over_budget": int((lat > 1000 * self.every).sum()),
        }
        if self.y_true is not None:
            r2 = self.r2()
            out.update({"r2": float(np.nanmean(r2)), "r2_per_dim": [float(v) for v in r2], "dims": self.dims,
                        "n_scored": int((self.weights > 0).sum())})
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
    model: POYO,
    session: SessionLike,
    intervals: Intervals | None = None,
    every: float = 0.02,
    speed: float | None = None,
    target: str | None = None,
    limit: float | None = None,
    progress: bool = True,
) -> ReplayResult:
    """Stream a recorded session through a StreamingDecoder, decoding every `every` s inside `intervals`.

    For each interval [s, e): reset, push the spikes of [s - window, s) (warm-up, not timed), then for
    t = s, s + every, ... < e push the packet of spikes in [previous t, t) and decode at t, timing both.
    speed: None = as fast as possible; a factor of real time (1.0 = real time) paces the packets by the
    wall clock. limit: stop after this many seconds of stream. Intervals default to the whole session
    (from one window after its start). Python's garbage collector is paused during the loop.
    """
    if every <= 0:
        raise ValueError(f"every must be positive, got {every}")
    if speed is not None and speed <= 0:
        raise ValueError(f"speed must be positive (or None for as fast as possible), got {speed}")
    dec = StreamingDecoder(model, session.id, target=target, unit_ids=session.unit_ids)
    w = dec.window
    if intervals is None:
        intervals = Intervals([session.start + w], [session.end])
    truth = session.behavior(dec.target) if dec.target in session.behavior_names else None
    grids = [s + every * np.arange(int(np.ceil((e - s) / every - 1e-9))) for s, e in zip(intervals.start, intervals.end)]
    if limit is not None:
        left, kept = int(round(limit / every)), []
        for g in grids:
            kept.append(g[:max(left, 0)])
            left -= len(kept[-1])
        grids = kept
    total = sum(len(g) for g in grids)
    times, preds, push_ms, decode_ms = [], [], [], []
    tic_all = time.perf_counter()
    bar = tqdm(total=total, desc=f"replay {session.id}", unit="decode", disable=not progress, leave=False)
    gc_was_on = gc.isenabled()
    gc.disable()  # a garbage-collector pass costs milliseconds; the loop makes no reference cycles
    try:
        _stream_grids(dec, session, grids, speed, bar, times, preds, push_ms, decode_ms)
    finally:
        if gc_was_on:
            gc.enable()
    bar.close()
    times_a = np.concatenate(times) if times else np.zeros(0)
    y_pred = np.stack(preds) if preds else np.zeros((0, model.readouts[dec.target].out_features), np.float32)
    if truth is not None:
        y_true, weights = behavior_at(truth, times_a)
        dims = list(truth.dims)
    else:
        y_true, weights, dims = None, np.zeros(len(times_a), np.float32), [f"{dec.target}_{i}" for i in range(y_pred.shape[1])]
    return ReplayResult(session.id, dec.target, dims, times_a, y_pred, y_true, weights, np.array(push_ms),
                        np.array(decode_ms), every, time.perf_counter() - tic_all)


def _stream_grids(dec: StreamingDecoder, session: SessionLike, grids: list[np.ndarray],
                  speed: float | None, bar, times: list, preds: list, push_ms: list, decode_ms: list) -> None:
    """The replay loop: per interval, warm up (untimed), then push a packet and decode at each grid time."""
    w = dec.window
    for grid in grids:
        if not len(grid):
            continue
        win = session.slice(grid[0] - w, grid[-1] + 1e-9, behavior=[])
        sp_t, sp_u = win.spike_times + win.t0, win.spike_units.astype(np.int64)
        cut = np.searchsorted(sp_t, grid, side="left")  # packet k: spikes in [grid[k-1], grid[k])
        dec.reset()
        dec.push(sp_u[:cut[0]], sp_t[:cut[0]])
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
