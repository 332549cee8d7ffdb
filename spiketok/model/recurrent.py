"""A recurrent spike-token decoder (POSSM-like): the cost of a decode does not grow with the model's context.

The window is cut into chunks of `latent_step` seconds (the latent grid: `num_latents_per_step` latents per
chunk, at the chunk's centre). Each chunk's latents read only the spikes whose time lies in that chunk (the
encoder's rotary cross-attention, so spike timing within the chunk counts), plus one learned chunk token, so
that a chunk without spikes still has something to read. The latents then go through `depth` self-attention
blocks within the chunk, are flattened into one vector, and a diagonal linear state-space update (`DiagonalSSM`)
moves the recurrent state once per chunk.
An output query at time t reads the state of the last chunk that ended at or before t (causal): the session
embedding plus the state, through a feed-forward block (`StateReadout`), then the task's linear readout.

START/END tokens are skipped: they mark the edges of a window, which a recurrent stream does not have, and per
chunk they would cost 2 tokens per unit, twice the one spike a 20 Hz unit fires in 50 ms (3x the encoder's work).
`RecurrentStages` holds the per-chunk stages, shared by `RecurrentPOYO.forward` (every chunk of a batch of
windows at once), the streaming decoder (spiketok.stream.recurrent: one chunk per state update) and the export
graph (spiketok.model.export_recurrent).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from ..tokenize import TokenType
from ..tokenize.batch import Batch
from .attention import FeedForward
from .config import ModelConfig
from .poyo import POYO
from .rotary import RealRotation, RotaryTimeEmbedding, Rotation
from .stages import PoyoStages

BOUNDARY_TOLERANCE = 1e-6  # of a chunk: an output query this close before a chunk's end reads that chunk's state


def first_time(rot: Rotation) -> Rotation:
    """The rotations (N, 1, 1, d/2) of the first of n times in rot (N, n, 1, d/2), complex or real."""
    if isinstance(rot, RealRotation):
        return RealRotation(rot.cos[:, :1], rot.sin[:, :1])
    return rot[:, :1]


class StateReadout(nn.Module):
    """Output query (..., dim) plus the recurrent state it reads (..., dim), then a feed-forward, with residuals."""

    def __init__(self, dim: int, ffn_mult: int, dropout: float):
        super().__init__()
        self.norm_state, self.norm_ff = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.proj = nn.Linear(dim, dim)
        self.ff = FeedForward(dim, ffn_mult, dropout)

    def forward(self, query: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        x = query + self.proj(self.norm_state(state))
        return x + self.ff(self.norm_ff(x))


class DiagonalSSM(nn.Module):
    """A diagonal linear state-space update, per channel: h_c = a * h_(c-1) + (1 - a) * (W x_c + b), with the decays
    a = sigmoid(decay) in (0, 1) learned (at init, time constants from about one chunk to 20). Chosen over a GRU
    on simulated data: higher R² after the same steps, and a cheaper step (see the issue 34 report)."""

    def __init__(self, n_in: int, dim: int):
        super().__init__()
        self.proj = nn.Linear(n_in, dim)
        self.decay = nn.Parameter(torch.linspace(-1.0, 3.0, dim))

    def forward(self, x: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """States (B, C, dim) after each of C inputs x (B, C, n_in) from state (1, B, dim), and the last (1, B, dim)."""
        a = torch.sigmoid(self.decay)  # (dim,)
        u = (1 - a) * self.proj(x)  # (B, C, dim)
        h, states = state[0], []
        for c in range(x.shape[1]):
            h = a * h + u[:, c]
            states.append(h)
        return torch.stack(states, 1), h[None]


class ChunkGroups(NamedTuple):
    """Each chunk's spike tokens, padded to the fullest chunk: rows of the batch's flattened tokens."""

    index: torch.Tensor  # (n_chunks, K) row in the (B * n_tokens) flattened tokens (0 on padding)
    mask: torch.Tensor  # (n_chunks, K) True = a spike of that chunk


def chunk_groups(chunk: torch.Tensor, n_chunks: int) -> ChunkGroups:
    """Group tokens by chunk: chunk (B, n) the chunk (0 .. n_chunks - 1) of each token, -1 to leave it out;
    groups are numbered b * n_chunks + c. Tokens keep their order within a chunk."""
    b, n = chunk.shape
    keep = chunk >= 0
    group = (torch.arange(b, device=chunk.device)[:, None] * n_chunks + chunk)[keep]  # (N,)
    rows = torch.arange(b * n, device=chunk.device).view(b, n)[keep]  # (N,)
    group, order = torch.sort(group, stable=True)
    rows = rows[order]
    counts = torch.bincount(group, minlength=b * n_chunks)  # (b * n_chunks,)
    rank = torch.arange(len(group), device=chunk.device) - (torch.cumsum(counts, 0) - counts)[group]
    width = int(counts.max()) if len(group) else 0
    index = torch.zeros(b * n_chunks, width, dtype=torch.long, device=chunk.device)
    mask = torch.zeros(b * n_chunks, width, dtype=torch.bool, device=chunk.device)
    index[group, rank], mask[group, rank] = rows, True
    return ChunkGroups(index, mask)


class RecurrentStages(PoyoStages):
    """The recurrent model's stages over explicit inputs, for a module holding its blocks under the model's names
    (RecurrentPOYO itself, or an export graph sharing them). The encoder and self-attention blocks are POYO's."""

    rotary: RotaryTimeEmbedding
    chunk_token: nn.Parameter
    state_init: nn.Parameter
    norm_chunk: nn.LayerNorm
    recurrence: DiagonalSSM
    state_readout: StateReadout

    # 2. a chunk's latents read its spikes and the chunk token

    def chunk_token_kv(self, rot: Rotation, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values (n, 1, H, d) of the chunk token of n chunks, rotated by rot (1 or n, 1, 1, d/2)."""
        kv = self.encoder.kv(self.chunk_token).expand(n, 1, -1).clone()  # (n, 1, 2 * inner), fresh: rotated in place
        return self.encoder.attn.rotate_kv(kv, rot)

    def encode_chunks(
        self,
        latents: torch.Tensor,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        rot: Rotation,
        mask: torch.Tensor | None = None,
        token: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Latents (N, L, dim) of N chunks after reading their spikes: rotated queries q (N, L, H, d) at rotations
        rot (N or 1, L, 1, d/2) over rotated k, v (N, m, H, d) (mask (N, m), True = a spike; None: all are) and
        the chunk token at the latents' time (token: its keys and values (N, 1, H, d), `chunk_token_kv`, if kept)."""
        n = latents.shape[0]
        k_tok, v_tok = self.chunk_token_kv(first_time(rot), n) if token is None else token  # (N, 1, H, d)
        k, v = torch.cat([k_tok, k], 1), torch.cat([v_tok, v], 1)  # (N, 1 + m, H, d)
        if mask is not None:  # (N, 1, 1, 1 + m), True = attend: the chunk token always
            mask = torch.cat([mask.new_ones(n, 1), mask], 1)[:, None, None, :]
        return self.encoder.finish(latents, self.encoder.attn.attend(q, k, v, rot, mask))

    # 3. the chunk's latents -> one vector -> the recurrent state

    def chunk_input(self, latents: torch.Tensor) -> torch.Tensor:
        """The recurrence's input (N, L * dim) of chunks' encoded latents (N, L, dim): self-attention within each chunk
        (no rotary time: a chunk's latents share their time), layer-normed, flattened."""
        return self.norm_chunk(self.process(latents, None)).flatten(1)

    def update(self, x: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """States (B, C, dim) after each of C chunks with inputs x (B, C, L * dim), from state (1, B, dim); and the
        last (1, B, dim)."""
        return self.recurrence(x, state)

    # 4. an output query reads a state

    def read(self, queries: torch.Tensor, states: torch.Tensor) -> torch.Tensor:
        """Features (..., dim) of output queries (..., dim) (session embeddings) reading states (..., dim)."""
        return self.norm_out(self.state_readout(queries, states))


class RecurrentPOYO(RecurrentStages, POYO):
    """POYO's tokens, vocabularies, encoder and readouts around a recurrent state updated once per chunk (see the
    module's docstring); `forward` takes the same `spiketok.tokenize.Batch`. The perceiver's decoder is unused."""

    def __init__(self, config: ModelConfig, *args, **kwargs):
        """As POYO's (config, unit_ids, session_ids, tasks), with the recurrent blocks."""
        super().__init__(config, *args, **kwargs)
        c = config
        del self.decoder  # the output queries read the recurrent state instead (state_readout)
        self.chunk_token = nn.Parameter(torch.randn(c.dim) * 0.02)
        self.state_init = nn.Parameter(torch.zeros(c.dim))
        self.norm_chunk = nn.LayerNorm(c.dim)
        self.recurrence = DiagonalSSM(c.num_latents_per_step * c.dim, c.dim)
        self.state_readout = StateReadout(c.dim, c.ffn_mult, c.dropout)

    def forward(self, batch: Batch) -> torch.Tensor:
        """Normalised predictions (B, n_queries, max_task_dim) for a padded batch of windows."""
        c, (b, n_lat) = self.config, batch.latent_ids.shape
        L, step = c.num_latents_per_step, c.latent_step
        n_chunks = n_lat // L
        start = batch.latent_times[:, :1] - step / 2  # (B, 1) the first chunk's start, s from the window start

        # 1. spike tokens: keys and values by (unit, type), rotated by their times; START/END tokens left out
        k, v = self.encoder.attn.rotate_kv(
            self.token_kv(batch.input_units, batch.input_types), self.rotary(batch.input_times)
        )  # (B, n_tokens, H, d) each
        chunk = torch.floor((batch.input_times - start) / step).long()  # (B, n_tokens) each token's chunk
        keep = batch.input_mask & (batch.input_types == TokenType.SPIKE) & (chunk >= 0) & (chunk < n_chunks)
        groups = chunk_groups(torch.where(keep, chunk, -1), n_chunks)  # (B * C, K) each chunk's spikes

        # 2. each chunk's latents read its own spikes (and the chunk token)
        lat = self.latents_at(batch.latent_ids, batch.latent_times)  # (B, C * L, ...) at the chunks' centres
        h, d = k.shape[2:]
        latents = self.encode_chunks(
            lat.latents.reshape(b * n_chunks, L, -1),
            lat.q.reshape(b * n_chunks, L, h, d),
            k.reshape(-1, h, d)[groups.index],
            v.reshape(-1, h, d)[groups.index],
            lat.rot.reshape(b * n_chunks, L, 1, -1),
            groups.mask,
        )  # (B * C, L, dim)

        # 3. one vector per chunk, then the recurrence over the window's chunks, from the initial state
        x = self.chunk_input(latents).view(b, n_chunks, -1)  # (B, C, L * dim)
        state = self.state_init.expand(1, b, -1).contiguous()  # (1, B, dim)
        states = torch.cat([state.transpose(0, 1), self.update(x, state)[0]], 1)  # (B, 1 + C, dim)

        # 4. each output query reads the state after the last chunk that ended at or before its time
        ended = torch.floor((batch.output_times - start) / step + BOUNDARY_TOLERANCE).long()  # (B, n_queries)
        idx = ended.clamp(0, n_chunks)  # (B, n_queries) row of `states`: 0 = the initial state
        read = states.gather(1, idx[..., None].expand(-1, -1, states.shape[-1]))  # (B, n_queries, dim)
        out = self.read(self.session_emb(batch.output_sessions), read)

        # 5. readout: each query through its task's linear head
        return self.readout(out, batch.output_tasks)  # (B, n_queries, max_task_dim)
