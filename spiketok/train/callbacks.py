"""The Lightning callbacks of a training run: time budget, save on interrupt, final checkpoint, EMA, sampler epoch,
and a stage's early stopping with its best weights kept in memory."""

from __future__ import annotations

import math
import signal
import time
from pathlib import Path

import torch
from lightning.pytorch.callbacks import Callback, WeightAveraging
from lightning.pytorch.utilities import rank_zero_info
from lightning.pytorch.utilities.exceptions import SIGTERMException


class StopAfterMinutes(Callback):
    """Stops training after a wall-clock budget (checked every step; under DDP all ranks stop together)."""

    def __init__(self, minutes: float):
        self.seconds, self.start = minutes * 60, time.monotonic()

    def on_train_batch_end(self, trainer, *args) -> None:
        over = time.monotonic() - self.start > self.seconds
        if trainer.world_size > 1:
            over = trainer.strategy.reduce_boolean_decision(over, all=False)
        if over:
            trainer.should_stop = True


class SaveOnInterrupt(Callback):
    """On SIGTERM or a first Ctrl-C: finish the current step, write `path` (last.ckpt), stop.

    Lightning turns SIGTERM into a SIGTERMException at the next step boundary (all DDP ranks
    together); a first SIGINT is routed to the same handler, a second one stops at once.
    """

    def __init__(self, path: Path):
        self.path = path
        self.saved_step: int | None = None
        self._previous_sigint = None

    def on_train_start(self, trainer, pl_module) -> None:
        import threading

        if threading.current_thread() is threading.main_thread():
            self._previous_sigint = signal.signal(signal.SIGINT, self._on_sigint)

    def _on_sigint(self, signum, frame) -> None:
        signal.signal(signal.SIGINT, self._previous_sigint or signal.default_int_handler)
        rank_zero_info("\ninterrupted: saving a checkpoint after this step (Ctrl-C again to stop at once)")
        handler = signal.getsignal(signal.SIGTERM)
        if callable(handler):
            handler(signal.SIGTERM, frame)
        else:
            raise KeyboardInterrupt

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        if isinstance(exception, SIGTERMException):
            trainer.save_checkpoint(self.path, weights_only=False)
            self.saved_step = int(trainer.global_step)

    def teardown(self, trainer, pl_module, stage: str) -> None:
        if self._previous_sigint is not None:
            signal.signal(signal.SIGINT, self._previous_sigint)
            self._previous_sigint = None


class FinalLast(Callback):
    """At the end of training, writes `path` (last.ckpt) unless a checkpoint of the final step exists.

    The per-epoch checkpoints miss the final step when max_steps or max_minutes end a run mid-epoch.
    """

    def __init__(self, path: Path):
        self.path, self.saved_steps = path, set()

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        self.saved_steps.add(int(trainer.global_step))

    def on_train_end(self, trainer, pl_module) -> None:
        if int(trainer.global_step) not in self.saved_steps:
            trainer.save_checkpoint(self.path, weights_only=False)


class EMAWeights(WeightAveraging):
    """Validation, checkpoints and the final model use an exponential moving average of the weights
    (from the end of warm-up): on small data the averaged weights vary less from one validation check
    to the next than the raw ones, so the best checkpoint is chosen on less noise. The k-th update after
    warm-up uses decay min(decay, (1 + k) / (10 + k)), so a short run's average follows its latest weights.
    During warm-up the average is a copy of the current weights, so early validation checks (and whatever
    reads them: early stopping, the best checkpoint) see the model as it trains, not its frozen start."""

    def __init__(self, decay: float, start_step: int):
        super().__init__(multi_avg_fn=self._update, use_buffers=False)
        self.decay, self.start_step = decay, start_step

    @torch.no_grad()
    def _update(self, averaged: list[torch.Tensor], current: list[torch.Tensor], n_averaged) -> None:
        k = float(n_averaged) - self.start_step  # updates run at every step: n_averaged is the step index
        weight = 1.0 if k <= 0 else 1.0 - min(self.decay, (1.0 + k) / (10.0 + k))
        torch._foreach_lerp_(averaged, current, weight)

    def should_update(self, step_idx: int | None = None, epoch_idx: int | None = None) -> bool:
        return step_idx is not None


class ValidationCurve(Callback):
    """Records val_r2 at every validation check (the same value on every rank: see POYOModule)."""

    def __init__(self) -> None:
        self.curve: list[float] = []

    def on_validation_end(self, trainer, pl_module) -> None:
        value = trainer.callback_metrics.get("val_r2")
        if value is not None and math.isfinite(float(value)):
            self.curve.append(float(value))


class SetSamplerEpoch(Callback):
    """Tells the training batch sampler the epoch (Lightning only sets it on samplers, not batch samplers)."""

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        trainer.datamodule.train_sampler.set_epoch(int(trainer.current_epoch))


class DebugRecord(Callback):
    """Writes the windows each rank draws and each rank's final weights into `folder` (for tests)."""

    def __init__(self, folder: Path):
        self.folder = folder

    def on_train_start(self, trainer, pl_module) -> None:
        trainer.datamodule.train_sampler.record_dir = self.folder

    def on_train_end(self, trainer, pl_module) -> None:
        state = {k: v.detach().cpu().clone() for k, v in pl_module.model.state_dict().items() if torch.is_tensor(v)}
        torch.save(
            {"global_step": int(trainer.global_step), "world_size": int(trainer.world_size), "state_dict": state},
            self.folder / f"final_weights_rank{trainer.global_rank}.pt",
        )


class KeepBest(Callback):
    """Early stopping on val_loss (lower by `min_delta`), the learning parameters' best weights kept in memory and
    put back at the end; a check before training (`trainer.validate`) makes the starting weights compete."""

    def __init__(self, patience: int | None, min_delta: float = 1e-4):
        self.patience, self.min_delta = patience, min_delta
        self.best, self.best_step, self.bad, self.stopped = float("inf"), 0, 0, False
        self._state: list[tuple[torch.nn.Parameter, torch.Tensor]] | None = None

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking or "val_loss" not in trainer.callback_metrics:
            return
        loss = float(trainer.callback_metrics["val_loss"])
        if loss < self.best - self.min_delta:
            self.best, self.best_step, self.bad = loss, int(trainer.global_step), 0
            self._state = [(p, p.detach().clone()) for p in pl_module.parameters() if p.requires_grad]
        elif trainer.state.fn == "fit":  # not the check before training
            self.bad += 1
            if self.patience is not None and self.bad >= self.patience:
                trainer.should_stop = self.stopped = True

    def on_train_end(self, trainer, pl_module) -> None:
        if self._state is not None:
            with torch.no_grad():
                for p, saved in self._state:
                    p.copy_(saved)

    @property
    def best_loss(self) -> float | None:
        """The best validation loss (None: no check ran)."""
        return None if self._state is None else self.best
