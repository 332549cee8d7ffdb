"""Every field of a model file's metadata checked on load, against its type and against the weights.

A file that fails is refused with what is wrong (ModelFileError, one `error:` line in the CLI), instead of
decoding in normalised units (`normalization` of `{}`), failing with a traceback (`tasks` as a list) or
scoring nan. `check_fields` runs on the JSON before it is read into ModelFileMeta (spiketok.model.meta),
`check_meta` on the result, against the weights (spiketok.model.file.read_model_file, on every load).
"""

from __future__ import annotations

import math
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

from .meta import ModelFileError

if TYPE_CHECKING:
    import torch

    from .meta import ModelFileMeta


def _finite(values: Any) -> bool:
    return isinstance(values, list) and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values
    )


def _str_list(values: Any) -> bool:
    return isinstance(values, list) and all(isinstance(v, str) for v in values)


def _str_dict(values: Any, of: type) -> bool:
    return isinstance(values, dict) and all(
        isinstance(k, str) and isinstance(v, of) and not isinstance(v, bool) for k, v in values.items()
    )


def _types(meta: SimpleNamespace) -> list[str]:
    """What is of the wrong type (each field of ModelFileMeta has one)."""
    wrong = []
    checks = {
        "model": isinstance(meta.model, dict),
        "tasks": _str_dict(meta.tasks, int),
        "unit_ids": _str_list(meta.unit_ids),
        "session_ids": _str_list(meta.session_ids),
        "normalization": isinstance(meta.normalization, dict),
        "targets": _str_dict(meta.targets, str),
        "splits": isinstance(meta.splits, dict),
        "train": isinstance(meta.train, dict),
        "adaptations": isinstance(meta.adaptations, list) and all(isinstance(a, dict) for a in meta.adaptations),
        "extra": isinstance(meta.extra, dict),
        "step": meta.step is None
        or (isinstance(meta.step, int) and not isinstance(meta.step, bool) and meta.step >= 0),
    }
    expected = {
        "model": "a mapping of settings",
        "tasks": "a mapping of task name to output size",
        "unit_ids": "a list of unit ids",
        "session_ids": "a list of session ids",
        "normalization": "a mapping session -> task -> mean, std",
        "targets": "a mapping session -> task",
        "splits": "a mapping session -> split -> intervals",
        "train": "a mapping of training settings",
        "adaptations": "a list of records",
        "extra": "a mapping",
        "step": "a whole number >= 0 or null",
    }
    for name, ok in checks.items():
        if not ok:
            wrong.append(f"{name} is {type(getattr(meta, name)).__name__}, not {expected[name]}")
    return wrong


def _settings(meta: SimpleNamespace) -> list[str]:
    """The model settings and the known training settings, against the training config's schema."""
    from ..schema import TRAIN_RULES, ConfigError, check_setting

    wrong = []
    for key, value in [("model", meta.model)] + [(k, v) for k, v in meta.train.items() if k in TRAIN_RULES]:
        try:
            check_setting(key, value)
        except ConfigError as e:
            wrong.append(f"{'' if key == 'model' else 'train.'}{str(e).removeprefix('setting ')}")
    return wrong


def _vocabularies(meta: ModelFileMeta, tensors: dict[str, torch.Tensor]) -> list[str]:
    wrong = []
    for name, ids in (("unit", meta.unit_ids), ("session", meta.session_ids)):
        weight = tensors.get(f"{name}_emb.weight")
        if weight is None:
            wrong.append(f"no {name}_emb.weight tensor")
        elif weight.ndim != 2 or weight.shape[0] != len(ids):
            wrong.append(f"{len(ids)} {name} ids for {weight.shape[0] if weight.ndim else 0} {name} embedding rows")
        if len(set(ids)) != len(ids):
            wrong.append(f"{name} ids repeat")
    for task, size in meta.tasks.items():
        weight = tensors.get(f"readouts.{task}.weight")
        if weight is None:
            wrong.append(f"task {task!r} has no readout weights")
        elif weight.ndim != 2 or weight.shape[0] != size:
            wrong.append(f"task {task!r} declares {size} outputs, its readout has {weight.shape[0]}")
    extra = sorted({k.split(".")[1] for k in tensors if k.startswith("readouts.")} - set(meta.tasks))
    if extra:
        wrong.append(f"readouts {extra} are not among its tasks {sorted(meta.tasks)}")
    return wrong


def _stats(meta: ModelFileMeta, sid: str, task: str, stats: Any) -> list[str]:
    where = f"normalization[{sid!r}][{task!r}]"
    if task not in meta.tasks:
        return [f"{where}: {task!r} is not one of its tasks {sorted(meta.tasks)}"]
    if not isinstance(stats, dict) or set(stats) != {"mean", "std"}:
        return [f"{where} is not a mapping of mean and std"]
    wrong = []
    for key in ("mean", "std"):
        values = stats[key]
        if not _finite(values):
            wrong.append(f"{where}[{key!r}] is not a list of finite numbers")
        elif len(values) != meta.tasks[task]:
            wrong.append(f"{where}[{key!r}] has {len(values)} values for {meta.tasks[task]} outputs")
        elif key == "std" and min(values, default=1.0) <= 0:
            wrong.append(f"{where}['std'] holds a value <= 0")
    return wrong


def _normalization(meta: ModelFileMeta) -> list[str]:
    wrong = []
    for sid, per_task in meta.normalization.items():
        if sid not in meta.session_ids:
            wrong.append(f"normalization of session {sid!r}, which is not in its vocabulary")
        elif not isinstance(per_task, dict):
            wrong.append(f"normalization[{sid!r}] is not a mapping task -> mean, std")
        else:
            for task, stats in per_task.items():
                wrong += _stats(meta, sid, task, stats)
    for sid in meta.session_ids:
        have = meta.normalization.get(sid)
        want = meta.targets.get(sid)
        if not isinstance(have, dict) or not have:
            wrong.append(f"no normalisation statistics for session {sid!r}")
        elif want is not None and want not in have:
            wrong.append(f"no normalisation statistics for session {sid!r} task {want!r}, which it decodes")
    for sid, task in meta.targets.items():
        if task not in meta.tasks:
            wrong.append(f"targets[{sid!r}] is {task!r}, not one of its tasks {sorted(meta.tasks)}")
    return wrong


def _splits(meta: ModelFileMeta) -> list[str]:
    wrong = []
    for sid, splits in meta.splits.items():
        if not isinstance(splits, dict):
            wrong.append(f"splits[{sid!r}] is not a mapping split -> intervals")
            continue
        for name, ivs in splits.items():
            ok = isinstance(ivs, list) and all(_finite(iv) and len(iv) == 2 and iv[0] <= iv[1] for iv in ivs)
            if not ok:
                wrong.append(f"splits[{sid!r}][{name!r}] is not a list of [start, end] pairs")
    return wrong


def damaged(source: str, wrong: list[str]) -> ModelFileError:
    """The error of a model file whose metadata is damaged: the first three problems, and how many more."""
    more = f" (and {len(wrong) - 3} more)" if len(wrong) > 3 else ""
    return ModelFileError(
        f"{source}: its metadata is damaged: {'; '.join(wrong[:3])}{more}; train the model again "
        "or ask for a fresh copy"
    )


RAW_DEFAULTS = {"normalization": {}, "targets": {}, "splits": {}, "train": {}, "adaptations": [], "extra": {}}


def check_fields(d: dict[str, Any], source: str = "model file") -> None:
    """Raise ModelFileError naming what is wrong when a field of the metadata's JSON is of the wrong type, or a
    model or training setting breaks its rule (before the JSON is read into typed records)."""
    raw = SimpleNamespace(**{**RAW_DEFAULTS, **d, "step": d.get("step")})
    wrong = _types(raw)
    if not wrong:
        wrong = _settings(raw)
    if wrong:
        raise damaged(source, wrong)


def check_meta(meta: ModelFileMeta, tensors: dict[str, torch.Tensor], source: str = "model file") -> None:
    """Raise ModelFileError naming what is wrong when the metadata does not fit the weights."""
    wrong = _vocabularies(meta, tensors) + _normalization(meta) + _splits(meta)
    if wrong:
        raise damaged(source, wrong)
