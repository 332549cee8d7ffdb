"""Fine-tuning: every weight, after unit identification, at a lower learning rate."""

from __future__ import annotations

from torch import nn

from ..model.poyo import POYO


def _is_vocab(name: str) -> bool:
    return name.startswith(("unit_emb.", "session_emb."))


def _no_decay(name: str, p: nn.Parameter) -> bool:
    # the training run's rule (spiketok.train.module): no decay on biases, norms and embeddings
    return p.ndim < 2 or "emb" in name or "norm" in name


def finetune_param_groups(model: POYO, lr: float, lr_vocab: float, weight_decay: float) -> list[dict]:
    """Every weight at `lr` (decay on matrices); the vocabulary tables at `lr_vocab`, no decay.

    Use with `only_new_rows_learn`, so the other sessions' unit and session rows stay as they were.
    """
    vocab, decay, no_decay = [], [], []
    for name, p in model.named_parameters():
        (vocab if _is_vocab(name) else no_decay if _no_decay(name, p) else decay).append(p)
    return [
        {"params": vocab, "lr": lr_vocab, "weight_decay": 0.0},
        {"params": decay, "lr": lr, "weight_decay": weight_decay},
        {"params": no_decay, "lr": lr, "weight_decay": 0.0},
    ]
