"""What `tune` searches: the ranges around a base config, Optuna parameters <-> config values."""

from __future__ import annotations

from typing import Any

import optuna

from ..model.config import ModelConfig
from ..schema import TrainConfig
from .recipe import is_auto, window_settings

METRIC = "val_r2"  # what a trial is scored on: R² of the valid split, as POYOModule logs it
SEARCHED = (
    "lr",
    "weight_decay",
    "model.dropout",
    "model.window",
    "model.latent_step",
    "model.t_max",
    "model.dim",
    "model.depth",
)


def _choices(values: list[float | int], base: float | int) -> list:
    return sorted(set(values) | {base})


def base_model(base: TrainConfig) -> ModelConfig:
    """The base config's model settings; an "auto" window (the recipe's) counts as 1 s, where the search starts."""
    if is_auto(base.model.window):
        base = with_values(base, window_settings(1.0, base.model.resolved_backbone))
    return base.model.config()


def search_space(base: TrainConfig) -> dict[str, Any]:
    """The ranges searched around the base config: log-uniform lr (base/10 .. 5 x base) and weight decay,
    dropout 0-0.4, window 0.5-4 s, 4/8/16 latent steps per window, width and depth from half to twice the
    base size's (width in multiples of 8). A recurrent model's latent step is its chunk length: not searched."""
    m = base_model(base)
    lr, wd = base.lr, base.weight_decay
    steps = max(1, round(m.window / m.latent_step))
    recurrent = m.backbone == "recurrent"
    return {
        "lr": (min(lr / 10, 1e-4), lr * 5),
        "weight_decay": (min(1e-5, wd) if wd > 0 else 1e-5, max(0.3, wd)),
        "dropout": (0.0, max(0.4, m.dropout)),
        "window": _choices([0.5, 1.0, 2.0, 4.0], float(m.window)),
        "latent_steps": [steps] if recurrent else _choices([4, 8, 16], steps),
        "dim": _choices([max(16, 8 * round(m.dim * f / 8)) for f in (0.5, 1.0, 1.5, 2.0)], m.dim),
        "depth": _choices([max(1, m.depth // 2), m.depth + max(1, m.depth // 2), 2 * m.depth], m.depth),
    }


def base_params(base: TrainConfig) -> dict[str, Any]:
    """The Optuna parameters that reproduce the base config (tried first in a new study)."""
    m = base_model(base)
    return {
        "lr": base.lr,
        "weight_decay": max(base.weight_decay, 1e-5),
        "dropout": float(m.dropout),
        "window": float(m.window),
        "latent_steps": max(1, round(m.window / m.latent_step)),
        "dim": m.dim,
        "depth": m.depth,
    }


def current_values(cfg: TrainConfig) -> dict[str, Any]:
    """The searched settings as a config has them (dotted keys)."""
    m = cfg.model.config()
    return {
        "lr": cfg.lr,
        "weight_decay": cfg.weight_decay,
        "model.dropout": m.dropout,
        "model.window": m.window,
        "model.latent_step": m.latent_step,
        "model.t_max": m.t_max,
        "model.dim": m.dim,
        "model.depth": m.depth,
    }


def values_of(params: dict[str, Any], base: TrainConfig) -> dict[str, Any]:
    """Optuna parameters -> config values (dotted keys). t_max >= 2 x window (rotary time range);
    latent_step = window / latent_steps, so the latent count stays latent_steps x num_latents_per_step; a
    recurrent model keeps its chunk length (the base's latent step) whatever the window."""
    m = base_model(base)
    window = float(params["window"])
    latent_step = m.latent_step if m.backbone == "recurrent" else window / int(params["latent_steps"])
    return {
        "lr": float(params["lr"]),
        "weight_decay": float(params["weight_decay"]),
        "model.dropout": float(params["dropout"]),
        "model.window": window,
        "model.latent_step": latent_step,
        "model.t_max": max(float(m.t_max), 2 * window),
        "model.dim": int(params["dim"]),
        "model.depth": int(params["depth"]),
    }


def suggest(trial: optuna.Trial, base: TrainConfig) -> dict[str, Any]:
    """The config values (dotted keys) of one trial."""
    space = search_space(base)
    params = {
        "lr": trial.suggest_float("lr", *space["lr"], log=True),
        "weight_decay": trial.suggest_float("weight_decay", *space["weight_decay"], log=True),
        "dropout": trial.suggest_float("dropout", *space["dropout"]),
        "window": trial.suggest_categorical("window", space["window"]),
        "latent_steps": trial.suggest_categorical("latent_steps", space["latent_steps"]),
        "dim": trial.suggest_categorical("dim", space["dim"]),
        "depth": trial.suggest_categorical("depth", space["depth"]),
    }
    return values_of(params, base)


def with_values(cfg: TrainConfig, values: dict[str, Any]) -> TrainConfig:
    """cfg with dotted keys set (a copy)."""
    for key, value in values.items():
        cfg = cfg.set(key, value)
    return cfg
