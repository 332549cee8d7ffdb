"""The one training loop: a POYOModule on a WindowDataModule through Lightning's Trainer.

`train` runs it with checkpoint files, logs and resume (spiketok.train.run); `fit_stage` runs the short stages
of adaptation (unit identification, fine-tuning) with no files: early stopping on the validation loss and the
best weights kept in memory (callbacks.KeepBest).
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities.warnings import PossibleUserWarning
from tqdm.auto import tqdm

from ..data.storage import SessionDataset
from ..model.meta import StageResult
from ..model.poyo import POYO
from .callbacks import KeepBest, SetSamplerEpoch
from .data import WindowDataModule
from .module import POYOModule
from .stage import Stage, learning


def lightning_trainer(stage: Stage, callbacks: list[Callback], progress: bool, **options) -> L.Trainer:
    """The Trainer every stage runs in: its steps, precision and gradient clipping, a validation check after each
    epoch of `steps_per_epoch` steps; `options` (devices, loggers, ...) add to or replace these arguments."""
    kw = dict(
        precision=stage.precision,
        max_steps=stage.max_steps,
        gradient_clip_val=stage.grad_clip,
        callbacks=callbacks,
        use_distributed_sampler=False,
        enable_progress_bar=progress,
        enable_model_summary=False,
        log_every_n_steps=max(1, min(10, stage.steps_per_epoch)),
        check_val_every_n_epoch=1,
        num_sanity_val_steps=0,
        deterministic=False,
    )
    return L.Trainer(**{**kw, **options})


@contextmanager
def quiet(levels: dict[str, int] | None = None) -> Iterator[None]:
    """Lightning's INFO lines (and its hints about loader workers) silenced while active; `levels`: other
    loggers' levels for the while."""
    levels = {"lightning.pytorch": logging.WARNING, "lightning.fabric": logging.WARNING, **(levels or {})}
    before = {n: logging.getLogger(n).level for n in levels}
    for n, level in levels.items():
        logging.getLogger(n).setLevel(level)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=PossibleUserWarning)
            yield
    finally:
        for n, level in before.items():
            logging.getLogger(n).setLevel(level)


class StageProgress(Callback):
    """One progress bar per stage: its name, steps out of max_steps, the latest and the best validation loss."""

    def __init__(self, name: str, best: KeepBest):
        self.name, self.best, self.bar = name, best, None

    def on_train_start(self, trainer, pl_module) -> None:
        self.bar = tqdm(total=trainer.max_steps, desc=self.name, leave=False)

    def on_train_batch_end(self, trainer, *args) -> None:
        if self.bar is not None:
            self.bar.update(1)

    def on_validation_end(self, trainer, pl_module) -> None:
        loss = trainer.callback_metrics.get("val_loss")
        if self.bar is not None and loss is not None:
            self.bar.set_postfix(val_loss=f"{float(loss):.3f}", best=f"{min(self.best.best, float(loss)):.3f}")

    def on_train_end(self, trainer, pl_module) -> None:
        if self.bar is not None:
            self.bar.close()


def _device_options(device: torch.device) -> dict:
    """Trainer arguments that keep training on the device the model is on."""
    if device.type == "cuda":
        return {"accelerator": "gpu", "devices": [device.index or 0]}
    return {"accelerator": device.type if device.type in ("cpu", "mps") else "auto", "devices": 1}


def fit_stage(
    model: POYO, data: SessionDataset, targets: dict[str, str], stage: Stage, progress: bool = True
) -> StageResult:
    """Train `model` in place, on its device, through `stage` on `data`'s train splits; with valid windows, early
    stopping on val_loss and the best weights put back (callbacks.KeepBest), else every step. Its record."""
    t0 = time.monotonic()
    device = next(model.parameters()).device
    dm = WindowDataModule.for_model(model, data, targets, stage, keep_valid=True)
    checks = bool(dm.val_batches)
    best = KeepBest(stage.patience)
    callbacks: list[Callback] = [SetSamplerEpoch(), best]
    if progress:
        callbacks.append(StageProgress(stage.name, best))
    module = POYOModule(model, stage)
    with quiet(), learning(model, stage):
        trainer = lightning_trainer(
            stage,
            callbacks,
            progress=False,
            logger=False,
            enable_checkpointing=False,
            limit_val_batches=1.0 if checks else 0,
            **_device_options(device),
        )
        if checks and stage.keep_start:
            trainer.validate(module, datamodule=dm, verbose=False)
        trainer.fit(module, datamodule=dm)
    model.to(device)  # Lightning hands a model trained on a GPU back on the CPU
    steps = int(trainer.global_step)
    loss = best.best_loss
    return StageResult(
        stage.name, steps, best.best_step if loss is not None else steps, loss, best.stopped, time.monotonic() - t0
    )
