"""Transfer: train on new sessions starting from a pretrained multi-session model (`spiketok train --init`).

Each session the model does not know first gets its unit and session embeddings by unit
identification (every other weight frozen); then every weight is trained on all the given sessions by
`train` (the recipe's batch, steps and early stopping) at a lower learning rate.
"""

from __future__ import annotations

import copy
from pathlib import Path

from ..adapt.run import AdaptConfig, adapt
from ..data.storage import SessionDataset
from ..model.poyo import POYO
from .run import TrainResult, train

FINETUNE_LR_FACTOR = 0.1  # as `adapt --mode finetune`: a tenth of the pretraining learning rate


def train_from_pretrained(pretrained: POYO, data: SessionDataset, cfg: dict, run_dir: str | Path,
                          unit_id: AdaptConfig | None = None, progress: bool = True, **trainer_kw) -> TrainResult:
    """Unit identification of every new session of `data`, then full training from the result.

    The model's size and context window are the pretrained model's (any `model.*` setting in cfg is
    replaced by them); the learning rate is FINETUNE_LR_FACTOR times cfg's.
    """
    model = copy.deepcopy(pretrained)  # the caller's model is left as it was
    for session in data:
        if session.id in model.session_emb.index:
            continue
        target = cfg.get("target")
        model = adapt(model, session, mode="unit-id", target=target, config=unit_id or AdaptConfig(), progress=progress)
    cfg = copy.deepcopy(cfg)
    cfg["model"] = model.config.to_dict()
    cfg["lr"] = float(cfg["lr"]) * FINETUNE_LR_FACTOR
    model.train()
    return train(data, cfg, run_dir, init=model, progress=progress, **trainer_kw)
