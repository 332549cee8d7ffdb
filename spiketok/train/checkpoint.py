"""Checkpoints: Lightning's resume files (inside a run folder) and the shareable model file.

The shareable model (run_dir/model.ckpt, `adapt` outputs) is the data-only file of spiketok.model.file.
Resume files are torch zips, read with `torch.load(weights_only=True)`: tensors and plain data only, so a
crafted `last.ckpt` in a run folder someone shared cannot run code. `convert_checkpoint(..., trusted=True)`
turns an older pickled checkpoint into a model file and may unpickle (only for files the user trusts).
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from ..data.atomic import atomic_write
from ..model.config import ModelConfig
from ..model.family import new_model
from ..model.file import ModelFileError, ModelFileMeta, load_model_file, save_model, save_model_file  # noqa: F401
from ..model.meta import ModelMeta
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

    `model.meta` holds what it was trained with; a pickled checkpoint raises ModelFileError
    saying to run `spiketok convert`.
    """
    return load_model_file(path)


def _unsafe_globals(path: Path) -> str:
    try:
        names = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception:  # noqa: BLE001 - only to name them in the message
        return ""
    return f" ({', '.join(names[:5])}{', ...' if len(names) > 5 else ''})" if names else ""


def read_pickled_checkpoint(path: str | Path, trusted: bool = False) -> dict:
    """A Lightning (or older spiketok) checkpoint dict.

    Read with weights_only=True (tensors and plain data; spiketok's own resume files hold nothing else), so
    it never runs code from the file. trusted=True (`spiketok convert --trust`) falls back to a full unpickle
    for a file that holds other objects: only for files the user trusts.
    """
    path = Path(path)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if not trusted:
            found = _unsafe_globals(path)
            what = (
                f"holds objects other than tensors and plain data{found}; spiketok's own checkpoints never do, "
                "so it was not written by spiketok or was altered"
                if found
                else f"not a checkpoint of tensors and plain data ({' '.join(str(e).split())[:120]}); the file is "
                "damaged, of another kind, or holds other objects"
            )
            raise ModelFileError(
                f"{path}: {what}. It was not loaded, since unpickling it could run code; if you "
                "trust it, `spiketok convert --trust` it"
            ) from None
        try:
            ckpt = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as e2:  # noqa: BLE001 - a damaged file of any kind
            raise ModelFileError(
                f"{path}: cannot read it as a torch checkpoint ({type(e2).__name__}: {e2}); "
                "the file is damaged or of another kind"
            ) from None
    except Exception as e:  # truncated zip, foreign bytes, a safetensors file...
        raise ModelFileError(
            f"{path}: cannot read it as a torch checkpoint ({type(e).__name__}: {e}); "
            "the file is damaged or of another kind"
        ) from None
    if not isinstance(ckpt, dict) or "model" not in (ckpt.get("hyper_parameters") or {}):
        raise ModelFileError(f"{path}: a torch file, but not a spiketok checkpoint (no model settings)")
    return ckpt


def model_from_checkpoint(ckpt: dict, source: str = "checkpoint") -> tuple[POYO, int | None]:
    """The model a checkpoint dict holds (`model.meta` read from its hyper-parameters) and the training step."""
    hp = ckpt["hyper_parameters"]
    try:
        model = new_model(ModelConfig.from_dict(hp["model"]), tasks=hp["tasks"])
        state = {k.removeprefix("model."): v for k, v in ckpt["state_dict"].items() if k.startswith("model.")}
        model.load_state_dict(state)
    except (KeyError, RuntimeError, ValueError, TypeError) as e:
        raise ModelFileError(f"{source}: its weights do not fit its settings ({e})") from None
    try:
        model.meta = ModelMeta.from_hparams(hp)
    except (KeyError, TypeError, ValueError) as e:
        raise ModelFileError(f"{source}: its training records do not read ({type(e).__name__}: {e})") from None
    step = ckpt.get("global_step")
    return model.eval(), (int(step) if step is not None else None)


def convert_checkpoint(old: str | Path, new: str | Path, trusted: bool = False) -> Path:
    """Write the checkpoint `old` as a data-only model file `new`. trusted=True may unpickle `old` (see
    read_pickled_checkpoint): only for files the user trusts."""
    model, step = model_from_checkpoint(read_pickled_checkpoint(old, trusted), str(old))
    return save_model_file(model, new, ModelFileMeta.from_model(model, step=step))
