"""`train`: one model on all given sessions, with Lightning (CPU, GPU, DDP over GPUs and nodes)."""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint, TQDMProgressBar
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

from ..data.storage import SessionDataset
from ..model.config import model_config
from ..model.poyo import POYO
from .checkpoint import AtomicCheckpointIO
from .data import WindowDataModule, WindowDataset, register_sessions
from .module import POYOModule


@dataclass
class TrainResult:
    checkpoint: Path
    run_dir: Path
    steps: int
    seconds: float


class StopAfterMinutes(Callback):
    """Stops training after a wall-clock budget (checked every step)."""

    def __init__(self, minutes: float):
        self.seconds, self.start = minutes * 60, time.monotonic()

    def on_train_batch_end(self, trainer, *args) -> None:
        if time.monotonic() - self.start > self.seconds:
            trainer.should_stop = True


def _split_spec(data: SessionDataset) -> dict:
    return {s.id: {name: [[float(a), float(b)] for a, b in zip(iv.start, iv.end)] for name, iv in s.splits.items()}
            for s in data}


def _last_checkpoint(run_dir: Path) -> Path | None:
    last = run_dir / "checkpoints" / "last.ckpt"
    return last if last.exists() else None


def build_model(cfg: dict, data: SessionDataset, init: POYO | None = None) -> tuple[POYO, dict[str, str]]:
    """A fresh model for the config (or `init`), registered with every session of `data`."""
    model = init if init is not None else POYO(model_config(cfg["model"]))
    targets = register_sessions(model, data, cfg.get("target"))
    return model, targets


def train(
    data: SessionDataset,
    cfg: dict,
    run_dir: str | Path,
    resume: bool = False,
    devices: int | str = "auto",
    num_nodes: int = 1,
    accelerator: str = "auto",
    progress: bool = True,
) -> TrainResult:
    """Train on every session of `data`; checkpoints, CSV and TensorBoard logs go into `run_dir`."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    L.seed_everything(cfg["seed"], workers=True, verbose=False)
    ckpt_path = _last_checkpoint(run_dir) if resume else None
    if resume and ckpt_path is None:
        raise FileNotFoundError(f"--resume: no {run_dir}/checkpoints/last.ckpt to resume from")
    model, targets = build_model(cfg, data)
    module = POYOModule(model, cfg, extra={"targets": targets, "splits": _split_spec(data)})
    train_set = WindowDataset.for_model(model, data, targets, unit_dropout=bool(cfg["unit_dropout"]),
                                        min_units=int(cfg["min_units"]), causal=bool(cfg["causal"]), seed=cfg["seed"])
    val_set = WindowDataset.for_model(model, data, targets, causal=bool(cfg["causal"]))
    dm = WindowDataModule(train_set, val_set, cfg)
    gpu = accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())
    precision = cfg.get("precision", "auto")
    if precision == "auto":
        precision = "bf16-mixed" if gpu else "32-true"
    checkpoint = ModelCheckpoint(dirpath=run_dir / "checkpoints", filename="epoch{epoch:03d}-step{step}",
                                 auto_insert_metric_name=False, save_last=True, save_top_k=1, monitor="val_loss",
                                 every_n_epochs=1)
    callbacks: list[Callback] = [checkpoint]
    if cfg.get("max_minutes"):
        callbacks.append(StopAfterMinutes(float(cfg["max_minutes"])))
    if progress:
        callbacks.append(TQDMProgressBar(refresh_rate=10))
    trainer = L.Trainer(
        accelerator=accelerator, devices=devices, num_nodes=num_nodes, precision=precision,
        max_steps=cfg["max_steps"], gradient_clip_val=cfg["grad_clip"], callbacks=callbacks,
        logger=[CSVLogger(run_dir, name="logs", version=""), TensorBoardLogger(run_dir, name="tb", version="")],
        plugins=[AtomicCheckpointIO()], use_distributed_sampler=False, enable_progress_bar=progress,
        enable_model_summary=False, log_every_n_steps=10, check_val_every_n_epoch=1, num_sanity_val_steps=0,
        deterministic=False, default_root_dir=run_dir,
    )
    t0 = time.monotonic()
    trainer.fit(module, datamodule=dm, ckpt_path=ckpt_path)
    # the best checkpoint by validation loss is the product; keep "last" for resuming
    best = Path(checkpoint.best_model_path) if checkpoint.best_model_path else run_dir / "checkpoints" / "last.ckpt"
    final = run_dir / "model.ckpt"
    if trainer.is_global_zero:
        shutil.copyfile(best, str(final) + ".tmp")
        Path(str(final) + ".tmp").replace(final)
    return TrainResult(final, run_dir, int(trainer.global_step), time.monotonic() - t0)
