"""The encoder's cross-attention computed incrementally, for models whose latents sit on the absolute time grid.

With `latent_grid="absolute"` a latent is a fixed point (k + 0.5) * step of the session clock, so its score with
a spike (both rotated by their absolute times) does not change while both are in the window. Each block of
pushed spikes therefore keeps, per latent grid point it can meet (|tau - s| < window) and per head, the partial
softmax sums of flash attention: the running max m, l = sum exp(score - m) and o = sum exp(score - m) v.
A decode merges the partials of the blocks inside its window (M = max m; L = sum l e^(m - M); O = sum o e^(m - M);
average = O / L) with those of the START/END tokens (fresh: they sit at the window's edges). Expiring a block
is dropping its partial (nothing is subtracted); only a block straddling an edge of the window is recomputed,
over its spikes inside. A decode costs the new spikes times the latents they meet, plus merging the blocks.
The partials and their merge are spiketok.model.attention's (softmax_partial, merge_partials); the decoder hands
the merged averages to the model's encoder stage (spiketok.model.stages.AttentionAverages).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np
import torch

from ..model.attention import merge_partials, softmax_partial
from ..model.rotary import RotaryTimeEmbedding, rotate
from ..tokenize.tokenizer import grid_start, grid_times


@dataclass
class Block:
    """A run of pushed spikes (time-sorted) whose partials for latent grid points g0 .. g0 + n_grid - 1 are in
    storage slot `slot` (IncrementalEncoder: grid point g at ring position g mod ring)."""

    times: np.ndarray  # (n,) absolute spike times
    k: torch.Tensor  # (H, n, d) keys rotated by the spike times
    v: torch.Tensor  # (H, n, d) values rotated by the spike times
    g0: int
    n_grid: int
    slot: int

    @property
    def t_min(self) -> float:
        return float(self.times[0])

    @property
    def t_max(self) -> float:
        return float(self.times[-1])


class IncrementalEncoder:
    """Blocks of rotated spike keys/values with their softmax partials; `attend` gives the window's averages.

    q_lat (L, H, d): the encoder's latent queries (normed, projected, not rotated), one per latent id.
    Blocks span at most `block_span` s (a longer packet is cut), so one meets at most `ring` grid points. Their
    partials live in one tensor per sum, (slots, H, ring * L[, d]): block slots in time order around a ring, grid
    point g at position g mod ring, so a decode gathers every inside block's partial for its latents at once.
    """

    def __init__(
        self,
        q_lat: torch.Tensor,
        rotary: RotaryTimeEmbedding,
        step: float,
        window: float,
        block_span: float | None = None,
    ):
        self.q_lat, self.rotary, self.step, self.window = q_lat, rotary, float(step), float(window)
        self.n_ids, self.heads, self.head_dim = q_lat.shape
        self.n_steps = int(round(self.window / self.step))  # grid points per window
        self.block_span = self.step if block_span is None else float(block_span)
        self.ring = int(np.ceil(self.block_span / self.step)) + 2 * self.n_steps + 5
        self.blocks: deque[Block] = deque()
        self._alloc(64)

    def _alloc(self, slots: int) -> None:
        """Partial storage for `slots` blocks; live blocks are copied over, in order, to slots 0, 1, ..."""
        N, like = self.ring * self.n_ids, self.q_lat
        m = like.new_empty(slots, self.heads, N)
        l, o = torch.empty_like(m), like.new_empty(slots, self.heads, N, self.head_dim)  # noqa: E741
        for i, b in enumerate(self.blocks):
            m[i], l[i], o[i] = self.m[b.slot], self.l[b.slot], self.o[b.slot]
            b.slot = i
        self.m, self.l, self.o = m, l, o

    def clear(self) -> None:
        self.blocks.clear()

    def _positions(self, g0: int, n: int) -> torch.Tensor:
        """Storage positions (n * L,) of the latents of grid points g0 .. g0 + n - 1, grid-major."""
        g = torch.arange(g0, g0 + n, device=self.q_lat.device) % self.ring
        return (g[:, None] * self.n_ids + torch.arange(self.n_ids, device=g.device)).reshape(-1)

    def grid_rotation(self, g0: int, n: int) -> torch.Tensor:
        """Rotations (n, 1, 1, d/2) of grid points g0 .. g0 + n - 1 at their absolute times."""
        t = torch.from_numpy(grid_times(g0, n, self.step)).to(self.q_lat.device)
        return self.rotary(t[None]).reshape(n, 1, 1, -1)

    def queries(self, rot: torch.Tensor) -> torch.Tensor:
        """Rotated latent queries (H, n * L, d) of n grid points with rotations rot (n, 1, 1, d/2), grid-major."""
        n = rot.shape[0]
        q = rotate(self.q_lat.expand(n, *self.q_lat.shape), rot)  # (n, L, H, d)
        return q.reshape(n * self.n_ids, self.heads, self.head_dim).transpose(0, 1)

    def add(self, times: np.ndarray, k: torch.Tensor, v: torch.Tensor) -> None:
        """Spikes at sorted absolute times (n,) with rotated keys and values k, v (n, H, d): new blocks."""
        start = 0
        while start < len(times):
            end = int(np.searchsorted(times, times[start] + self.block_span, side="left"))
            end = max(end, start + 1)
            t = times[start:end]
            # every grid point tau with |tau - s| < window for a spike s of the block, one spare on each side
            g0 = grid_start(float(t[0]) - self.window, self.step) - 1
            n = grid_start(float(t[-1]) + self.window, self.step) + 1 - g0
            assert n <= self.ring, "a block meets more grid points than its storage holds"
            kb, vb = k[start:end].transpose(0, 1).contiguous(), v[start:end].transpose(0, 1).contiguous()
            part = softmax_partial(self.queries(self.grid_rotation(g0, n)), kb, vb)
            if len(self.blocks) == len(self.m):
                self._alloc(2 * len(self.m))
            slot = (self.blocks[-1].slot + 1) % len(self.m) if self.blocks else 0
            pos = self._positions(g0, n)
            for store, p in zip((self.m, self.l, self.o), part):
                store[slot].index_copy_(1, pos, p)
            self.blocks.append(Block(t.copy(), kb, vb, g0, n, slot))
            start = end

    def attend(self, t: float, k_edge: torch.Tensor, v_edge: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Attention averages (1, n_latents, H, d) of the latents of window [t - window, t) over its spikes and
        the edge (START/END) tokens k_edge, v_edge (m, H, d), rotated; and the latents' rotations
        (1, n_latents, 1, d/2) at their absolute times. Drops the blocks older than the window."""
        t0 = t - self.window
        while self.blocks and self.blocks[0].t_max < t0:
            self.blocks.popleft()  # decode times never decrease: never needed again
        g0, n, L = grid_start(t0, self.step), self.n_steps, self.n_ids
        rot = self.grid_rotation(g0, n)
        q = self.queries(rot)  # (H, n * L, d)
        parts = [tuple(p.unsqueeze(0) for p in softmax_partial(q, k_edge.transpose(0, 1), v_edge.transpose(0, 1)))]
        inside: list[int] = []
        for b in self.blocks:
            if b.t_min >= t:
                break  # this block and all later ones are after the window
            if b.t_min >= t0 and b.t_max < t:  # inside: its stored partial, for the window's grid points
                assert b.g0 <= g0 and g0 + n <= b.g0 + b.n_grid, "block partial misses a window latent"
                inside.append(b.slot)
            else:  # straddles an edge: only its spikes inside, computed for this window
                a, c = np.searchsorted(b.times, [t0, t], side="left")
                if c > a:
                    parts.append(tuple(p.unsqueeze(0) for p in softmax_partial(q, b.k[:, a:c], b.v[:, a:c])))
        if inside:
            slots = torch.tensor(inside, device=q.device)
            pos = self._positions(g0, n)
            parts.append(tuple(store.index_select(0, slots).index_select(2, pos) for store in (self.m, self.l, self.o)))
        out = merge_partials(parts).transpose(0, 1).unsqueeze(0)  # (1, n * L, H, d)
        return out, rot.repeat_interleave(L, 0).reshape(1, n * L, 1, -1)
