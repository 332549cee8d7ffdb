"""Checkpoints: one file with weights, config, vocabularies, normalisation and splits; atomic writes."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from ..model.config import ModelConfig
from ..model.poyo import POYO


def atomic_save(obj: Any, path: str | Path) -> None:
    """torch.save to a temporary file beside `path`, then rename: a crash never leaves half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoint IO that writes through atomic_save."""

    def save_checkpoint(self, checkpoint: dict, path, storage_options=None) -> None:
        atomic_save(checkpoint, path)


def load(path: str | Path, map_location: str | torch.device = "cpu") -> POYO:
    """A ready model (eval mode) from a spiketok checkpoint; `model.hparams` holds what it was trained with."""
    ckpt = torch.load(path, map_location=map_location, weights_only=False)
    if "hyper_parameters" not in ckpt or "model" not in ckpt["hyper_parameters"]:
        raise ValueError(f"{path}: not a spiketok checkpoint")
    hp = ckpt["hyper_parameters"]
    model = POYO(ModelConfig.from_dict(hp["model"]), tasks=hp["tasks"])
    state = {k.removeprefix("model."): v for k, v in ckpt["state_dict"].items() if k.startswith("model.")}
    model.load_state_dict(state)
    model.hparams = hp
    return model.eval()


def save_model(model: POYO, path: str | Path, extra: dict | None = None) -> None:
    """Write a bare model (e.g. after adaptation) in the same layout that `load` reads."""
    hp = dict(getattr(model, "hparams", {}) or {})
    hp.update({"model": model.config.to_dict(), "tasks": {t: model.readouts[t].out_features for t in model.task_names}})
    hp.update(extra or {})
    state = {f"model.{k}": v for k, v in model.state_dict().items()}
    atomic_save({"state_dict": state, "hyper_parameters": hp}, path)
