"""The shareable model file: weights in safetensors, everything else as typed JSON metadata in the same file.

Loading it never unpickles: a model downloaded from a colleague or a model zoo cannot run code.
`ModelFileMeta` is the one place the file's metadata (and its format version) is defined.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..data.atomic import atomic_write
from .config import ModelConfig
from .family import new_model
from .meta import ModelFileError, ModelFileMeta
from .meta_checks import check_meta
from .poyo import POYO

FORMAT = "spiketok-model"
_META_KEY = "spiketok"  # the safetensors metadata entry (str -> str) that holds the JSON
# state-dict entries that are not tensors: where each lives in ModelFileMeta
_EXTRA_STATE = {"unit_emb._extra_state", "session_emb._extra_state", "normalizer._extra_state"}


def _is_pickle(head: bytes) -> bool:
    """torch.save writes a zip (PK..) holding a pickle, or (legacy) a bare pickle: 0x80, a protocol byte
    (2-5) and an opcode. A safetensors file starts with its header length (8 bytes, little-endian) and
    then `{`, so it is told apart by its 9th byte even when that length's low byte is 0x80."""
    if head[:4] == b"PK\x03\x04":
        return True
    return head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05") and head[8:9] != b"{"


def save_model_file(model: POYO, path: str | Path, meta: ModelFileMeta | None = None) -> Path:
    """Write `model` (weights + metadata) as one safetensors file, atomically (a crash never leaves half a file)."""
    from safetensors.torch import save_file

    meta = meta if meta is not None else ModelFileMeta.from_model(model)
    state = model.state_dict()
    unknown = [k for k, v in state.items() if not torch.is_tensor(v) and k not in _EXTRA_STATE]
    if unknown:
        raise TypeError(f"state entries {unknown} are not tensors and have no place in ModelFileMeta")
    tensors = {k: v.detach().cpu().contiguous() for k, v in state.items() if torch.is_tensor(v)}
    path = Path(path)
    with atomic_write(path) as tmp:
        save_file(
            tensors,
            tmp,
            metadata={"format": FORMAT, "format_version": str(meta.format_version), _META_KEY: meta.to_json()},
        )
    return path


def read_model_file(path: str | Path) -> tuple[dict[str, torch.Tensor], ModelFileMeta]:
    """The tensors and metadata of a model file; never unpickles (a pickle is refused unread)."""
    from safetensors import safe_open

    from .pretrained import resolve_model_path

    path = resolve_model_path(path)  # `pretrained:NAME` is a model file shipped in the package
    if not path.is_file():
        raise ModelFileError(f"{path}: no such model file")
    with open(path, "rb") as f:
        head = f.read(9)
    if _is_pickle(head):
        raise ModelFileError(
            f"{path}: a pickled (torch/Lightning) checkpoint; spiketok never unpickles model files, since "
            f"loading a pickle can run any code. If you trust where it came from, convert it once with "
            f"`spiketok convert {path} NEW.ckpt --trust` and load NEW.ckpt"
        )
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            info = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # safetensors raises its own error types for truncated or foreign bytes
        raise ModelFileError(
            f"{path}: not a readable spiketok model file (truncated or damaged? {e}); "
            "train it again or ask for a fresh copy"
        ) from None
    if info.get("format") != FORMAT or _META_KEY not in info:
        raise ModelFileError(f"{path}: a safetensors file, but not a spiketok model (no spiketok metadata)")
    meta = ModelFileMeta.from_json(info[_META_KEY], str(path))  # every field against its type: ModelFileError
    check_meta(meta, tensors, str(path))  # ... and against the weights
    return tensors, meta


def build_model(tensors: dict[str, torch.Tensor], meta: ModelFileMeta, source: str = "model file") -> POYO:
    """A POYO model (eval mode) from tensors and metadata; `model.meta` is a copy of meta's records."""
    try:
        model = new_model(
            ModelConfig.from_dict(meta.model),
            unit_ids=meta.unit_ids,
            session_ids=meta.session_ids,
            tasks={t: int(d) for t, d in meta.tasks.items()},
        )
        state: dict[str, Any] = dict(tensors)
        state["unit_emb._extra_state"] = {"ids": list(meta.unit_ids)}
        state["session_emb._extra_state"] = {"ids": list(meta.session_ids)}
        state["normalizer._extra_state"] = {"stats": meta.normalization}
        model.load_state_dict(state)
    except (RuntimeError, ValueError, TypeError, KeyError) as e:
        raise ModelFileError(f"{source}: weights and metadata do not fit together ({e}); the file is damaged") from None
    model.meta = meta.model_meta()
    return model.eval()


def load_model_file(path: str | Path) -> POYO:
    """A ready model (eval mode) from a spiketok model file."""
    tensors, meta = read_model_file(path)
    return build_model(tensors, meta, str(path))


def save_model(model: POYO, path: str | Path) -> Path:
    """Write a bare model (e.g. after adaptation) as a shareable model file that `load_model_file` reads."""
    return save_model_file(model, path, ModelFileMeta.from_model(model))
