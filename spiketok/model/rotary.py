"""Rotary position encoding of timestamps in seconds: only relative timing reaches attention."""

from __future__ import annotations

import math

import torch
from torch import nn


class RotaryTimeEmbedding(nn.Module):
    """Maps timestamps (..., n) to rotation angles (..., n, head_dim // 2).

    Periods are log-spaced from `t_min` (sub-millisecond) to `t_max` (window scale), so the
    encoding resolves spike timing finely and still tells apart events a window apart.
    """

    def __init__(self, head_dim: int, t_min: float = 1e-4, t_max: float = 4.0):
        super().__init__()
        if head_dim % 2:
            raise ValueError(f"head_dim must be even for rotary encoding, got {head_dim}")
        periods = torch.logspace(math.log10(t_min), math.log10(t_max), head_dim // 2, dtype=torch.float64)
        self.register_buffer("omega", 2 * math.pi / periods, persistent=False)

    def forward(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """cos and sin of the angles, each (B, 1, n, head_dim // 2), computed once per forward."""
        # Angles in float64, wrapped to [0, 2*pi), then float32: at 1e-4 s periods a float32
        # product would lose the sub-millisecond phase once timestamps reach seconds.
        angles = torch.remainder(t.double().unsqueeze(-1) * self.omega, 2 * math.pi).float().unsqueeze(1)
        return angles.cos(), angles.sin()


def rotate(x: torch.Tensor, rotation: tuple[torch.Tensor, torch.Tensor], inverse: bool = False) -> torch.Tensor:
    """Rotate feature pairs (x[..., :h], x[..., h:]) of x (B, H, n, d) by `rotation` (or its inverse)."""
    cos, sin = (r.to(x.dtype) for r in rotation)
    if inverse:
        sin = -sin
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)
