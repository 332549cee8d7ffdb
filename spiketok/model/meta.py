"""The typed, versioned metadata of a trained model: what rebuilds it and what it was trained and adapted with.

A model holds `ModelMeta` as `model.meta`, the one source of truth for its records: `model.meta.targets[session]`,
`model.meta.train.lr` (a TrainConfig), `model.meta.adaptations[-1].stages[-1].best_val_loss`. The model file
(spiketok.model.file) stores `ModelFileMeta`: that record plus what rebuilds the modules, as plain JSON.
"""

from __future__ import annotations

import copy
import json
from dataclasses import asdict, dataclass, field, fields
from typing import TYPE_CHECKING, Any

from ..errors import SpiketokError

if TYPE_CHECKING:  # spiketok.schema imports spiketok.model (sizes): imported where used
    from ..schema import AdaptConfig, TrainConfig
    from .poyo import POYO

# 1: the layout of this module's `to_json`. Version 1 files written before a training setting existed lack it;
# TrainConfig.from_record fills it with what its absence meant. Bump when older readers cannot follow a change.
FORMAT_VERSION = 1


class ModelFileError(SpiketokError, ValueError):
    """A model file that cannot be read (corrupt, pickled, foreign or too new), with what to do."""


def _version() -> str:
    from .. import __version__

    return __version__


@dataclass
class StageResult:
    """What one training stage of an adaptation did; `best_val_loss` is None when nothing was held out."""

    name: str
    steps: int
    best_step: int
    best_val_loss: float | None
    stopped_early: bool
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Adaptation:
    """One `adapt` run: the new session, the data it used (`n_trials` / `seconds` picked by `pick` and `seed`,
    `data` in words), its stages and its settings."""

    session: str
    file: str
    mode: str  # unit-id, finetune or scratch
    target: str
    n_trials: int | None
    seconds: float | None
    pick: str
    seed: int
    data: str
    stages: list[StageResult]
    config: AdaptConfig

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Adaptation:
        from ..schema import AdaptConfig

        known = {f.name for f in fields(cls)}
        rest = {k: v for k, v in d.items() if k in known and k not in ("stages", "config")}
        stages = [StageResult(**s) for s in d["stages"]]
        return cls(**rest, stages=stages, config=AdaptConfig.from_record(d["config"]))


@dataclass
class ModelMeta:
    """What a model was trained and adapted with; `model.meta` (a fresh model's is empty).

    train: the training config (None: never trained by `train`); targets: session -> task it decodes;
    splits: session -> split -> [[start, end], ...]; adaptations: one record per `adapt`;
    extra: other records, kept as they were (the recipe's choices, `recipe`).
    """

    train: TrainConfig | None = None
    targets: dict[str, str] = field(default_factory=dict)
    splits: dict[str, dict[str, list[list[float]]]] = field(default_factory=dict)
    adaptations: list[Adaptation] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    RECORDS = ("train", "targets", "splits", "adaptations")

    @property
    def causal(self) -> bool:
        """Trained with one output at each window's end (train config `causal`): a real-time decoder."""
        return self.train is not None and self.train.causal

    def to_dict(self) -> dict[str, Any]:
        """The records as plain data (JSON), as a model file spells them."""
        return {
            "train": self.train.to_dict() if self.train is not None else {},
            "targets": copy.deepcopy(self.targets),
            "splits": copy.deepcopy(self.splits),
            "adaptations": [a.to_dict() for a in self.adaptations],
            "extra": copy.deepcopy(self.extra),
        }

    @classmethod
    def from_hparams(cls, hp: dict[str, Any]) -> ModelMeta:
        """From a training checkpoint's hyper-parameters (the records, the model's settings and other keys)."""
        return ModelMeta.from_dict(
            {**hp, "extra": {k: v for k, v in hp.items() if k not in (*cls.RECORDS, "model", "tasks")}}
        )

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelMeta:
        """From plain data (`to_dict()`, a model file's JSON); ValueError, KeyError or TypeError if damaged."""
        from ..schema import TrainConfig

        return cls(
            train=TrainConfig.from_record(d.get("train") or {}),
            targets=dict(d.get("targets") or {}),
            splits=dict(d.get("splits") or {}),
            adaptations=[Adaptation.from_dict(a) for a in d.get("adaptations") or []],
            extra=dict(d.get("extra") or {}),
        )


def _records(meta: ModelMeta) -> dict[str, Any]:
    """The fields of ModelMeta of `meta` (a ModelFileMeta too), by name."""
    return {f.name: getattr(meta, f.name) for f in fields(ModelMeta)}


@dataclass(kw_only=True)
class ModelFileMeta(ModelMeta):
    """Everything beside the weights that rebuilds and describes a trained model (the model file's JSON).

    model: the ModelConfig as a dict; tasks: readout name -> output size; unit_ids / session_ids: the
    vocabularies in row order (row k of unit_emb.weight is unit_ids[k]); normalization: session -> task ->
    {"mean", "std"} lists; step: training step of the weights; the records of ModelMeta beside them.
    """

    model: dict[str, Any]
    tasks: dict[str, int]
    unit_ids: list[str]
    session_ids: list[str]
    normalization: dict[str, dict[str, dict[str, list[float]]]] = field(default_factory=dict)
    step: int | None = None
    format_version: int = FORMAT_VERSION
    spiketok_version: str = field(default_factory=_version)

    @classmethod
    def from_model(cls, model: POYO, step: int | None = None) -> ModelFileMeta:
        """The metadata of `model`: its modules' settings and vocabularies, and a copy of `model.meta`."""
        return cls(
            model=model.config.to_dict(),
            tasks={t: model.readouts[t].out_features for t in model.task_names},
            unit_ids=list(model.unit_emb.ids),
            session_ids=list(model.session_emb.ids),
            normalization=json.loads(json.dumps(model.normalizer.stats)),
            step=step,
            **_records(copy.deepcopy(model.meta)),
        )

    def model_meta(self) -> ModelMeta:
        """The records a model built from this file holds as `model.meta` (a copy)."""
        return ModelMeta(**copy.deepcopy(_records(self)))

    def to_dict(self) -> dict[str, Any]:
        """The model file's JSON as plain data: the modules' settings, the records, the versions."""
        structure = {k: getattr(self, k) for k in ("model", "tasks", "unit_ids", "session_ids", "normalization")}
        records = super().to_dict()
        return {
            **structure,
            **{k: records[k] for k in self.RECORDS},
            "step": self.step,
            "extra": records["extra"],
            "format_version": self.format_version,
            "spiketok_version": self.spiketok_version,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelFileMeta:
        """From `to_dict()`'s plain data (checked by `from_json`); ValueError, KeyError or TypeError if damaged."""
        known = {f.name for f in fields(cls)} - {f.name for f in fields(ModelMeta)}
        return cls(**{k: v for k, v in d.items() if k in known}, **_records(ModelMeta.from_dict(d)))

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_json(cls, text: str, source: str = "model file") -> ModelFileMeta:
        """Parse and check: a file from a newer spiketok gets a clear message, damaged fields a ModelFileError."""
        from .meta_checks import check_fields, damaged

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
        missing = [k for k in ("model", "tasks", "unit_ids", "session_ids") if k not in d]
        if missing:
            raise ModelFileError(f"{source}: its metadata lacks {missing}; not a complete spiketok model file")
        check_fields(d, source)
        try:
            return cls.from_dict(d)
        except (KeyError, TypeError, ValueError) as e:
            raise damaged(source, [f"its records do not read ({type(e).__name__}: {e})"]) from None
