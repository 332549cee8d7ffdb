"""Target normalisation, in one place: compute per-session statistics, store them, apply and undo them.

The model predicts behaviour in units of each session's own mean and std (from its training split),
so sessions recorded in different units or ranges share one readout. Training normalises the targets
(`normalised_targets`); decoding maps predictions back (`denormalise`, `unnormalise`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from ..data.session import DataError
from ..data.storage import StoredSession
from ..tokenize.batch import Batch

if TYPE_CHECKING:
    from .poyo import POYO


class TargetNormalizer(nn.Module):
    """Per-session, per-task mean and std of the targets (from the training split)."""

    def __init__(self) -> None:
        super().__init__()
        self.stats: dict[str, dict[str, dict[str, list[float]]]] = {}
        self.version = 0  # bumped on every change, so cached tables know when to rebuild

    def set(self, session_id: str, task: str, mean: Sequence[float], std: Sequence[float]) -> None:
        std = [max(float(s), 1e-6) for s in std]
        self.stats.setdefault(session_id, {})[task] = {"mean": [float(m) for m in mean], "std": std}
        self.version += 1

    def has(self, session_id: str, task: str) -> bool:
        return task in self.stats.get(session_id, {})

    def get(self, session_id: str, task: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and std (D,) of one session's task."""
        try:
            s = self.stats[session_id][task]
        except KeyError:
            raise KeyError(f"no normalisation statistics for session {session_id!r}, task {task!r}") from None
        return torch.tensor(s["mean"]), torch.tensor(s["std"])

    def get_extra_state(self) -> dict:
        return {"stats": self.stats}

    def set_extra_state(self, state: dict) -> None:
        self.stats = state["stats"]
        self.version += 1


# ---------------------------------------------------------------------- compute


def _usable(session: StoredSession, target: str, split: str) -> np.ndarray:
    """Values (n, D) of the target samples inside a split with weight > 0 and finite values."""
    b = session.behavior(target)
    keep = session.splits[split].contains(b.timestamps) & (b.weights > 0) & np.isfinite(b.values).all(1)
    return b.values[keep].astype(np.float64)


def target_stats(session: StoredSession, target: str, split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """Mean and std (D,) of a target over the samples inside a split that have weight > 0."""
    v = _usable(session, target, split)
    if len(v) < 2:
        raise DataError(f"{session.path}: fewer than 2 usable {target!r} samples in the {split} split")
    return v.mean(0), v.std(0)


def prior_stats(model: POYO, task: str) -> tuple[np.ndarray, np.ndarray] | None:
    """Mean and std (D,) of `task` pooled over the model's sessions (a mixture of theirs); None if none has it."""
    known = [per[task] for per in model.normalizer.stats.values() if task in per]
    if not known:
        return None
    means = np.array([k["mean"] for k in known], dtype=np.float64)
    stds = np.array([k["std"] for k in known], dtype=np.float64)
    mean = means.mean(0)
    return mean, np.sqrt((stds**2 + (means - mean) ** 2).mean(0))


def adaptation_stats(
    model: POYO, session: StoredSession, target: str, prior_seconds: float
) -> tuple[np.ndarray, np.ndarray]:
    """Statistics (D,) for a new session from its adaptation data (`splits["train"]`), shrunk to the model's.

    A few trials give poor estimates (one reach has a large mean velocity in one direction), so the
    data's mean and variance are shrunk toward the model's pooled statistics for the same task, the
    latter counting as `prior_seconds` seconds of data: weight = s / (s + prior_seconds) for s seconds.
    """
    values = _usable(session, target, "train")
    prior = prior_stats(model, target) if prior_seconds > 0 else None
    if len(values) < 2:
        if prior is None:
            raise DataError(f"{session.path}: fewer than 2 usable {target!r} samples in the adaptation data")
        return prior
    mean, std = values.mean(0), values.std(0)
    if prior is None:
        return mean, std
    train = session.splits["train"]
    w = train.duration / (train.duration + prior_seconds)
    pooled = w * mean + (1 - w) * prior[0]
    var = w * (std**2 + (mean - pooled) ** 2) + (1 - w) * (prior[1] ** 2 + (prior[0] - pooled) ** 2)
    return pooled, np.sqrt(var)


# ---------------------------------------------------------------------- apply and undo


def normalised_targets(model: POYO, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
    """Targets (B, Q, D) normalised with each query's session/task statistics, and their dim mask (B, Q, D);
    D is the model's widest task (what its predictions have), a batch of narrower tasks padded with zeros."""
    values = batch.output_values
    mean, std, dim_mask = _stat_tables(model, values.shape[-1], values.device)
    values = torch.nn.functional.pad(values, (0, mean.shape[-1] - values.shape[-1]))
    s, k = batch.output_sessions, batch.output_tasks
    return (values - mean[s, k]) / std[s, k], dim_mask[k]


def denormalise(model: POYO, pred: torch.Tensor, sessions: torch.Tensor, tasks: torch.Tensor) -> torch.Tensor:
    """Predictions (B, Q, D) back in the behaviour's own units; sessions, tasks (B, Q) are table rows."""
    mean, std, _ = _stat_tables(model, pred.shape[-1], pred.device)
    return unnormalise(pred, mean[sessions, tasks], std[sessions, tasks])


def unnormalise(pred: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """pred * std + mean: a normalised prediction (..., D) in original units (mean, std broadcast to it)."""
    return pred * std + mean


def _stat_tables(model: POYO, d: int, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(n_sessions, n_tasks, d) mean and std tables and the (n_tasks, d) mask of real dims; cached on the model."""
    cache = getattr(model, "_stat_cache", None)
    key = (
        len(model.session_emb),
        tuple(model.task_names),
        d,
        str(device),
        model.normalizer.version,
        id(model.normalizer),
    )
    if cache is not None and cache[0] == key:
        return cache[1]
    tasks = model.task_names
    width = max([d] + [model.readouts[t].out_features for t in tasks])
    mean = torch.zeros(len(model.session_emb), len(tasks), width)
    std = torch.ones(len(model.session_emb), len(tasks), width)
    dim_mask = torch.zeros(len(tasks), width, dtype=torch.bool)
    for k, t in enumerate(tasks):
        dim_mask[k, : model.readouts[t].out_features] = True
    for sid, per_task in model.normalizer.stats.items():
        if sid not in model.session_emb.index:
            continue
        i = model.session_emb.index[sid]
        for t, st in per_task.items():
            if t in tasks:
                k = tasks.index(t)
                n = len(st["mean"])
                mean[i, k, :n] = torch.tensor(st["mean"])
                std[i, k, :n] = torch.tensor(st["std"])
    tables = (mean.to(device), std.to(device), dim_mask.to(device))
    model._stat_cache = (key, tables)
    return tables
