"""The Lightning module: weighted MSE on normalised targets, AdamW with warm-up and cosine decay (one stage)."""

from __future__ import annotations

import lightning as L
import torch

from ..model.normalize import normalised_targets
from ..model.objective import warmup_cosine, weighted_mse
from ..model.poyo import POYO
from ..schema import TrainConfig
from ..tokenize import Batch
from .stage import Stage, param_groups


class POYOModule(L.LightningModule):
    """Trains a POYO model through one `stage`; a `train` run's `hparams` (plain data, in every checkpoint) hold
    everything needed to rebuild it (see checkpoint.model_from_checkpoint)."""

    def __init__(
        self, model: POYO, stage: Stage, train_config: TrainConfig | None = None, extra: dict | None = None
    ) -> None:
        super().__init__()
        self.model, self.stage = model, stage
        if train_config is not None:
            self.save_hyperparameters(
                {
                    "model": model.config.to_dict(),
                    "tasks": {t: model.readouts[t].out_features for t in model.task_names},
                    "train": train_config.to_dict(),
                    **(extra or {}),
                }
            )
        self._val_sums: torch.Tensor | None = None  # (4, n_sessions, D) sums of the running validation epoch
        self._val_loss: torch.Tensor | None = None  # (2,): sum of loss x sample weight, sum of sample weight

    def _loss(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        pred = self.model(batch)
        target, dim_mask = normalised_targets(self.model, batch)
        return weighted_mse(pred, target, batch.output_weights, dim_mask), pred, target

    def on_train_start(self) -> None:
        self.model.train()  # a loaded model is in eval mode; Lightning keeps the mode it finds

    def training_step(self, batch: Batch, batch_idx: int):
        loss, _, _ = self._loss(batch)
        if not loss.requires_grad:  # no output query in any window of the batch: a step that changes nothing
            loss = loss + 0.0 * sum(p.sum() for p in self.model.parameters() if p.requires_grad)
        self.log("train_loss", loss, prog_bar=True, batch_size=len(batch))
        return loss

    def validation_step(self, batch: Batch, batch_idx: int):
        loss, pred, target = self._loss(batch)
        w = batch.output_weights
        weighted = torch.stack([loss.detach().float() * w.sum(), w.sum().float()])
        self._val_loss = weighted if self._val_loss is None else self._val_loss + weighted
        # per session and output dim: n, sum y, sum y^2, sum err^2 over samples with weight > 0 (for val_r2)
        scored = (w > 0) & batch.output_mask
        sessions = batch.output_sessions[scored]
        y, err = target[scored], (pred.float() - target)[scored]
        dim_mask = normalised_targets(self.model, batch)[1][scored].float()
        stats = torch.stack([dim_mask, y * dim_mask, y**2 * dim_mask, err**2 * dim_mask])  # (4, n, D)
        if self._val_sums is None:
            self._val_sums = stats.new_zeros(4, len(self.model.session_emb), stats.shape[-1])
        self._val_sums.index_add_(1, sessions, stats)

    def on_validation_epoch_start(self) -> None:
        self._val_sums, self._val_loss = None, None

    def on_validation_epoch_end(self) -> None:
        """val_loss: the loss of all validation windows, each weighted by its samples' weights; val_r2: R² of the
        validation windows (normalised targets), per session and dim, then averaged."""
        if self._val_loss is not None:
            total, weight = self.trainer.strategy.reduce(self._val_loss, reduce_op="sum")
            self.log("val_loss", total / weight.clamp(min=1e-8), prog_bar=True)
        if self._val_sums is None:  # no validation window held a scored sample
            self.log("val_r2", float("nan"))
            return
        n, sy, syy, sse = self.trainer.strategy.reduce(self._val_sums, reduce_op="sum")
        sst = syy - sy**2 / n.clamp(min=1)
        ok = (n > 1) & (sst > 1e-8)
        # every rank holds the same reduced sums, so each logs the same value (early stopping reads it on all);
        # NaN when nothing in the valid split is scored (the checkpoint callback takes NaN as the worst score)
        r2 = (1 - sse[ok] / sst[ok]).mean() if ok.any() else sse.new_tensor(float("nan"))
        self.log("val_r2", r2, prog_bar=True)

    def configure_optimizers(self):
        opt = torch.optim.AdamW(param_groups(self.model, self.stage), lr=self.stage.lr, betas=(0.9, 0.98))
        total, warmup = self.stage.max_steps, self.stage.warmup_steps
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: warmup_cosine(s, warmup, total))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
