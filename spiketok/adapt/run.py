"""`adapt`: a trained model -> a model that also decodes a new session (unit-id, finetune or scratch)."""

from __future__ import annotations

import copy
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from ..data.storage import StoredSession
from ..evaluate.decode import default_stride
from ..model.meta import Adaptation, ModelMeta
from ..model.poyo import POYO
from ..schema import AdaptConfig, TrainConfig
from ..train.loop import fit_stage
from ..train.stage import Stage
from .data import AdaptationData, adaptation_data, as_session, restricted_session, single_session_dataset
from .scratch import train_scratch
from .unit_identification import (
    NewRows,
    adaptation_stats,
    init_new_rows,
    new_rows_only,
    register_new_session,
    unit_id_parameters,
)

MODES = ("unit-id", "finetune", "scratch")


def _spans(iv) -> list[list[float]]:
    return [[float(a), float(b)] for a, b in zip(iv.start, iv.end)]


def adapt(
    model: POYO,
    session: StoredSession | str | Path,
    mode: str = "unit-id",
    n_trials: int | None = None,
    seconds: float | None = None,
    target: str | None = None,
    pick: str = "first",
    seed: int = 0,
    config: AdaptConfig | None = None,
    progress: bool = True,
) -> POYO:
    """A new model (eval mode) that decodes `session` too; `model` itself is left untouched.

    mode "unit-id": learn only the session's new unit and session embeddings (every other weight,
    including other sessions' rows, stays bit for bit); "finetune": unit-id, then every weight at
    a lower learning rate; "scratch": a fresh model of the same size trained on the same data only.
    The data: `n_trials` trials of the session's training split (`pick` "first" or "random" with
    `seed`), or its first `seconds`, or all of it; see `spiketok.adapt.data`. Save the result with
    `spiketok.model.save_model`; it loads, evaluates and predicts like any model.
    """
    if mode not in MODES:
        raise ValueError(f"unknown adaptation mode {mode!r}; choose one of {', '.join(MODES)}")
    cfg = config or AdaptConfig()
    if cfg.unit_init not in ("mean", "random"):
        raise ValueError(f"unit_init must be 'mean' or 'random', got {cfg.unit_init!r}")
    session = as_session(session)
    signals = list(session.behavior_info)
    if target is None and len(signals) == 1 and signals[0] not in model.task_names:
        target = signals[0]  # the session's only behaviour, new to the model: it gets a readout of its own
    target = model.target_for(session.id, signals, target)
    data = adaptation_data(
        session, n_trials, seconds, pick, seed, cfg.valid_fraction, cfg.min_valid_trials, cfg.min_valid_seconds
    )
    view = restricted_session(session, data)
    stats = adaptation_stats(model, view, target, cfg.norm_prior_seconds)  # the same for every mode
    torch.manual_seed(seed)
    stages = []
    if mode == "scratch":
        new, stage = train_scratch(model, view, target, cfg, seed, progress)
        stages.append(stage)
    else:
        new = copy.deepcopy(model)
        rows = register_new_session(new, view, target, stats)
        init_new_rows(new, rows, cfg.unit_init)
        unit_id = _stage(
            model,
            cfg,
            data,
            seed,
            name="unit-id",
            lr=cfg.lr_unit_id,
            trainable=unit_id_parameters(new, rows),
            rows=new_rows_only(rows),
        )
        stages.append(fit_stage(new, single_session_dataset(view), {view.id: target}, unit_id, progress))
    record = Adaptation(
        session=session.id,
        file=str(session.path),
        mode="unit-id" if mode == "finetune" else mode,
        target=target,
        n_trials=n_trials,
        seconds=seconds,
        pick=pick,
        seed=seed,
        data=data.description,
        stages=stages,
        config=replace(cfg),
    )
    new.meta = _adapted_meta(model.meta, session, data, record)
    new.eval()
    return finetune_adapted(new, session, cfg, progress) if mode == "finetune" else new


def finetune_adapted(
    model: POYO, session: StoredSession | str | Path, config: AdaptConfig | None = None, progress: bool = True
) -> POYO:
    """The finetune stage alone, on a model that `adapt(mode="unit-id")` made for `session`.

    Every weight trains at a lower learning rate on the same adaptation data (the other sessions'
    vocabulary rows still do not move). `adapt(mode="finetune")` is unit-id followed by this.
    """
    cfg = config or AdaptConfig()
    session = as_session(session)
    records = model.meta.adaptations
    if not records or records[-1].session != session.id or records[-1].mode != "unit-id":
        raise ValueError(f"the model's last adaptation is not unit-id on {session.id!r}; use adapt(mode='finetune')")
    rec = records[-1]
    data = adaptation_data(
        session,
        rec.n_trials,
        rec.seconds,
        rec.pick,
        rec.seed,
        cfg.valid_fraction,
        cfg.min_valid_trials,
        cfg.min_valid_seconds,
    )
    view = restricted_session(session, data)
    new = copy.deepcopy(model)
    rows = NewRows(new.unit_emb.lookup(session.unit_ids), new.session_emb.lookup([session.id]), [])
    finetune = _stage(
        model,
        cfg,
        data,
        rec.seed + 1,
        name="finetune",
        lr=float(cfg.lr_finetune or float(pretrained_setting(model, "lr", 2e-3)) / 10),
        vocab_lr=cfg.lr_finetune_vocab,
        weight_decay=_weight_decay(model, cfg),
        rows=new_rows_only(rows),
        keep_start=True,  # fine-tuning may keep the unit-id result
    )
    torch.manual_seed(rec.seed + 1)
    stage = fit_stage(new, single_session_dataset(view), {view.id: rec.target}, finetune, progress)
    new.meta.adaptations[-1] = replace(rec, mode="finetune", stages=[*rec.stages, stage], config=replace(cfg))
    return new.eval()


def pretrained_setting(model: POYO, key: str, default):
    """A setting of the pretraining run (model.meta.train), `default` for a model that `train` did not make."""
    train: TrainConfig | None = model.meta.train
    return default if train is None else getattr(train, key)


def _weight_decay(model: POYO, cfg: AdaptConfig) -> float:
    return float(cfg.weight_decay if cfg.weight_decay is not None else pretrained_setting(model, "weight_decay", 1e-4))


def _stage(model: POYO, cfg: AdaptConfig, data: AdaptationData, seed: int, **learns: Any) -> Stage:
    """A stage of adaptation: `cfg`'s steps, batch, checks and patience, the pretraining run's window settings,
    evaluation's stride; `learns`: its name and what learns at which rates (spiketok.train.stage.Stage)."""
    unit_dropout = pretrained_setting(model, "unit_dropout", True) if cfg.unit_dropout is None else cfg.unit_dropout
    return Stage(
        max_steps=cfg.max_steps if data.valid is not None else cfg.fixed_steps,
        batch_size=cfg.batch_size,
        steps_per_epoch=cfg.eval_every,
        patience=cfg.patience,
        warmup_steps=10,
        grad_clip=1.0,
        eval_stride=default_stride(model),
        unit_dropout=bool(unit_dropout),
        min_units=int(pretrained_setting(model, "min_units", 8)),
        causal=bool(pretrained_setting(model, "causal", False)),
        seed=seed,
        **learns,
    )


def _adapted_meta(meta: ModelMeta, session: StoredSession, data: AdaptationData, record: Adaptation) -> ModelMeta:
    """The source model's records plus the new session's target, splits and the adaptation's record."""
    new = copy.deepcopy(meta)
    splits = {
        "train": _spans(data.train),
        "valid": _spans(data.valid) if data.valid is not None else [],
        "test": _spans(session.splits["test"]) if "test" in session.splits else [],
    }
    if record.mode == "scratch":  # a model of its own: only the new session (the source's settings kept)
        new = ModelMeta(train=meta.train, extra=new.extra)
    new.targets[session.id] = record.target
    new.splits[session.id] = splits
    new.adaptations.append(record)
    return new
