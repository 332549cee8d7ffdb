"""The training objective and learning-rate schedule, shared by training (Lightning) and adaptation (plain torch)."""

from __future__ import annotations

import math

import torch


def weighted_mse(
    pred: torch.Tensor, target: torch.Tensor, weights: torch.Tensor, dim_mask: torch.Tensor
) -> torch.Tensor:
    """Squared error of pred, target (B, Q, D): mean over real output dims (dim_mask), then weighted mean over
    queries (weights (B, Q))."""
    err = ((pred.float() - target) ** 2 * dim_mask).sum(-1) / dim_mask.sum(-1).clamp(min=1)
    return (err * weights).sum() / weights.sum().clamp(min=1e-8)


def warmup_cosine(step: int, warmup: int, total: int, floor: float = 0.05) -> float:
    """Learning-rate factor: linear warm-up, then cosine decay to `floor`."""
    if step < warmup:
        return (step + 1) / max(1, warmup)
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))
