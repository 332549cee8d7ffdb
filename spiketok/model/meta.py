"""The typed, versioned metadata of a trained model: what rebuilds it and what it was trained and adapted with.

One dataclass for the model file (spiketok.model.file) and for code that reads a model's settings
(`POYO.meta`): `model.meta.targets[session]`, not `model.hparams["targets"][session]`.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from typing import TYPE_CHECKING, Any

from ..errors import SpiketokError

if TYPE_CHECKING:
    from .poyo import POYO

FORMAT_VERSION = 1  # bump when the metadata changes in a way older readers cannot follow


class ModelFileError(SpiketokError, ValueError):
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
    def from_model(cls, model: POYO, hparams: dict | None = None, step: int | None = None) -> ModelFileMeta:
        """The metadata of `model`; `hparams` (default model.hparams) supply train, targets, splits, adaptations."""
        hp = dict(hparams if hparams is not None else (getattr(model, "hparams", None) or {}))
        return cls(
            model=model.config.to_dict(),
            tasks={t: model.readouts[t].out_features for t in model.task_names},
            unit_ids=list(model.unit_emb.ids),
            session_ids=list(model.session_emb.ids),
            normalization=json.loads(json.dumps(model.normalizer.stats)),
            targets=dict(hp.get("targets") or {}),
            splits=dict(hp.get("splits") or {}),
            train=dict(hp.get("train") or {}),
            adaptations=list(hp.get("adaptations") or []),
            step=step,
            extra={k: v for k, v in hp.items() if k not in cls.HPARAM_KEYS},
        )

    @property
    def causal(self) -> bool:
        """Trained with one output at each window's end (train config `causal`): a real-time decoder."""
        return bool(self.train.get("causal", False))

    def hparams(self) -> dict:
        """The `model.hparams` dict a loaded model carries (what it was trained and adapted with)."""
        return {
            "model": dict(self.model),
            "tasks": dict(self.tasks),
            "train": self.train,
            "targets": self.targets,
            "splits": self.splits,
            "adaptations": self.adaptations,
            **self.extra,
        }

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str, source: str = "model file") -> ModelFileMeta:
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
                f"{FORMAT_VERSION}); upgrade spiketok (pip install -U spiketok)"
            )
        known = {f.name for f in fields(cls)}
        missing = [
            f.name for f in fields(cls) if f.name in ("model", "tasks", "unit_ids", "session_ids") and f.name not in d
        ]
        if missing:
            raise ModelFileError(f"{source}: its metadata lacks {missing}; not a complete spiketok model file")
        return cls(**{k: v for k, v in d.items() if k in known})
