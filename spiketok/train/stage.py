"""A training stage as configuration: which parameters learn at which rates, for how long, validated how.

`train` is one stage over every weight (`Stage.of(cfg)`); adaptation's unit identification and fine-tuning
are stages that name the parameters that learn and the vocabulary rows that get gradients. All run through
the same Lightning module and Trainer (spiketok.train.loop).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import nn

from ..schema import TrainConfig

VOCAB_TABLES = ("unit_emb.", "session_emb.")  # the vocabulary tables: one row per unit / session


def no_decay(name: str, p: nn.Parameter) -> bool:
    """The one rule of weight decay: none on biases and norms (under 2 dims), embeddings and norm weights."""
    return p.ndim < 2 or "emb" in name or "norm" in name


def is_vocab(name: str) -> bool:
    """Whether a parameter is a vocabulary table (unit or session embeddings)."""
    return name.startswith(VOCAB_TABLES)


@dataclass(frozen=True)
class Stage:
    """One training stage: AdamW with linear warm-up and cosine decay over `max_steps`, random training windows,
    a validation check every `steps_per_epoch` steps on the valid split's sliding windows."""

    name: str
    max_steps: int
    lr: float
    weight_decay: float = 0.0  # on weight matrices (never on what `no_decay` names)
    warmup_steps: int = 10
    batch_size: int = 16
    steps_per_epoch: int = 10  # steps between validation checks
    patience: int | None = None  # checks without improvement before stopping (None: every step runs)
    grad_clip: float | None = 1.0
    eval_stride: float = 0.5  # seconds between validation windows
    causal: bool = False
    unit_dropout: bool = True
    min_units: int = 8
    seed: int = 0
    num_workers: int = 0
    precision: str = "32-true"
    vocab_lr: float | None = None  # learning rate of the vocabulary tables (None: lr)
    trainable: tuple[str, ...] | None = None  # names of the parameters that learn (None: every one)
    rows: Mapping[str, tuple[int, ...]] = field(default_factory=dict)  # tables whose other rows get no gradient
    keep_start: bool = False  # the starting weights compete for the best (validated before the first step)

    @classmethod
    def of(cls, cfg: TrainConfig, gpu: bool = False) -> Stage:
        """The stage of a `train` run: every weight, the config's schedule (its "auto" values already chosen)."""
        precision = cfg.precision if cfg.precision != "auto" else "bf16-mixed" if gpu else "32-true"
        return cls(
            name="train",
            max_steps=int(cfg.max_steps),
            lr=float(cfg.lr),
            weight_decay=float(cfg.weight_decay),
            warmup_steps=int(cfg.warmup_steps),
            batch_size=int(cfg.batch_size),
            steps_per_epoch=int(cfg.steps_per_epoch),
            patience=None if cfg.patience is None else int(cfg.patience),
            grad_clip=cfg.grad_clip,
            eval_stride=float(cfg.eval_stride),
            causal=cfg.causal,
            unit_dropout=cfg.unit_dropout,
            min_units=cfg.min_units,
            seed=cfg.seed,
            num_workers=cfg.num_workers,
            precision=precision,
        )


def param_groups(model: nn.Module, stage: Stage) -> list[dict]:
    """AdamW groups of the parameters that learn: vocabulary tables at the stage's `vocab_lr` (no decay, a group
    of their own only when it is set), weight matrices at `lr` with decay, the rest at `lr` without."""
    vocab, decay, plain = [], [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if stage.vocab_lr is not None and is_vocab(name):
            vocab.append(p)
        else:
            (plain if no_decay(name, p) else decay).append(p)
    groups = [
        {"params": vocab, "lr": stage.vocab_lr, "weight_decay": 0.0},
        {"params": decay, "lr": stage.lr, "weight_decay": stage.weight_decay},
        {"params": plain, "lr": stage.lr, "weight_decay": 0.0},
    ]
    return [g for g in groups if g["params"]]


@contextmanager
def learning(model: nn.Module, stage: Stage) -> Iterator[None]:
    """While active, only the stage's `trainable` parameters have requires_grad, and its `rows` tables get
    gradients only in those rows (so AdamW, without decay on them, leaves the other rows as they were)."""
    params = dict(model.named_parameters())
    before = {name: p.requires_grad for name, p in params.items()}
    if stage.trainable is not None:
        unknown = set(stage.trainable) - set(params)
        if unknown:
            raise ValueError(f"stage {stage.name!r}: the model has no parameter {sorted(unknown)[0]!r}")
        for name, p in params.items():
            p.requires_grad_(name in stage.trainable)
    handles = []
    for name, rows in stage.rows.items():
        table = params[name]
        mask = torch.zeros(table.shape[0], *([1] * (table.ndim - 1)), dtype=table.dtype, device=table.device)
        mask[list(rows)] = 1.0
        handles.append(table.register_hook(lambda grad, mask=mask: grad * mask.to(grad.device)))
    try:
        yield
    finally:
        for h in handles:
            h.remove()
        for name, p in params.items():
            p.requires_grad_(before[name])
