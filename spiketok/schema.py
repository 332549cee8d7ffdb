"""The typed schema of a training config: every key, at every depth, with its type and range.

`check_config` runs on every config `load_config` returns (presets, user YAML files and `key=value`
overrides), before anything trains: an unknown key (`foo.bar=1`, `model.foo=1`), a value of the wrong
type (`max_steps=abc`) or out of range (`max_steps=0`, `model.window=-1`) raises ConfigError, whose
one-line message names the key, the value and what is allowed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any

from .model.config import BACKBONES, SIZES, ModelConfig
from .tokenize.tokenizer import LATENT_GRIDS

AUTO = "auto"
LIGHTNING_PRECISIONS = (
    "32-true",
    "32",
    "16-mixed",
    "bf16-mixed",
    "16-true",
    "bf16-true",
    "64-true",
    "64",
    "16",
    "bf16",
    "transformer-engine",
    "transformer-engine-float16",
)


class ConfigError(ValueError):
    """A training setting that is unknown, of the wrong type or out of range; the message says what is allowed."""


def show(value: Any) -> str:
    """A value as it is written after `key=` (YAML spelling)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


@dataclass(frozen=True)
class Rule:
    """What one setting accepts: a type (int, float, bool or str), an optional range or list of choices, and
    whether `auto` (chosen from the data) or null (off / none) may stand for a value."""

    kind: type
    low: float | None = None
    high: float | None = None
    low_open: bool = False  # low itself excluded
    high_open: bool = False  # high itself excluded
    auto: bool = False
    null: bool = False
    choices: tuple[str, ...] = ()

    def allowed(self) -> str:
        if self.choices:
            text = "one of " + ", ".join(self.choices)
        else:
            text = {int: "a whole number", float: "a finite number", bool: "true or false", str: "text"}[self.kind]
            if self.low is not None:
                text += f" {'>' if self.low_open else '>='} {_num(self.low)}"
            if self.high is not None:
                text += f"{' and' if self.low is not None else ''} {'<' if self.high_open else '<='} {_num(self.high)}"
        extra = [w for w, ok in ((AUTO, self.auto), ("null", self.null)) if ok]
        return text + "".join(f", or {w}" for w in extra)

    def check(self, key: str, value: Any) -> Any:
        """The value, converted to the rule's type where that loses nothing (2.0 -> 2, "1e-3" -> 0.001)."""
        if value is None and self.null:
            return None
        if isinstance(value, str) and value.lower() == AUTO and self.auto:
            return AUTO
        out = self._typed(value)
        if out is None or not self._in_range(out):
            raise ConfigError(f"setting {key}={show(value)} is not allowed: {key} takes {self.allowed()}")
        return out

    def _typed(self, value: Any) -> Any:
        if self.kind is bool:
            return value if isinstance(value, bool) else None
        if self.kind is str:
            if self.choices and isinstance(value, int) and not isinstance(value, bool):
                value = str(value)  # precision=32 reads as a number
            return value if isinstance(value, str) and (not self.choices or value in self.choices) else None
        if isinstance(value, bool):
            return None
        if isinstance(value, str):  # YAML reads 1e-3 (no dot) as text
            try:
                value = float(value)
            except ValueError:
                return None
        if not isinstance(value, (int, float)) or not math.isfinite(value):
            return None
        if self.kind is int:
            return int(value) if float(value).is_integer() else None
        return float(value)

    def _in_range(self, value: Any) -> bool:
        if self.kind not in (int, float):
            return True
        if self.low is not None and (value < self.low or (self.low_open and value == self.low)):
            return False
        return not (self.high is not None and (value > self.high or (self.high_open and value == self.high)))


POSITIVE_INT = Rule(int, low=1)
POSITIVE = Rule(float, low=0, low_open=True)

MODEL_RULES: dict[str, Rule] = {
    "size": Rule(str, choices=tuple(SIZES)),
    "dim": POSITIVE_INT,
    "depth": POSITIVE_INT,
    "num_latents_per_step": POSITIVE_INT,
    "latent_step": POSITIVE,
    "cross_heads": POSITIVE_INT,
    "self_heads": POSITIVE_INT,
    "head_dim": POSITIVE_INT,
    "ffn_mult": POSITIVE_INT,
    "dropout": Rule(float, low=0, high=1, high_open=True),
    "t_min": POSITIVE,
    "t_max": POSITIVE,
    "window": Rule(float, low=0, low_open=True, auto=True),
    "latent_grid": Rule(str, choices=LATENT_GRIDS),
    "backbone": Rule(str, choices=BACKBONES),
}
assert set(MODEL_RULES) == {f.name for f in fields(ModelConfig)} | {"size"}, "MODEL_RULES must follow ModelConfig"

TRAIN_RULES: dict[str, Rule | dict[str, Rule]] = {
    "model": MODEL_RULES,
    "target": Rule(str, null=True),
    "batch_size": Rule(int, low=1, auto=True),
    "max_steps": Rule(int, low=1, auto=True),
    "max_minutes": Rule(float, low=0, low_open=True, null=True),
    "steps_per_epoch": Rule(int, low=1, auto=True),
    "lr": Rule(float, low=0),  # 0 holds the weights still (a test of early stopping)
    "weight_decay": Rule(float, low=0),
    "warmup_steps": Rule(int, low=0, auto=True),
    "patience": Rule(int, low=1, auto=True, null=True),
    "ema": Rule(float, low=0, high=1, low_open=True, high_open=True, null=True),
    "init": Rule(str, auto=True, null=True),  # auto: scratch and the shipped model compared; none; a model file
    "init_lr_factor": Rule(float, low=0, low_open=True, auto=True),
    "init_unit_id_restarts": POSITIVE_INT,
    "grad_clip": Rule(float, low=0, null=True),
    "unit_dropout": Rule(bool),
    "min_units": POSITIVE_INT,
    "causal": Rule(bool),
    "eval_stride": POSITIVE,
    "seed": Rule(int, low=0, high=2**32 - 1),
    "num_workers": Rule(int, low=0),
    "precision": Rule(str, choices=(AUTO, *LIGHTNING_PRECISIONS)),
}

# `spiketok adapt` / `fewshot` key=value settings (spiketok.adapt.run.AdaptConfig; a test checks they match)
ADAPT_RULES: dict[str, Rule] = {
    "max_steps": POSITIVE_INT,
    "fixed_steps": POSITIVE_INT,
    "batch_size": POSITIVE_INT,
    "eval_every": POSITIVE_INT,
    "patience": POSITIVE_INT,
    "lr_unit_id": Rule(float, low=0),
    "lr_finetune": Rule(float, low=0, null=True),
    "lr_finetune_vocab": Rule(float, low=0),
    "lr_scratch": Rule(float, low=0, null=True),
    "weight_decay": Rule(float, low=0, null=True),
    "valid_fraction": Rule(float, low=0, high=1, low_open=True, high_open=True),
    "min_valid_trials": Rule(int, low=0),
    "min_valid_seconds": Rule(float, low=0),
    "unit_dropout": Rule(bool, null=True),
    "scratch_max_steps": Rule(int, low=1, null=True),
    "unit_init": Rule(str, choices=("mean", "random")),
    "norm_prior_seconds": Rule(float, low=0),
}


def check_adapt_setting(key: str, value: Any) -> Any:
    """One adaptation `key=value` checked against ADAPT_RULES; the value converted to the rule's type."""
    if key not in ADAPT_RULES:
        raise ConfigError(f"unknown adaptation setting {key!r} ({key}={show(value)}); known: {_known(ADAPT_RULES)}")
    return ADAPT_RULES[key].check(key, value)


def _known(rules: dict) -> str:
    return ", ".join(sorted(rules))


def rule_for(dotted: str, value: Any = None) -> Rule | dict[str, Rule]:
    """The rule of a dotted key (`lr`, `model.window`); an unknown key at any depth raises ConfigError."""
    node: Rule | dict[str, Rule] | dict[str, Rule | dict[str, Rule]] = TRAIN_RULES
    parts = dotted.split(".")
    for depth, part in enumerate(parts):
        where = ".".join(parts[:depth])
        if not isinstance(node, dict):
            raise ConfigError(
                f"unknown config key {dotted!r} ({dotted}={show(value)}): {where} is a single value, it has no {part!r}"
            )
        if part not in node:
            scope = f"{where} settings" if where else "settings"
            raise ConfigError(
                f"unknown config key {dotted!r} ({dotted}={show(value)}): {part!r} is not one; "
                f"known {scope}: {_known(node)}"
            )
        node = node[part]
    return node


def check_setting(dotted: str, value: Any) -> Any:
    """One `key=value` checked against its rule; the value converted to the rule's type."""
    rule = rule_for(dotted, value)
    if isinstance(rule, dict):
        if dotted == "model" and isinstance(value, str) and value in SIZES:  # model=poyo-1.3M: a named size
            return {"size": value}
        if not isinstance(value, dict):
            raise ConfigError(
                f"setting {dotted}={show(value)} is not allowed: {dotted} holds settings "
                f"({_known(rule)}), give them as {dotted}.KEY=VALUE"
            )
        return {k: check_setting(f"{dotted}.{k}", v) for k, v in value.items()}
    return rule.check(dotted, value)


def check_config(cfg: Any, source: str = "config") -> dict:
    """Every key of a whole config checked (unknown keys refused at every depth); a checked copy."""
    if not isinstance(cfg, dict):
        raise ConfigError(f"{source}: a config is a mapping of settings (key: value), not {type(cfg).__name__}")
    checked = {str(k): check_setting(str(k), v) for k, v in cfg.items()}
    missing = sorted(set(TRAIN_RULES) - set(checked))
    if missing:
        raise ConfigError(f"{source}: settings {missing} are missing; start from a preset (`base: tiny`)")
    return checked
