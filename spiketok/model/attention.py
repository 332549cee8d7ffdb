"""Rotary cross- and self-attention blocks built on scaled_dot_product_attention."""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from .rotary import rotate, rotate_


class RotaryAttention(nn.Module):
    """Multi-head attention of queries x (B, n, dim) over context (B, m, ctx_dim) with rotary time.

    Queries and keys are rotated by their timestamps. With `rotate_value`, values are rotated by
    the key times and the output rotated back by the query times, so the values too carry only
    relative time (as in POYO's encoder and latent layers). Rotations come from
    RotaryTimeEmbedding. No dropout on attention weights: on CPU it costs a quarter of a step.
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

    def project_kv(self, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values (..., m, H, d) of context (..., m, ctx_dim), not yet rotated."""
        k, v = self.to_kv(context).chunk(2, dim=-1)
        return k.unflatten(-1, (self.heads, self.head_dim)), v.unflatten(-1, (self.heads, self.head_dim))

    def attend(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, x_rot: torch.Tensor, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Output (B, n, dim) of rotated queries q (B, n, H, d) over rotated keys and values k, v (B, m, H, d).

        With `rotate_value` the output is rotated back by the query rotations x_rot (B, n, 1, d/2).
        mask: (B, 1, 1, m), True = attend, or None.
        """
        out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=mask)
        return self.finish(out.transpose(1, 2), x_rot)

    def finish(self, out: torch.Tensor, x_rot: torch.Tensor) -> torch.Tensor:
        """Output (B, n, dim) of the per-head attention averages out (B, n, H, d) (softmax-weighted rotated
        values): rotated back by the query rotations x_rot with `rotate_value`, heads joined, projected."""
        if self.rotate_value:
            out = rotate(out, x_rot, inverse=True)
        b, n = out.shape[:2]
        return self.to_out(out.reshape(b, n, self.heads * self.head_dim))

    def forward(
        self,
        x: torch.Tensor,
        x_rot: torch.Tensor,
        context: torch.Tensor,
        ctx_rot: torch.Tensor,
        ctx_mask: torch.Tensor | None = None,
        ctx_index: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """With `ctx_index` (B, m), `context` is a table (K, ctx_dim) of distinct context features and
        context token j of window b is row ctx_index[b, j]: keys and values are projected once per row."""
        kv = self.to_kv(context)
        if ctx_index is not None:
            kv = F.embedding(ctx_index, kv)  # (B, m, 2 * inner): a row gather, 3x faster than kv[ctx_index]
        return self.attend_kv(rotate(self.project_q(x), x_rot), kv, x_rot, ctx_rot, ctx_mask)

    def attend_kv(
        self,
        q: torch.Tensor,
        kv: torch.Tensor,
        x_rot: torch.Tensor,
        ctx_rot: torch.Tensor,
        ctx_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Output (B, n, dim) of rotated queries q (B, n, H, d) over the context's projected keys and values
        kv (B, m, 2 * inner), not yet rotated (rotated here by ctx_rot (B, m, 1, d/2)); mask (B, m), True = attend."""
        b, m = kv.shape[:2]
        if self.rotate_value:  # keys and values rotated by the same angles: one multiply for both
            kv = kv.view(b, m, 2 * self.heads, self.head_dim)
            if not torch.is_grad_enabled():  # in place on the fresh projection: on a window's tokens one
                kv = rotate_(kv, ctx_rot)  # buffer less stops ~500 page faults per call (a tenth of it)
            else:
                kv = rotate(kv, ctx_rot)
            k, v = kv.split(self.heads, dim=2)
        else:
            k, v = (self._heads(t) for t in kv.chunk(2, dim=-1))
            k = rotate(k, ctx_rot)
        # (B, 1, 1, m), True = attend; none when nothing is padded (a single window): a faster kernel path
        mask = None if ctx_mask is None or bool(ctx_mask.all()) else ctx_mask[:, None, None, :]
        return self.attend(q, k, v, x_rot, mask)


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

    def forward(self, x, x_rot, context, ctx_rot, ctx_mask=None, ctx_index=None) -> torch.Tensor:
        """`ctx_index`: context is a table of distinct rows, normalised once (see RotaryAttention)."""
        x = x + self.attn(self.norm_q(x), x_rot, self.norm_ctx(context), ctx_rot, ctx_mask, ctx_index)
        return x + self.ff(self.norm_ff(x))

    # The same block in parts, for callers that keep queries, keys or values between calls (POYO in inference,
    # spiketok.stream): forward(x, x_rot, context, ctx_rot) == attend(x, rotate(query(x), x_rot), rotated
    # context_kv(context), x_rot) == attend_kv(x, rotate(query(x), x_rot), kv(context), x_rot, ctx_rot).

    def query(self, x: torch.Tensor) -> torch.Tensor:
        """Queries (B, n, H, d) of x (B, n, dim): normed and projected, not yet rotated."""
        return self.attn.project_q(self.norm_q(x))

    def context_kv(self, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values (..., m, H, d) of context (..., m, dim): normed and projected, not yet rotated."""
        return self.attn.project_kv(self.norm_ctx(context))

    def kv(self, context: torch.Tensor) -> torch.Tensor:
        """Keys and values side by side (..., m, 2 * inner) of context (..., m, dim): normed, projected, not rotated."""
        return self.attn.to_kv(self.norm_ctx(context))

    def attend_kv(
        self,
        x: torch.Tensor,
        q: torch.Tensor,
        kv: torch.Tensor,
        x_rot: torch.Tensor,
        ctx_rot: torch.Tensor,
        ctx_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """x (B, n, dim) plus attention of its rotated queries q over kv (B, m, 2 * inner) from `kv`, then the
        feed-forward. kv is rotated in place in inference: pass a fresh tensor."""
        return self.finish(x, self.attn.attend_kv(q, kv, x_rot, ctx_rot, ctx_mask))

    def attend(
        self, x: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, x_rot: torch.Tensor
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

    qkv: torch.Tensor  # (B, n, 3H, d/2): queries, keys and values rotated in one multiply
    inverse: torch.Tensor  # (B, n, H, d/2): the conjugate, to rotate the attention output back


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

    def rotations(self, rot: torch.Tensor) -> LatentRotations:
        """rot (B, n, 1, d/2) -> the same rotations laid out for this layer's heads."""
        b, n, _, half = rot.shape
        return LatentRotations(
            rot.expand(b, n, 3 * self.heads, half).contiguous(),
            rot.conj().expand(b, n, self.heads, half).resolve_conj().contiguous(),
        )

    def forward(self, x: torch.Tensor, rot: LatentRotations) -> torch.Tensor:
        b, n, _ = x.shape
        qkv = self.to_qkv(x).view(b, n, 3 * self.heads, self.head_dim)  # (B, n, 3H, d)
        qkv = rotate_(qkv, rot.qkv) if not torch.is_grad_enabled() else rotate(qkv, rot.qkv)  # in place: a fresh buffer
        q, k, v = (t.transpose(1, 2) for t in qkv.split(self.heads, dim=2))  # (B, H, n, d)
        out = F.scaled_dot_product_attention(q, k, v).transpose(1, 2)  # (B, n, H, d)
        out = rotate(out, rot.inverse)  # the values' rotation undone at the query's time
        return self.to_out(out.reshape(b, n, self.heads * self.head_dim))


class SelfAttentionBlock(nn.Module):
    """Pre-norm rotary self-attention plus feed-forward, with residuals."""

    def __init__(self, dim: int, heads: int, head_dim: int, ffn_mult: int, dropout: float):
        super().__init__()
        self.norm_attn, self.norm_ff = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = RotarySelfAttention(dim, heads, head_dim)
        self.ff = FeedForward(dim, ffn_mult, dropout)

    def rotations(self, rot: torch.Tensor) -> LatentRotations:
        """rot (B, n, 1, d/2) laid out for this block's heads; pass the result to every block of the same heads."""
        return self.attn.rotations(rot)

    def forward(self, x: torch.Tensor, rot: torch.Tensor | LatentRotations) -> torch.Tensor:
        """x (B, n, dim); rot: the latents' rotations (B, n, 1, d/2), or `rotations(rot)` built once for all blocks."""
        if not isinstance(rot, LatentRotations):
            rot = self.rotations(rot)
        x = x + self.attn(self.norm_attn(x), rot)
        return x + self.ff(self.norm_ff(x))
