"""`adapt`: a trained model -> a model that also decodes a new session (unit-id, finetune or scratch)."""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
import yaml

from ..data.storage import StoredSession
from ..model.poyo import POYO
from .data import AdaptationData, adaptation_data, as_session, restricted_session
from .finetune import finetune_param_groups
from .loop import StageResult, fit
from .unit_identification import (
    NewRows,
    adaptation_stats,
    frozen_except,
    init_new_rows,
    only_new_rows_learn,
    register_new_session,
    unit_id_param_groups,
)

MODES = ("unit-id", "finetune", "scratch")


@dataclass
class AdaptConfig:
    """Settings of an adaptation run; None means "as in the pretraining run" (model.hparams["train"])."""

    max_steps: int = 300  # per stage, with early stopping on the held-out part
    fixed_steps: int = 100  # per stage, when too little data to hold any out
    batch_size: int = 16
    eval_every: int = 10  # steps between validation checks
    patience: int = 5  # checks without improvement before stopping
    lr_unit_id: float = 1e-2  # new unit/session embeddings (and a new readout)
    lr_finetune: float | None = None  # every weight in the finetune stage; None: a tenth of the pretraining lr
    lr_finetune_vocab: float = 1e-3  # the new embeddings in the finetune stage
    lr_scratch: float | None = None  # None: the pretraining lr
    weight_decay: float | None = None  # on weight matrices (finetune, scratch); None: the pretraining value
    valid_fraction: float = 0.2  # of the adaptation trials (or seconds) held out for early stopping
    # With fewer trials (seconds) nothing is held out and each stage runs `fixed_steps` steps on all of
    # them: on Mihi with 10 trials, early stopping on 2 held-out trials gave unit-id R² 0.60, fixed steps 0.73.
    min_valid_trials: int = 20
    min_valid_seconds: float = 10.0
    # Unit dropout (pretraining's augmentation) hurts few-shot adaptation: Mihi, 10 trials, unit-id R² 0.55
    # with it, 0.73 without. None: as in pretraining.
    unit_dropout: bool | None = False
    scratch_max_steps: int | None = None  # scratch: None = the recipe's steps (as `spiketok train`), early stopped
    unit_init: str = "mean"  # new unit rows start at the mean known row ("mean") or random ("random")
    norm_prior_seconds: float = 30.0  # weight of the model's pooled target statistics; 0: the new data's alone

    @classmethod
    def from_overrides(cls, overrides: list[str]) -> AdaptConfig:
        """Settings from key=value strings (values parsed as YAML), e.g. ["max_steps=100"], each checked against
        spiketok.schema.ADAPT_RULES (type and range; ConfigError names the key, the value and what is allowed)."""
        from ..schema import ConfigError, check_adapt_setting

        known = {f.name for f in fields(cls)}
        values = {}
        for item in overrides:
            key, sep, value = item.partition("=")
            key = key.strip()
            if not sep or key not in known:
                raise ConfigError(f"adaptation setting {item!r}: expected key=value with key one of {sorted(known)}")
            try:
                parsed = yaml.safe_load(value)
            except yaml.YAMLError:
                raise ConfigError(f"adaptation setting {item!r}: not a YAML value") from None
            values[key] = check_adapt_setting(key, parsed)
        return cls(**values)


# The scratch arm: (source model, adaptation view of the session, target, config, seed, progress) -> a fresh
# model of the source's size trained on the view alone, and its stage record. Training a model from scratch
# is the training layer's work (Lightning), so the caller passes it: spiketok.train.scratch.train_scratch.
ScratchTrainer = Callable[[POYO, StoredSession, str, AdaptConfig, int, bool], tuple[POYO, StageResult]]


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
    scratch: ScratchTrainer | None = None,
) -> POYO:
    """A new model (eval mode) that decodes `session` too; `model` itself is left untouched.

    mode "unit-id": learn only the session's new unit and session embeddings (every other weight,
    including other sessions' rows, stays bit for bit); "finetune": unit-id, then every weight at
    a lower learning rate; "scratch": a fresh model of the same size trained on the same data only.
    The data: `n_trials` trials of the session's training split (`pick` "first" or "random" with
    `seed`), or its first `seconds`, or all of it; see `spiketok.adapt.data`. Save the result with
    `spiketok.model.save_model`; it loads, evaluates and predicts like any model.
    Mode "scratch" needs `scratch`, the trainer of the scratch arm (spiketok.train.scratch.train_scratch).
    """
    if mode not in MODES:
        raise ValueError(f"unknown adaptation mode {mode!r}; choose one of {', '.join(MODES)}")
    if mode == "scratch" and scratch is None:
        raise ValueError("mode 'scratch' trains a fresh model: pass scratch=spiketok.train.scratch.train_scratch")
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
        new, stage = scratch(model, view, target, cfg, seed, progress)
        stages.append(stage)
    else:
        new = copy.deepcopy(model)
        rows = register_new_session(new, view, target, stats)
        init_new_rows(new, rows, cfg.unit_init)
        groups = unit_id_param_groups(new, rows, cfg.lr_unit_id)
        with only_new_rows_learn(new, rows), frozen_except(new, [p for g in groups for p in g["params"]]):
            stages.append(fit(new, view, target, groups, "unit-id", **_fit_kwargs(model, cfg, data, seed, progress)))
    choice = dict(n_trials=n_trials, seconds=seconds, pick=pick, seed=seed)
    new.hparams = _adapted_hparams(
        model, session, target, data, "unit-id" if mode == "finetune" else mode, stages, cfg, choice
    )
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
    if not records or records[-1]["session"] != session.id or records[-1]["mode"] != "unit-id":
        raise ValueError(f"the model's last adaptation is not unit-id on {session.id!r}; use adapt(mode='finetune')")
    rec = records[-1]
    data = adaptation_data(
        session,
        rec["n_trials"],
        rec["seconds"],
        rec["pick"],
        rec["seed"],
        cfg.valid_fraction,
        cfg.min_valid_trials,
        cfg.min_valid_seconds,
    )
    view = restricted_session(session, data)
    new = copy.deepcopy(model)
    rows = NewRows(new.unit_emb.lookup(session.unit_ids), new.session_emb.lookup([session.id]), [])
    lr = float(cfg.lr_finetune or float(pretrained_setting(model, "lr", 2e-3)) / 10)
    groups = finetune_param_groups(new, lr, cfg.lr_finetune_vocab, _weight_decay(model, cfg))
    torch.manual_seed(rec["seed"] + 1)
    with only_new_rows_learn(new, rows):
        stage = fit(
            new,
            view,
            rec["target"],
            groups,
            "finetune",
            start_competes=True,
            **_fit_kwargs(model, cfg, data, rec["seed"] + 1, progress),
        )
    new.hparams = copy.deepcopy(model.hparams)
    new.hparams["adaptations"][-1].update(mode="finetune", stages=[*rec["stages"], stage.to_dict()], config=asdict(cfg))
    return new.eval()


def pretrained_setting(model: POYO, key: str, default):
    """A setting of the pretraining run (model.meta.train; key "__all__": all of them)."""
    settings = model.meta.train
    return (settings or default) if key == "__all__" else settings.get(key, default)


def _weight_decay(model: POYO, cfg: AdaptConfig) -> float:
    return float(cfg.weight_decay if cfg.weight_decay is not None else pretrained_setting(model, "weight_decay", 1e-4))


def _fit_kwargs(model: POYO, cfg: AdaptConfig, data: AdaptationData, seed: int, progress: bool) -> dict:
    unit_dropout = pretrained_setting(model, "unit_dropout", True) if cfg.unit_dropout is None else cfg.unit_dropout
    return dict(
        max_steps=cfg.max_steps if data.valid is not None else cfg.fixed_steps,
        batch_size=cfg.batch_size,
        eval_every=cfg.eval_every,
        patience=cfg.patience,
        seed=seed,
        progress=progress,
        unit_dropout=bool(unit_dropout),
        min_units=int(pretrained_setting(model, "min_units", 8)),
        causal=bool(pretrained_setting(model, "causal", False)),
    )


def _adapted_hparams(
    model: POYO,
    session: StoredSession,
    target: str,
    data: AdaptationData,
    mode: str,
    stages: list,
    cfg: AdaptConfig,
    choice: dict,
) -> dict:
    """The source model's hparams plus the new session's target, splits and a record of the adaptation."""
    hp = copy.deepcopy(dict(getattr(model, "hparams", None) or {}))
    splits = {
        "train": _spans(data.train),
        "valid": _spans(data.valid) if data.valid is not None else [],
        "test": _spans(session.splits["test"]) if "test" in session.splits else [],
    }
    if mode == "scratch":  # a model of its own: only the new session
        hp["targets"], hp["splits"], hp["adaptations"] = {}, {}, []
    hp["targets"] = {**hp.get("targets", {}), session.id: target}
    hp["splits"] = {**hp.get("splits", {}), session.id: splits}
    record = {
        "session": session.id,
        "file": str(session.path),
        "mode": mode,
        "target": target,
        **choice,
        "data": data.description,
        "stages": [s.to_dict() for s in stages],
        "config": asdict(cfg),
    }
    hp["adaptations"] = [*hp.get("adaptations", []), record]
    return hp
