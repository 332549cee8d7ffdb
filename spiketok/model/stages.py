"""The POYO forward pass in stages, defined once: tokens -> keys/values, latents -> encoder (cross-attention),
processor (self-attention blocks), decoder (output queries read the latents), readout.

`PoyoStages` is mixed into POYO, whose `forward` composes the stages over a padded batch, and into the export
graphs (spiketok.model.export: one window, real rotations); the streaming decoders (spiketok.stream) call them
on their model. Callers that keep values between calls pass them in: rotated queries, the keys of spikes rotated
when they were pushed (`RotatedKV`), softmax averages merged outside (`AttentionAverages`). The attention math
and the blocks live in spiketok.model.attention; this module says what runs in which order.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from .attention import CrossAttentionBlock, LatentRotations
from .rotary import Rotation, rotate


class LatentQueries(NamedTuple):
    """What the latents bring to a window, before its tokens: constant for a latent layout."""

    latents: torch.Tensor  # (B, n_latents, dim) latent embeddings
    rot: Rotation  # (B, n_latents, 1, head_dim / 2) rotations at the latents' times
    q: torch.Tensor  # (B, n_latents, cross_heads, head_dim) the encoder's queries, rotated
    proc_rot: LatentRotations | None  # the rotations laid out for the self-attention blocks (None without any)


class OutputQueries(NamedTuple):
    """The output queries of a window: constant for given sessions and query times."""

    queries: torch.Tensor  # (B, n_queries, dim) session embeddings
    rot: Rotation  # (B, n_queries, 1, head_dim / 2) rotations at the query times
    q: torch.Tensor  # (B, n_queries, cross_heads, head_dim) the decoder's queries, rotated


class TokenKV(NamedTuple):
    """The encoder's context as tokens: projected keys and values, rotated in the encoder (the offline path)."""

    kv: torch.Tensor  # (B, n_tokens, 2 * inner) keys then values, normed and projected, not rotated
    rot: Rotation  # (B, n_tokens, 1, head_dim / 2) rotations at the tokens' times
    mask: torch.Tensor | None = None  # (B, n_tokens), True = a token (None: nothing padded)


class RotatedKV(NamedTuple):
    """The encoder's context as keys and values already rotated (`CrossAttentionBlock.attn.rotate_kv`): a stream's
    spikes keyed once, when pushed (rotary attention only sees time differences)."""

    k: torch.Tensor  # (B, n_tokens, cross_heads, head_dim)
    v: torch.Tensor  # (B, n_tokens, cross_heads, head_dim)


class AttentionAverages(NamedTuple):
    """The encoder's attention already taken: softmax-weighted rotated values per latent and head, merged from
    partial sums outside (spiketok.stream.incremental)."""

    values: torch.Tensor  # (B, n_latents, cross_heads, head_dim)


EncoderContext = TokenKV | RotatedKV | AttentionAverages


class PoyoStages:
    """The stages of the POYO forward over explicit inputs, for a module holding the model's blocks under the
    model's names (POYO itself, or an export graph sharing them)."""

    token_type_emb: nn.Embedding
    latent_emb: nn.Embedding
    encoder: CrossAttentionBlock
    processor: nn.ModuleList
    decoder: CrossAttentionBlock
    norm_out: nn.LayerNorm
    readouts: nn.ModuleDict

    # 1. tokens -> keys and values

    def pair_kv(self, units: torch.Tensor, types: torch.Tensor) -> torch.Tensor:
        """The encoder's keys and values (..., 2 * inner), not rotated, of tokens with unit embeddings units
        (..., dim) and type codes types (...): a token's depend on its unit and type alone."""
        return self.encoder.kv(units + self.token_type_emb(types))

    # 2. latents -> encoder (cross-attention over the tokens)

    def latent_queries(self, latent_ids: torch.Tensor, rot: Rotation) -> LatentQueries:
        """The latents (B, n_latents, dim) of ids (B, n_latents) at rotations rot (B, n_latents, 1, d/2), the
        encoder's rotated queries and the processor's rotations: what `encode` and `process` take, kept."""
        latents = self.latent_emb(latent_ids)  # (B, n_latents, dim)
        q = rotate(self.encoder.query(latents), rot)  # (B, n_latents, cross_heads, head_dim)
        return LatentQueries(latents, rot, q, self.processor_rotations(rot))

    def encode(
        self, latents: torch.Tensor, rot: Rotation, context: EncoderContext, q: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Latents (B, n_latents, dim) at rotations rot (B, n_latents, 1, d/2) after reading the window's tokens
        (cross-attention plus feed-forward); q: their rotated encoder queries (B, n_latents, H, d), if kept."""
        enc = self.encoder
        if isinstance(context, AttentionAverages):
            return enc.finish(latents, enc.attn.finish(context.values, rot))
        q = rotate(enc.query(latents), rot) if q is None else q  # (B, n_latents, cross_heads, head_dim)
        if isinstance(context, TokenKV):
            # context.kv is rotated in place in inference: a fresh tensor per call
            return enc.finish(latents, enc.attn.attend_kv(q, context.kv, rot, context.rot, context.mask))
        return enc.attend(latents, q, context.k, context.v, rot)

    # 3. processor (self-attention among the latents)

    def processor_rotations(self, rot: Rotation) -> LatentRotations | None:
        """The latents' rotations (B, n_latents, 1, d/2) laid out once for every self-attention block."""
        return self.processor[0].rotations(rot) if len(self.processor) else None

    def process(self, latents: torch.Tensor, rot: LatentRotations | None) -> torch.Tensor:
        """Latents (B, n_latents, dim) through the self-attention blocks; rot from `processor_rotations`."""
        for block in self.processor:
            latents = block(latents, rot)  # (B, n_latents, dim)
        return latents

    # 4. decoder (output queries read the latents)

    def output_queries(self, queries: torch.Tensor, rot: Rotation) -> OutputQueries:
        """Output queries (B, n_queries, dim) at rotations rot (B, n_queries, 1, d/2), with the decoder's
        rotated queries."""
        return OutputQueries(queries, rot, rotate(self.decoder.query(queries), rot))

    def decode(self, out: OutputQueries, latents: torch.Tensor, lat_rot: Rotation) -> torch.Tensor:
        """Features (B, n_queries, dim) of the output queries after reading the latents (B, n_latents, dim) at
        rotations lat_rot (B, n_latents, 1, d/2); layer-normed for the readout."""
        dec = self.decoder
        return self.norm_out(dec.finish(out.queries, dec.attn.attend_kv(out.q, dec.kv(latents), out.rot, lat_rot)))

    # 5. readout

    def readout(self, features: torch.Tensor, tasks: torch.Tensor | None = None) -> torch.Tensor:
        """Normalised predictions (B, n_queries, max_task_dim) of features (B, n_queries, dim); each query uses its
        task's linear head (tasks (B, n_queries): indices into `readouts`; None with a single head)."""
        if len(self.readouts) == 1:  # every query uses the one head: no per-task selection (a tenth of tiny's latency)
            return next(iter(self.readouts.values()))(features).to(features.dtype)
        max_dim = max(r.out_features for r in self.readouts.values())
        pred = features.new_zeros(*features.shape[:-1], max_dim)
        for k, head in enumerate(self.readouts.values()):
            sel = tasks == k
            if sel.any():
                pred[sel, : head.out_features] = head(features[sel]).to(pred.dtype)
        return pred
