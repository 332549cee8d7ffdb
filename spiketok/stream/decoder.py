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
All of it is the model's own stages (spiketok.model.stages: `pair_kv`, `encode` over the kept rotated keys
or merged averages, `process`, `decode`) fed with what this decoder keeps between calls.
For a model with its latents on the absolute time grid (`latent_grid="absolute"`) the cross-attention is
incremental (spiketok.stream.incremental): each packet's softmax partials are computed once, on push, and a
decode merges those of the window, so its cost follows the new spikes, not the window.
For the lowest latency run it with `torch.set_num_threads(1)` (small ops; on a busy machine several
threads wait on each other). A decoder is not thread-safe: push and decode from one thread.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import torch

from ..model.normalize import unnormalise
from ..model.poyo import POYO
from ..model.precision import with_precision
from ..model.rotary import rotate
from ..model.stages import AttentionAverages, RotatedKV
from ..tokenize import TokenType
from ..tokenize.tokenizer import grid_start, grid_times
from .incremental import IncrementalEncoder
from .packets import LateSpikeError, PacketRules, StreamOrderError

__all__ = ["LateSpikeError", "PacketRules", "StreamOrderError", "StreamingDecoder"]


class StreamingDecoder(PacketRules):
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
        incremental: merge per-packet softmax partials instead of attending over the whole window at each
            decode (same numbers); None (default) = when the model's latents are on the absolute time grid
            (`latent_grid="absolute"`), the only layout where it is exact (True on another raises ValueError).
        precision: "float32" (default), "bfloat16", "int8" or "auto": the linear layers' arithmetic
            (spiketok.model.precision; the model itself is not changed). Accuracy cost: docs/benchmarks.md.

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
        incremental: bool | None = None,
        precision: str = "float32",
    ):
        self._open(session_id, late)
        model = with_precision(model, precision)  # the model itself for float32; else a copy
        self.model = model.eval()
        c = model.config
        self.window = float(c.window if window is None else window)
        if self.window <= 0:
            raise ValueError(f"window must be positive, got {self.window}")
        if abs(self.window - c.window) > 1e-9:
            warnings.warn(
                f"streaming window {self.window} s differs from the model's {c.window} s window", stacklevel=2
            )
        if model.meta.train and not model.meta.causal:
            warnings.warn(
                "this model was trained with outputs throughout its windows (causal=false); streaming reads "
                "it out at the window end only: train with causal=true for real-time decoding",
                stacklevel=2,
            )
        sess_row, rows = self._bind_session(model, unit_ids, target)
        self.device = next(model.parameters()).device
        self.dtype = next(model.parameters()).dtype
        self._tok = model.tokenizer(self.window)
        self._absolute = c.latent_grid == "absolute"
        if incremental and not self._absolute:
            raise ValueError(
                f"incremental=True needs a model with latent_grid='absolute' (this one has {c.latent_grid!r}): with "
                "latents at window-relative times every latent moves with t, so its score with every spike changes "
                "at each decode and no partial sum can be reused exactly; train with model.latent_grid=absolute"
            )
        self.incremental = self._absolute if incremental is None else bool(incremental)
        if self._absolute:
            self._tok.latents(t0=0.0)  # a window that is not a whole number of latent steps: ValueError now
        with torch.inference_mode():
            self._precompute(rows.to(self.device), sess_row)
        self._alloc(max(int(capacity), 16))
        self.n_late = 0

    # ------------------------------------------------------------------ set-up

    def _precompute(self, rows: torch.Tensor, sess_row: int) -> None:
        m = self.model
        unit = m.unit_emb.weight[rows]  # (n_units, dim)
        kv = {kind: m.pair_kv(unit, torch.full_like(rows, int(kind))) for kind in TokenType}  # (n_units, 2 * inner)
        self._kv_spike, self._kv_start, self._kv_end = kv[TokenType.SPIKE], kv[TokenType.START], kv[TokenType.END]
        lat_ids, lat_times = self._tok.latents(t0=0.0)
        self._lat_times = torch.from_numpy(lat_times)[None].to(self.device)  # (1, n_lat) float64, from window start
        self._lat = m.latent_emb(torch.from_numpy(lat_ids).to(self.device))[None]  # (1, n_lat, dim)
        enc = m.encoder
        self._q_lat = enc.query(self._lat).contiguous()  # (1, n_lat, H, d), not yet rotated
        self._lat_rot = m.rotary(self._lat_times)  # relative to the window start: constant
        self._proc_rot = m.processor_rotations(self._lat_rot)
        query = m.session_emb.weight[sess_row].reshape(1, 1, -1)  # (1, 1, dim) the output query, at the window end
        self._out_q = m.output_queries(
            query, m.rotary(torch.tensor([[self.window]], dtype=torch.float64, device=self.device))
        )
        mean, std = m.normalizer.get(self.session_id, self.target)
        self._mean, self._std = mean.to(self.device), std.to(self.device)
        self._readout = m.readouts[self.target]
        self._heads, self._head_dim = enc.attn.heads, enc.attn.head_dim
        if self.incremental:  # latent queries per id (L, H, d)
            q_ids = enc.query(m.latent_emb.weight[None])[0].contiguous()
            self._inc = IncrementalEncoder(q_ids, m.rotary, m.config.latent_step, self.window)

    def _edge_kv(self, kv: torch.Tensor, rot: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values (1, n_units, H, d) of the START or END tokens kv (n_units, 2 * inner) at rotation rot."""
        return self.model.encoder.attn.rotate_kv(kv[None].clone(), rot)  # a copy: rotated in place

    def _alloc(self, capacity: int) -> None:
        """Empty buffers: 2 * n_units slots for START/END tokens, then `capacity` spike slots (keys and values
        only without `incremental`: the incremental encoder keeps its own blocks)."""
        self._p = 2 * self.n_units
        shape = (1, self._p + (0 if self.incremental else capacity), self._heads, self._head_dim)
        self._k = torch.zeros(shape, dtype=self.dtype, device=self.device)
        self._v = torch.zeros(shape, dtype=self.dtype, device=self.device)
        self._times = np.zeros(capacity, dtype=np.float64)
        self._units = np.zeros(capacity, dtype=np.int64)
        self._lo = self._hi = 0  # live spikes are buffer slots [lo, hi) (plus the START/END prefix)
        self._last_time = -np.inf  # newest spike pushed
        self._last_decode = -np.inf
        if self.incremental:
            self._inc.clear()

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

    @torch.inference_mode()
    def push(self, unit_ids: Sequence | np.ndarray, times: Sequence[float] | np.ndarray) -> int:
        """Add a packet of spikes; returns how many were added.

        unit_ids (n,): integer local indices 0..n_units-1 (the order of `unit_ids` given to the decoder),
            or string ids (full "<session>/<unit>" ids or bare unit names).
        times (n,): spike times in seconds, in the session's clock. A packet may be unsorted within itself
            (it is sorted here), but it must not hold spikes older than the newest spike already pushed
            (StreamOrderError), nor older than the last decode time (LateSpikeError, or dropped with late="drop").
        """
        packet = self._checked_packet(unit_ids, times)
        if packet is None:
            return 0
        units, times = packet
        n = len(times)
        self._make_room(n)
        lo, hi = self._hi, self._hi + n
        self._times[lo:hi], self._units[lo:hi] = times, units
        rot = self.model.rotary(torch.from_numpy(times)[None].to(self.device))  # absolute times
        u = torch.from_numpy(units).to(self.device)
        k, v = self.model.encoder.attn.rotate_kv(self._kv_spike[u][None], rot)  # (1, n, H, d) each
        if self.incremental:
            self._inc.add(times, k[0], v[0])
        else:
            p = self._p
            self._k[:, p + lo : p + hi], self._v[:, p + lo : p + hi] = k, v
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
            self._times, self._units = np.zeros(cap, np.float64), np.zeros(cap, np.int64)
        self._times[:live], self._units[:live] = times[lo:hi].copy(), units[lo:hi].copy()
        self._lo, self._hi = 0, live
        if self.incremental:
            return
        if cap != len(times):
            shape = (1, p + cap, self._heads, self._head_dim)
            self._k = torch.zeros(shape, dtype=self.dtype, device=self.device)
            self._v = torch.zeros(shape, dtype=self.dtype, device=self.device)
        self._k[:, p : p + live] = k[:, p + lo : p + hi].clone()
        self._v[:, p : p + live] = v[:, p + lo : p + hi].clone()

    @torch.inference_mode()
    def decode(self, t: float) -> np.ndarray:
        """Behaviour (D,) at time t in original units, from the spikes pushed with times in [t - window, t)."""
        return unnormalise(self.decode_normalised(t), self._mean, self._std).cpu().numpy()

    @torch.inference_mode()
    def decode_normalised(self, t: float) -> torch.Tensor:
        """The model's raw (normalised) output (D,) at time t; `decode` maps it to original units."""
        t = float(t)
        if t < self._last_decode:
            raise StreamOrderError(
                f"decode: t={t:.6f} s is before the previous decode time {self._last_decode:.6f} s; "
                "decode times must not decrease (call reset() to start over)"
            )
        t0 = t - self.window
        live = self._times[self._lo : self._hi]
        a = self._lo + int(np.searchsorted(live, t0, side="left"))
        b = self._lo + int(np.searchsorted(live, t, side="left"))
        m, p, n_u = self.model, self._p, self.n_units
        edge = m.rotary(torch.tensor([[t0, t]], dtype=torch.float64, device=self.device))  # absolute times
        k_start, v_start = self._edge_kv(self._kv_start, edge[:, :1])  # (1, n_units, H, d), absolute times
        k_end, v_end = self._edge_kv(self._kv_end, edge[:, 1:])
        if self.incremental:  # START/END tokens fresh, spikes from the blocks' partials
            k_edge, v_edge = torch.cat([k_start, k_end], 1)[0], torch.cat([v_start, v_end], 1)[0]
            avg, lat_rot = self._inc.attend(t, k_edge, v_edge)  # (1, n_lat, H, d), rotations at absolute times
            lat = m.encode(self._lat, lat_rot, AttentionAverages(avg))  # (1, n_lat, dim)
        else:
            # START/END tokens go in the n_units*2 slots just before the window's first spike: spikes there are
            # older than t - window and, since decode times never decrease, never needed again.
            s = a  # buffer slot of spike a - 2 * n_units
            self._k[:, s : s + n_u], self._v[:, s : s + n_u] = k_start, v_start
            self._k[:, s + n_u : s + p], self._v[:, s + n_u : s + p] = k_end, v_end
            k, v = self._k[:, s : p + b], self._v[:, s : p + b]  # (1, m, H, d) views, already rotated
            # encoder: latent queries rotated by their absolute times, over the window's keys
            lat_rot = m.rotary(self._absolute_latent_times(t0) if self._absolute else self._lat_times + t0)
            lat = m.encode(self._lat, lat_rot, RotatedKV(k, v), rotate(self._q_lat, lat_rot))  # (1, n_lat, dim)
        # processor and read-out: latent times from the window start, as the tokenizer gives them offline
        rel_rot, proc_rot = self._lat_rot, self._proc_rot
        if self._absolute:  # they move with the window's phase on the grid
            rel_rot = m.rotary(torch.from_numpy(self._tok.latents(t0=t0)[1])[None].to(self.device))
            proc_rot = m.processor_rotations(rel_rot)
        out = m.decode(self._out_q, m.process(lat, proc_rot), rel_rot)  # (1, 1, dim)
        self._lo = a  # spikes before t - window are dead from now on
        self._last_decode = t
        return self._readout(out[0])[0].float()  # (1, dim) -> (D,): quantized layers need 2-D inputs

    def _absolute_latent_times(self, t0: float) -> torch.Tensor:
        """Session times (1, n_lat) of the latents of the window starting at t0 (absolute grid, grid-major)."""
        step, n_lat = self.model.config.latent_step, self._lat_times.shape[1]
        L = self.model.config.num_latents_per_step
        times = np.repeat(grid_times(grid_start(t0, step), n_lat // L, step), L)
        return torch.from_numpy(times)[None].to(self.device)

    def window_spikes(self, t: float) -> tuple[np.ndarray, np.ndarray]:
        """Buffered spikes in [t - window, t): local unit indices and times relative to t - window (for checks)."""
        live, units = self._times[self._lo : self._hi], self._units[self._lo : self._hi]
        a, b = np.searchsorted(live, [t - self.window, t], side="left")
        return units[a:b].copy(), live[a:b] - (t - self.window)
