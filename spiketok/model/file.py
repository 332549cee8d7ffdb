"""The shareable model file: weights in safetensors, everything else as typed JSON metadata in the same file.

Loading it never unpickles: a model downloaded from a colleague or a model zoo cannot run code.
`ModelFileMeta` is the one place the file's metadata (and its format version) is defined.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch

from ..data.atomic import atomic_write
from .config import ModelConfig
from .poyo import POYO

FORMAT = "spiketok-model"
FORMAT_VERSION = 1  # bump when the metadata changes in a way older readers cannot follow
_META_KEY = "spiketok"  # the safetensors metadata entry (str -> str) that holds the JSON
# state-dict entries that are not tensors: where each lives in ModelFileMeta
_EXTRA_STATE = {"unit_emb._extra_state", "session_emb._extra_state", "normalizer._extra_state"}


class ModelFileError(ValueError):
    """A model file that cannot be read (corrupt, pickled, foreign or too new), with what to do."""


def _version() -> str:
    from .. import __version__

    return __version__


@dataclass
class ModelFileMeta:
    """Everything beside the weights that rebuilds and describes a trained model.

    unit_ids / session_ids: the vocabularies in row order (row k of unit_emb.weight is unit_ids[k]);
    tasks: readout name -> output size; normalization: session -> task -> {"mean", "std"} lists;
    targets: session -> task it was trained on; splits: session -> split -> [[start, end], ...];
    train: the training config; adaptations: one record per `adapt`; step: training step of the weights.
    """

    model: dict[str, Any]
    tasks: dict[str, int]
    unit_ids: list[str]
    session_ids: list[str]
    normalization: dict[str, dict[str, dict[str, list[float]]]] = field(default_factory=dict)
    targets: dict[str, str] = field(default_factory=dict)
    splits: dict[str, dict[str, list[list[float]]]] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)
    adaptations: list[dict[str, Any]] = field(default_factory=list)
    step: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # other hparams, kept as they were
    format_version: int = FORMAT_VERSION
    spiketok_version: str = field(default_factory=_version)

    HPARAM_KEYS = ("model", "tasks", "train", "targets", "splits", "adaptations")

    @classmethod
    def from_model(cls, model: POYO, hparams: dict | None = None, step: int | None = None) -> "ModelFileMeta":
        """The metadata of `model`; `hparams` (default model.hparams) supply train, targets, splits, adaptations."""
        hp = dict(hparams if hparams is not None else (getattr(model, "hparams", None) or {}))
        return cls(model=model.config.to_dict(), tasks={t: model.readouts[t].out_features for t in model.task_names},
                   unit_ids=list(model.unit_emb.ids), session_ids=list(model.session_emb.ids),
                   normalization=json.loads(json.dumps(model.normalizer.stats)),
                   targets=dict(hp.get("targets") or {}), splits=dict(hp.get("splits") or {}),
                   train=dict(hp.get("train") or {}), adaptations=list(hp.get("adaptations") or []), step=step,
                   extra={k: v for k, v in hp.items() if k not in cls.HPARAM_KEYS})

    def hparams(self) -> dict:
        """The `model.hparams` dict a loaded model carries (what it was trained and adapted with)."""
        return {"model": dict(self.model), "tasks": dict(self.tasks), "train": self.train, "targets": self.targets,
                "splits": self.splits, "adaptations": self.adaptations, **self.extra}

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str, source: str = "model file") -> "ModelFileMeta":
        """Parse and check the version: a file from a newer spiketok gets a clear message, not a KeyError."""
        try:
            d = json.loads(text)
        except json.JSONDecodeError as e:
            raise ModelFileError(f"{source}: its metadata is not valid JSON ({e}); the file is damaged") from None
        if not isinstance(d, dict) or not isinstance(d.get("format_version"), int):
            raise ModelFileError(f"{source}: its metadata has no format version; not a spiketok model file")
        if d["format_version"] > FORMAT_VERSION:
            raise ModelFileError(
                f"{source}: model file format version {d['format_version']} (written by spiketok "
                f"{d.get('spiketok_version', '?')}) is newer than this spiketok ({_version()}) reads (version "
                f"{FORMAT_VERSION}); upgrade spiketok (pip install -U spiketok)")
        known = {f.name for f in fields(cls)}
        missing = [f.name for f in fields(cls) if f.name in ("model", "tasks", "unit_ids", "session_ids") and f.name not in d]
        if missing:
            raise ModelFileError(f"{source}: its metadata lacks {missing}; not a complete spiketok model file")
        return cls(**{k: v for k, v in d.items() if k in known})


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
        save_file(tensors, tmp, metadata={"format": FORMAT, "format_version": str(meta.format_version),
                                          _META_KEY: meta.to_json()})
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
            f"`spiketok convert {path} NEW.ckpt` and load NEW.ckpt")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            info = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # safetensors raises its own error types for truncated or foreign bytes
        raise ModelFileError(f"{path}: not a readable spiketok model file (truncated or damaged? {e}); "
                             "train it again or ask for a fresh copy") from None
    if info.get("format") != FORMAT or _META_KEY not in info:
        raise ModelFileError(f"{path}: a safetensors file, but not a spiketok model (no spiketok metadata)")
    return tensors, ModelFileMeta.from_json(info[_META_KEY], str(path))


def build_model(tensors: dict[str, torch.Tensor], meta: ModelFileMeta, source: str = "model file") -> POYO:
    """A POYO model (eval mode) from tensors and metadata; `model.hparams` is meta.hparams()."""
    try:
        model = POYO(ModelConfig.from_dict(meta.model), unit_ids=meta.unit_ids, session_ids=meta.session_ids,
                     tasks={t: int(d) for t, d in meta.tasks.items()})
        state: dict[str, Any] = dict(tensors)
        state["unit_emb._extra_state"] = {"ids": list(meta.unit_ids)}
        state["session_emb._extra_state"] = {"ids": list(meta.session_ids)}
        state["normalizer._extra_state"] = {"stats": meta.normalization}
        model.load_state_dict(state)
    except (RuntimeError, ValueError, TypeError, KeyError) as e:
        raise ModelFileError(f"{source}: weights and metadata do not fit together ({e}); the file is damaged") from None
    model.hparams = meta.hparams()
    model.file_meta = meta
    return model.eval()


def load_model_file(path: str | Path) -> POYO:
    """A ready model (eval mode) from a spiketok model file."""
    tensors, meta = read_model_file(path)
    return build_model(tensors, meta, str(path))
