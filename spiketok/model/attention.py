"""Rotary cross- and self-attention blocks built on scaled_dot_product_attention: the model's attention math, once.

Every path runs these blocks (spiketok.model.stages composes them): POYO.forward, the export graphs (with real
rotations, spiketok.model.rotary.RealRotation) and the streaming decoders, which call the blocks in parts with the
values they keep (rotated queries, rotated keys, or softmax partials merged by `merge_partials`).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from .rotary import Rotation, for_heads, rotate, rotate_


class RotaryAttention(nn.Module):
    """Multi-head attention of queries x (B, n, dim) over context (B, m, ctx_dim) with rotary time.

    Queries and keys are rotated by their timestamps. With `rotate_value`, values are rotated by
    the key times and the output rotated back by the query times, so the values too carry only
    relative time (as in POYO's encoder and latent layers). Rotations come from
    RotaryTimeEmbedding. No dropout on attention weights: on CPU it costs a quarter of a step.
    Called in parts (project_q, rotate_kv, attend, finish) by CrossAttentionBlock, which has the forward.
    """

    def __init__(self, dim: int, ctx_dim: int, heads: int, head_dim: int, rotate_value: bool):
        super().__init__()
        inner = heads * head_dim
        self.heads, self.head_dim, self.rotate_value = heads, head_dim, rotate_value
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_kv = nn.Linear(ctx_dim, 2 * inner, bias=False)
        self.to_out = nn.Linear(inner, dim)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        return x.view(b, n, self.heads, self.head_dim)  # (B, n, H, d)

    def project_q(self, x: torch.Tensor) -> torch.Tensor:
        """Queries (B, n, H, d) of x (B, n, dim), not yet rotated."""
        return self._heads(self.to_q(x))

    def attend(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, x_rot: Rotation, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Output (B, n, dim) of rotated queries q (B, n, H, d) over rotated keys and values k, v (B, m, H, d).

        With `rotate_value` the output is rotated back by the query rotations x_rot (B, n, 1, d/2).
        mask: (B, 1, 1, m), True = attend, or None.
        """
        out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=mask)
        return self.finish(out.transpose(1, 2), x_rot)

    def finish(self, out: torch.Tensor, x_rot: Rotation) -> torch.Tensor:
        """Output (B, n, dim) of the per-head attention averages out (B, n, H, d) (softmax-weighted rotated
        values): rotated back by the query rotations x_rot with `rotate_value`, heads joined, projected."""
        if self.rotate_value:
            out = rotate(out, x_rot, inverse=True)
        b, n = out.shape[:2]
        return self.to_out(out.reshape(b, n, self.heads * self.head_dim))

    def rotate_kv(self, kv: torch.Tensor, ctx_rot: Rotation) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values (B, m, H, d) of the context's projected kv (B, m, 2 * inner), rotated by its rotations
        ctx_rot (B, m, 1, d/2) (values too with `rotate_value`). In inference kv is rotated in place: pass a fresh
        tensor (on a window's tokens one buffer less stops ~500 page faults per call, a tenth of it)."""
        b, m = kv.shape[:2]
        if self.rotate_value:  # keys and values rotated by the same angles: one multiply for both
            kv = kv.view(b, m, 2 * self.heads, self.head_dim)
            kv = rotate(kv, ctx_rot) if torch.is_grad_enabled() else rotate_(kv, ctx_rot)
            k, v = kv.split(self.heads, dim=2)
            return k, v
        k, v = (self._heads(t) for t in kv.chunk(2, dim=-1))
        return rotate(k, ctx_rot), v

    def attend_kv(
        self,
        q: torch.Tensor,
        kv: torch.Tensor,
        x_rot: Rotation,
        ctx_rot: Rotation,
        ctx_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Output (B, n, dim) of rotated queries q (B, n, H, d) over the context's projected keys and values
        kv (B, m, 2 * inner), not yet rotated (see `rotate_kv`); ctx_mask (B, m), True = attend."""
        k, v = self.rotate_kv(kv, ctx_rot)
        # (B, 1, 1, m), True = attend; none when nothing is padded (a single window): a faster kernel path
        mask = None if ctx_mask is None or bool(ctx_mask.all()) else ctx_mask[:, None, None, :]
        return self.attend(q, k, v, x_rot, mask)


Partial = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # m (..., H, N), l (..., H, N), o (..., H, N, d)


def softmax_partial(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> Partial:
    """Softmax partial sums of queries q (H, N, d) over keys and values k, v (H, n, d), n >= 1: the max score
    m (H, N), l = sum exp(score - m) (H, N) and o = sum exp(score - m) v (H, N, d); score = q . k / sqrt(d), as
    F.scaled_dot_product_attention scores. Partials over disjoint keys merge into the attention (`merge_partials`)."""
    s = torch.matmul(q, k.transpose(1, 2)) * q.shape[-1] ** -0.5  # (H, N, n)
    m = s.amax(-1)
    e = torch.exp(s - m.unsqueeze(-1))
    return m, e.sum(-1), torch.matmul(e, v)


def merge_partials(parts: list[Partial]) -> torch.Tensor:
    """The attention average (H, N, d) over all keys of stacked partials m, l (P, H, N), o (P, H, N, d), each
    entry of the list holding one or more (P) of them: merged as flash attention merges blocks."""
    m, l, o = (torch.cat(x) if len(parts) > 1 else x[0] for x in zip(*parts))  # noqa: E741 (l: the running sum)
    w = torch.exp(m - m.amax(0))  # (P, H, N)
    return (o * w.unsqueeze(-1)).sum(0) / (l * w).sum(0).unsqueeze(-1)


class FeedForward(nn.Module):
    """GEGLU feed-forward block: (B, n, dim) -> (B, n, dim)."""

    def __init__(self, dim: int, mult: int = 4, dropout: float = 0.0):
        super().__init__()
        self.proj_in = nn.Linear(dim, 2 * mult * dim)
        self.proj_out = nn.Linear(mult * dim, dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, gate = self.proj_in(x).chunk(2, dim=-1)
        return self.proj_out(self.dropout(a * F.gelu(gate)))


class CrossAttentionBlock(nn.Module):
    """Pre-norm rotary cross-attention plus feed-forward, with residuals."""

    def __init__(self, dim: int, heads: int, head_dim: int, rotate_value: bool, ffn_mult: int, dropout: float):
        super().__init__()
        self.norm_q, self.norm_ctx, self.norm_ff = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = RotaryAttention(dim, dim, heads, head_dim, rotate_value)
        self.ff = FeedForward(dim, ffn_mult, dropout)

    def forward(
        self,
        x: torch.Tensor,
        x_rot: Rotation,
        context: torch.Tensor,
        ctx_rot: Rotation,
        ctx_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """x (B, n, dim) at rotations x_rot after reading context (B, m, dim) at ctx_rot; ctx_mask (B, m)."""
        q = rotate(self.query(x), x_rot)  # (B, n, H, d)
        return self.finish(x, self.attn.attend_kv(q, self.kv(context), x_rot, ctx_rot, ctx_mask))

    # The same block in parts, for callers that keep queries, keys or values between calls (spiketok.model.stages):
    # forward(x, x_rot, context, ctx_rot)
    # == finish(x, attn.attend_kv(rotate(query(x), x_rot), kv(context), x_rot, ctx_rot))
    # == attend(x, rotate(query(x), x_rot), *attn.rotate_kv(kv(context), ctx_rot), x_rot).

    def query(self, x: torch.Tensor) -> torch.Tensor:
        """Queries (B, n, H, d) of x (B, n, dim): normed and projected, not yet rotated."""
        return self.attn.project_q(self.norm_q(x))

    def kv(self, context: torch.Tensor) -> torch.Tensor:
        """Keys and values side by side (..., m, 2 * inner) of context (..., m, dim): normed, projected, not rotated."""
        return self.attn.to_kv(self.norm_ctx(context))

    def attend(
        self, x: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, x_rot: Rotation
    ) -> torch.Tensor:
        """x (B, n, dim) plus attention of its rotated queries q over rotated k, v (B, m, H, d), then the
        feed-forward."""
        return self.finish(x, self.attn.attend(q, k, v, x_rot))

    def finish(self, x: torch.Tensor, attended: torch.Tensor) -> torch.Tensor:
        """x (B, n, dim) plus its attention output `attended` (B, n, dim), then the feed-forward (with residuals);
        `attended` = attn.finish(per-head averages, x_rot) for callers that merge softmax partials themselves."""
        x = x + attended
        return x + self.ff(self.norm_ff(x))


class LatentRotations(NamedTuple):
    """The latents' rotations laid out for the self-attention heads: built once per forward (or once per
    streaming decoder) and shared by every block. Contiguous per head: a broadcast over heads is ~2x slower."""

    qkv: Rotation  # (B, n, 3H, d/2): queries, keys and values rotated in one multiply
    inverse: Rotation  # (B, n, H, d/2): the conjugate, to rotate the attention output back


class RotarySelfAttention(nn.Module):
    """Multi-head rotary self-attention of x (B, n, dim) with rotated values; one fused q/k/v projection.

    Older model files hold the projection as `to_q` and `to_kv`; they are concatenated on load.
    """

    def __init__(self, dim: int, heads: int, head_dim: int):
        super().__init__()
        self.heads, self.head_dim = heads, head_dim
        self.to_qkv = nn.Linear(dim, 3 * heads * head_dim, bias=False)
        self.to_out = nn.Linear(heads * head_dim, dim)
        self._register_load_state_dict_pre_hook(self._fuse_split_projection)

    @staticmethod
    def _fuse_split_projection(state_dict, prefix, *args) -> None:
        q, kv = prefix + "to_q.weight", prefix + "to_kv.weight"
        if q in state_dict and kv in state_dict:
            state_dict[prefix + "to_qkv.weight"] = torch.cat([state_dict.pop(q), state_dict.pop(kv)])

    def rotations(self, rot: Rotation) -> LatentRotations:
        """rot (B, n, 1, d/2) -> the same rotations laid out for this layer's heads."""
        return LatentRotations(for_heads(rot, 3 * self.heads), for_heads(rot, self.heads, inverse=True))

    def forward(self, x: torch.Tensor, rot: LatentRotations | None) -> torch.Tensor:
        """x (B, n, dim) at rotations rot; None: every token at one time, where rotations cancel (none applied)."""
        b, n, _ = x.shape
        qkv = self.to_qkv(x).view(b, n, 3 * self.heads, self.head_dim)  # (B, n, 3H, d)
        if rot is not None:  # in place: a fresh buffer
            qkv = rotate_(qkv, rot.qkv) if not torch.is_grad_enabled() else rotate(qkv, rot.qkv)
        q, k, v = (t.transpose(1, 2) for t in qkv.split(self.heads, dim=2))  # (B, H, n, d)
        out = F.scaled_dot_product_attention(q, k, v).transpose(1, 2)  # (B, n, H, d)
        if rot is not None:
            out = rotate(out, rot.inverse)  # (B, n, H, d): the values' rotation undone at the query's time
        return self.to_out(out.reshape(b, n, self.heads * self.head_dim))


class SelfAttentionBlock(nn.Module):
    """Pre-norm rotary self-attention plus feed-forward, with residuals."""

    def __init__(self, dim: int, heads: int, head_dim: int, ffn_mult: int, dropout: float):
        super().__init__()
        self.norm_attn, self.norm_ff = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = RotarySelfAttention(dim, heads, head_dim)
        self.ff = FeedForward(dim, ffn_mult, dropout)

    def rotations(self, rot: Rotation) -> LatentRotations:
        """rot (B, n, 1, d/2) laid out for this block's heads; pass the result to every block of the same heads."""
        return self.attn.rotations(rot)

    def forward(self, x: torch.Tensor, rot: Rotation | LatentRotations | None) -> torch.Tensor:
        """x (B, n, dim); rot: the latents' rotations (B, n, 1, d/2), or `rotations(rot)` built once for all blocks;
        None: all latents at one time (no rotation: it would cancel)."""
        if rot is not None and not isinstance(rot, LatentRotations):
            rot = self.rotations(rot)
        x = x + self.attn(self.norm_attn(x), rot)
        return x + self.ff(self.norm_ff(x))
