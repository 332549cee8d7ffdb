"""Checkpoints: Lightning's resume files (pickles, inside a run folder) and the shareable model file.

The shareable model (run_dir/model.ckpt, `adapt` outputs) is the data-only file of spiketok.model.file;
`convert_checkpoint` turns a pickled checkpoint into one (it unpickles, so only for trusted files).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from ..data.atomic import atomic_write
from ..model.config import ModelConfig
from ..model.file import ModelFileError, ModelFileMeta, load_model_file, save_model, save_model_file  # noqa: F401
from ..model.poyo import POYO


def atomic_save(obj: Any, path: str | Path) -> None:
    """torch.save to a temporary file beside `path`, then rename: a crash never leaves half a file."""
    with atomic_write(path) as tmp:
        torch.save(obj, tmp)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoint IO that writes through atomic_save."""

    def save_checkpoint(self, checkpoint: dict, path, storage_options=None) -> None:
        atomic_save(checkpoint, path)


def load(path: str | Path) -> POYO:
    """A ready model (eval mode) from a spiketok model file; never unpickles (see spiketok.model.file).

    `model.hparams` holds what it was trained with; a pickled checkpoint raises ModelFileError
    saying to run `spiketok convert`.
    """
    return load_model_file(path)


def read_pickled_checkpoint(path: str | Path) -> dict:
    """A Lightning (or older spiketok) checkpoint dict. UNPICKLES: only for files you trust."""
    path = Path(path)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # truncated zip, foreign bytes, a safetensors file...
        raise ModelFileError(f"{path}: cannot read it as a torch checkpoint ({type(e).__name__}: {e}); "
                             "the file is damaged or of another kind") from None
    if not isinstance(ckpt, dict) or "model" not in (ckpt.get("hyper_parameters") or {}):
        raise ModelFileError(f"{path}: a torch file, but not a spiketok checkpoint (no model settings)")
    return ckpt


def model_from_checkpoint(ckpt: dict, source: str = "checkpoint") -> tuple[POYO, int | None]:
    """The model a checkpoint dict holds (its `hparams` set) and the training step, if recorded."""
    hp = ckpt["hyper_parameters"]
    try:
        model = POYO(ModelConfig.from_dict(hp["model"]), tasks=hp["tasks"])
        state = {k.removeprefix("model."): v for k, v in ckpt["state_dict"].items() if k.startswith("model.")}
        model.load_state_dict(state)
    except (KeyError, RuntimeError, ValueError, TypeError) as e:
        raise ModelFileError(f"{source}: its weights do not fit its settings ({e})") from None
    model.hparams = dict(hp)
    step = ckpt.get("global_step")
    return model.eval(), (int(step) if step is not None else None)


def convert_checkpoint(old: str | Path, new: str | Path) -> Path:
    """Write the pickled checkpoint `old` as a data-only model file `new`. Unpickles `old`: trusted files only."""
    model, step = model_from_checkpoint(read_pickled_checkpoint(old), str(old))
    return save_model_file(model, new, ModelFileMeta.from_model(model, step=step))
