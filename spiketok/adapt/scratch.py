"""The scratch arm of adaptation: a fresh model of a pretrained model's size, trained on the adaptation data alone.

It trains through `train`, as `spiketok train` would; `adapt(mode="scratch")` and the few-shot study call it.
"""

from __future__ import annotations

import tempfile
from dataclasses import replace
from pathlib import Path

from ..data.storage import StoredSession
from ..model.file import load_model_file
from ..model.meta import StageResult
from ..model.poyo import POYO
from ..schema import AdaptConfig, ModelSettings
from ..train.config import load_config
from ..train.run import train
from .data import single_session_dataset


def train_scratch(
    model: POYO, view: StoredSession, target: str, cfg: AdaptConfig, seed: int, progress: bool
) -> tuple[POYO, StageResult]:
    """A fresh model of `model`'s size trained on the adaptation data as `spiketok train` would: the
    recipe's batch size and steps, early stopping on the held-out part (none held out: the last step).

    This is the fair comparison for unit identification: scratch gets enough steps to converge.
    """
    base = model.meta.train or load_config("tiny")
    train_cfg = replace(
        base,
        model=ModelSettings.of(model.config),
        target=target,
        seed=seed,
        max_minutes=None,
        init=None,
        batch_size="auto",
        max_steps=cfg.scratch_max_steps or "auto",
        warmup_steps="auto",
        patience="auto",
        lr=base.lr if cfg.lr_scratch is None else cfg.lr_scratch,
        weight_decay=base.weight_decay if cfg.weight_decay is None else cfg.weight_decay,
        unit_dropout=base.unit_dropout if cfg.unit_dropout is None else cfg.unit_dropout,
    )
    with tempfile.TemporaryDirectory(prefix="spiketok-scratch-") as tmp:
        result = train(
            single_session_dataset(view),
            train_cfg,
            Path(tmp) / "run",
            progress=progress,
            accelerator="cpu" if next(model.parameters()).device.type == "cpu" else "auto",
        )
        new = load_model_file(result.checkpoint)
    stage = StageResult(
        "scratch", result.steps, result.steps, None, result.steps < int(new.meta.train.max_steps), result.seconds
    )
    return new, stage
