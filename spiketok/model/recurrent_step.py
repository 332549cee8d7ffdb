"""One chunk of a trained recurrent model for inference, with everything that does not depend on the chunk's
spikes folded into constants: the streaming decoder's step (spiketok.stream.recurrent) and the export's step
graph (spiketok.model.export_recurrent), which must cost well under a millisecond.

What is fixed in a trained model is computed once from its own stages (`RecurrentStages`): each unit's spike keys
and values, the latents' rotated and scaled encoder queries, the chunk token's rotated keys and values, the
attention output's rotation back to the latents' time (folded into the output projection) and the state decay
(folded into the input projection). The chunk's self-attention, the state readout and the task's head are the
model's own blocks. What depends on the spikes is written in rows (one per spike), in the forms onnxruntime runs
fast (measured on possm-1.3M: a chunk of 200 spikes from 0.75 to 0.64 ms, median):

- a spike's rotated keys and values are `kv * cos + swap(kv) * sin`, with `swap(a, b) = (-b, a)` on each feature
  pair kept in a second unit table, so rotating is two row gathers, two multiplies and an add; each head's
  features are reordered (the first of every pair, then the second) so that cos and sin repeat along one axis;
- the chunk token is always a key, so a chunk without spikes needs no padding and no mask.
"""

from __future__ import annotations

import math
import warnings

import torch
import torch.nn.functional as F
from torch import nn

from ..tokenize import TokenType
from .graph_file import normalization_tables
from .recurrent import RecurrentPOYO, first_time
from .rotary import rotate


def pair_swap(x: torch.Tensor) -> torch.Tensor:
    """x (..., 2k) with each consecutive pair (a, b) replaced by (-b, a): a rotation by cos, sin is
    `x * cos + pair_swap(x) * sin` (spiketok.model.rotary.rotate's pairs)."""
    pairs = x.reshape(*x.shape[:-1], -1, 2)
    return torch.stack([-pairs[..., 1], pairs[..., 0]], -1).reshape(x.shape)


def linear_map(fn, n: int) -> torch.Tensor:
    """The matrix A (n, n) of a linear map on row vectors, fn(x) = x @ A, from fn applied to the identity."""
    return fn(torch.eye(n))


class ChunkStep(nn.Module):
    """A recurrent model's chunk for one behaviour task, with its fixed parts folded (see the module); in the
    recording's units, or as the model outputs them (normalised) with `denormalise=False`.

    forward(units (n,) int64 rows of the model's unit vocabulary, times (n,) float64 s from the chunk's start,
            state (1, dim) float32, session (1,) int64) -> behavior (1, D) float32 in the recording's units,
            state_out (1, dim) float32.
    Inference only: built from the model's weights when made (made again after the model changes).
    """

    def __init__(self, model: RecurrentPOYO, target: str, denormalise: bool = True):
        super().__init__()
        c, enc = model.config, model.encoder
        heads, d, n_lat = c.cross_heads, c.head_dim, c.num_latents_per_step
        inner = heads * d
        self.norm_chunk, self.processor = model.norm_chunk, model.processor  # the chunk's self-attention: the model's
        self.state_readout, self.norm_out = model.state_readout, model.norm_out
        self.head, self.encoder = model.readouts[target], enc  # the encoder: its feed-forward (`finish`)
        self.inner = inner
        with torch.no_grad():
            # each head's features reordered (first of every pair, then second): cos and sin of a pair then repeat
            # along one axis, (n, 1, d/2) -> (n, slots, d/2), which onnxruntime multiplies fast (its slow paths:
            # a column gather, a broadcast over two axes). Scores, and the output projection's columns, follow.
            within = torch.cat([torch.arange(0, d, 2), torch.arange(1, d, 2)])  # (d,)
            order = (torch.arange(2 * heads)[:, None] * d + within).flatten()  # (2 * inner,) keys', then values'
            self.n_slots = 4 * heads  # kv's slots of d/2 features: (key or value, head, first or second of a pair)
            units = model.unit_emb.weight
            kv = model.pair_kv(units, torch.full((len(units),), int(TokenType.SPIKE), dtype=torch.long))
            self.register_buffer("unit_kv", kv[:, order].contiguous(), persistent=False)  # (U, 2 * inner)
            self.register_buffer("unit_swapped", pair_swap(kv)[:, order].contiguous(), persistent=False)
            self.register_buffer("turns", model.rotary.omega / (2 * math.pi), persistent=False)  # (d/2,) float64
            centre = torch.full((1, n_lat), c.latent_step / 2, dtype=torch.float64)
            rot = model.rotary(centre)  # (1, L, 1, d/2): the latents sit at the chunk's centre
            latents = model.latent_emb.weight[None]  # (1, L, dim)
            self.register_buffer("latents", latents[0].clone(), persistent=False)  # (L, dim)
            q = rotate(enc.query(latents), rot)[0] * d**-0.5  # (L, H, d), scaled as attention scales scores
            q = q[:, :, within].transpose(0, 1).contiguous()  # (H, L, d), features reordered as the keys'
            self.register_buffer("queries", q, persistent=False)
            self.heads, self.head_dim = heads, d
            k_tok, v_tok = model.chunk_token_kv(first_time(rot), 1)  # (1, 1, H, d) each
            token = torch.cat([k_tok.reshape(1, -1), v_tok.reshape(1, -1)], 1)[:, order]  # (1, 2 * inner)
            self.register_buffer("token_kv", token, persistent=False)
            back = linear_map(lambda x: rotate(x.view(inner, 1, heads, d), rot[:, :1], inverse=True), inner)
            out = enc.attn.to_out
            folded = (out.weight @ back.reshape(inner, inner).T)[:, order[:inner]]  # (dim, inner), reordered inputs
            self.register_buffer("out_weight", folded.contiguous(), persistent=False)
            self.register_buffer("out_bias", out.bias.clone(), persistent=False)
            rec = model.recurrence
            a = torch.sigmoid(rec.decay)  # (dim,)
            self.register_buffer("decay", a.clone(), persistent=False)
            self.register_buffer("in_weight", (1 - a)[:, None] * rec.proj.weight, persistent=False)
            self.register_buffer("in_bias", (1 - a) * rec.proj.bias, persistent=False)
            self.register_buffer("session_queries", model.session_emb.weight.clone(), persistent=False)
            mean, std = normalization_tables(model, target)
            if not denormalise:
                mean, std = torch.zeros_like(mean), torch.ones_like(std)
            self.register_buffer("mean", mean, persistent=False)  # (n_sessions, D)
            self.register_buffer("std", std, persistent=False)

    def forward(
        self, units: torch.Tensor, times: torch.Tensor, state: torch.Tensor, session: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        # 1. spikes -> rotated keys and values (n, 2 * inner): kv * cos + swap(kv) * sin
        turns = times[:, None] * self.turns  # (n, d/2) float64: a sub-millisecond phase needs it
        angles = (turns - torch.floor(turns)).float() * (2 * math.pi)  # (n, d/2)
        n = units.shape[0]
        cos = angles.cos()[:, None].expand(n, self.n_slots, -1).flatten(1)  # (n, 2 * inner): each feature's
        sin = angles.sin()[:, None].expand(n, self.n_slots, -1).flatten(1)
        rotated = F.embedding(units, self.unit_kv) * cos + F.embedding(units, self.unit_swapped) * sin  # (n, 2 * inner)
        kv = torch.cat([self.token_kv, rotated])  # (1 + n, 2 * inner)
        k, v = kv[:, : self.inner], kv[:, self.inner :]  # (1 + n, inner) each

        # 2. the latents read them, per head
        heads = (-1, self.heads, self.head_dim)
        weights = torch.softmax(self.queries @ k.reshape(heads).permute(1, 2, 0), -1)  # (H, L, 1 + n)
        out = (weights @ v.reshape(heads).transpose(0, 1)).transpose(0, 1).reshape(self.latents.shape[0], -1)
        latents = self.encoder.finish(self.latents, F.linear(out, self.out_weight, self.out_bias))  # (L, dim)

        # 3. self-attention within the chunk, one vector, the state update
        for block in self.processor:
            latents = block(latents[None], None)[0]  # (L, dim)
        x = self.norm_chunk(latents).reshape(1, -1)  # (1, L * dim)
        state_out = self.decay * state + F.linear(x, self.in_weight, self.in_bias)  # (1, dim)

        # 4. the session's query reads the new state; the task's head; the recording's units
        query = F.embedding(session, self.session_queries)  # (1, dim)
        pred = self.head(self.norm_out(self.state_readout(query, state_out)))  # (1, D), normalised
        return pred * F.embedding(session, self.std) + F.embedding(session, self.mean), state_out


def frozen(step: ChunkStep) -> torch.jit.ScriptModule:
    """`step` traced and frozen by TorchScript: the same operators without Python between them (possm-1.3M, a
    chunk of 200 spikes on one thread: 1.79 ms eager, 0.97 ms frozen). Any number of spikes, 0 included."""
    device = step.latents.device
    example = (
        torch.zeros(4, dtype=torch.long, device=device),
        torch.linspace(0.0, 0.01, 4, dtype=torch.float64, device=device),
        torch.zeros(1, step.latents.shape[1], device=device),
        torch.zeros(1, dtype=torch.long, device=device),
    )
    with warnings.catch_warnings():  # the tracer's notes on Python values it records: none depends on the input
        warnings.simplefilter("ignore")
        return torch.jit.freeze(torch.jit.trace(step.eval(), example, check_trace=False))
