"""The typed schema of the settings: training (`TrainConfig`, its `model:` block `ModelSettings`) and adaptation
(`AdaptConfig`), as dataclasses whose every field carries the Rule that checks it (type and range).

`load_config` returns a TrainConfig built from presets, user YAML files and `key=value` overrides, and a
TrainConfig checks its fields when made (also by `set` and `dataclasses.replace`): an unknown key (`foo.bar=1`,
`model.foo=1`), a value of the wrong type (`max_steps=abc`) or out of range (`max_steps=0`, `model.window=-1`)
raises ConfigError, whose one-line message names the key, the value and what is allowed.
"""

from __future__ import annotations

import math
from dataclasses import MISSING, dataclass, field, fields, replace
from typing import Any, Literal

from .errors import SpiketokError
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


class ConfigError(SpiketokError, ValueError):
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


def setting(rule: Rule, default: Any = MISSING) -> Any:
    """A dataclass field whose values `rule` checks (and converts to its type)."""
    return field(metadata={"rule": rule}) if default is MISSING else field(default=default, metadata={"rule": rule})


def rules_of(cls: type) -> dict[str, Rule]:
    """The rule of every field of a settings dataclass, in field order."""
    return {f.name: f.metadata["rule"] for f in fields(cls) if "rule" in f.metadata}


def _check_fields(obj: Any, prefix: str = "", unset: bool = False) -> None:
    """Each field of a frozen settings dataclass checked by its rule and converted (unset=True: None skipped)."""
    for name, rule in rules_of(type(obj)).items():
        value = getattr(obj, name)
        if not (unset and value is None):
            object.__setattr__(obj, name, rule.check(prefix + name, value))


@dataclass(frozen=True, repr=False)
class ModelSettings:
    """The `model:` settings: a named size and the ModelConfig fields set over it (None: the size's value)."""

    size: str | None = setting(Rule(str, choices=tuple(SIZES)), None)
    dim: int | None = setting(POSITIVE_INT, None)
    depth: int | None = setting(POSITIVE_INT, None)
    num_latents_per_step: int | None = setting(POSITIVE_INT, None)
    latent_step: float | None = setting(POSITIVE, None)
    cross_heads: int | None = setting(POSITIVE_INT, None)
    self_heads: int | None = setting(POSITIVE_INT, None)
    head_dim: int | None = setting(POSITIVE_INT, None)
    ffn_mult: int | None = setting(POSITIVE_INT, None)
    dropout: float | None = setting(Rule(float, low=0, high=1, high_open=True), None)
    t_min: float | None = setting(POSITIVE, None)
    t_max: float | None = setting(POSITIVE, None)
    window: float | Literal["auto"] | None = setting(Rule(float, low=0, low_open=True, auto=True), None)
    latent_grid: str | None = setting(Rule(str, choices=LATENT_GRIDS), None)
    backbone: str | None = setting(Rule(str, choices=BACKBONES), None)

    def __post_init__(self) -> None:
        _check_fields(self, "model.", unset=True)

    def __repr__(self) -> str:
        return f"ModelSettings({', '.join(f'{k}={v!r}' for k, v in self.to_dict().items())})"

    def to_dict(self) -> dict[str, Any]:
        """The settings that are set, as the YAML `model:` block holds them."""
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}

    @classmethod
    def from_dict(cls, d: Any) -> ModelSettings:
        """From a `model:` block (or a size name); an unknown key raises ConfigError naming it."""
        return cls(**check_setting("model", d))

    @classmethod
    def of(cls, config: ModelConfig) -> ModelSettings:
        """Every field of a built ModelConfig (no size: the fields say it all)."""
        return cls(**config.to_dict())

    @property
    def resolved_backbone(self) -> str:
        """The backbone these settings build: the one set, else the size's (readable before the window is chosen)."""
        from .model.config import SIZES

        return self.backbone or SIZES[self.size or "tiny"].backbone

    def config(self) -> ModelConfig:
        """The ModelConfig these settings describe (an "auto" window must be chosen first)."""
        from .model.config import model_config

        return model_config(self.to_dict())


MODEL_RULES: dict[str, Rule] = rules_of(ModelSettings)
assert set(MODEL_RULES) == {f.name for f in fields(ModelConfig)} | {"size"}, "ModelSettings must follow ModelConfig"

Auto = Literal["auto"]


@dataclass(frozen=True)
class TrainConfig:
    """A training config (preset, YAML file and key=value overrides), every field checked by its rule.

    Frozen: change a setting with `cfg.set("model.window", 2.0)` or `dataclasses.replace`, both checked.
    """

    model: ModelSettings
    target: str | None = setting(Rule(str, null=True))
    batch_size: int | Auto = setting(Rule(int, low=1, auto=True))
    max_steps: int | Auto = setting(Rule(int, low=1, auto=True))
    max_minutes: float | None = setting(Rule(float, low=0, low_open=True, null=True))
    steps_per_epoch: int | Auto = setting(Rule(int, low=1, auto=True))
    lr: float = setting(Rule(float, low=0))  # 0 holds the weights still (a test of early stopping)
    weight_decay: float = setting(Rule(float, low=0))
    warmup_steps: int | Auto = setting(Rule(int, low=0, auto=True))
    patience: int | Auto | None = setting(Rule(int, low=1, auto=True, null=True))
    ema: float | None = setting(Rule(float, low=0, high=1, low_open=True, high_open=True, null=True))
    init: str | None = setting(Rule(str, auto=True, null=True))  # auto: scratch and the shipped model; a model file
    init_lr_factor: float | Auto = setting(Rule(float, low=0, low_open=True, auto=True))
    init_unit_id_restarts: int = setting(POSITIVE_INT)
    grad_clip: float | None = setting(Rule(float, low=0, null=True))
    unit_dropout: bool = setting(Rule(bool))
    min_units: int = setting(POSITIVE_INT)
    causal: bool = setting(Rule(bool))
    eval_stride: float = setting(POSITIVE)
    seed: int = setting(Rule(int, low=0, high=2**32 - 1))
    num_workers: int = setting(Rule(int, low=0))
    precision: str = setting(Rule(str, choices=(AUTO, *LIGHTNING_PRECISIONS)))

    def __post_init__(self) -> None:
        if not isinstance(self.model, ModelSettings):
            raise ConfigError(f"model holds settings (ModelSettings), not {type(self.model).__name__}")
        _check_fields(self)

    def to_dict(self) -> dict[str, Any]:
        """Plain data (YAML / JSON), as a config file spells it: what recipe.json, checkpoints and model files hold."""
        return {"model": self.model.to_dict(), **{k: getattr(self, k) for k in rules_of(TrainConfig)}}

    @classmethod
    def from_dict(cls, d: Any, source: str = "config") -> TrainConfig:
        """Every key checked (unknown or missing ones refused with ConfigError naming them)."""
        checked = check_config(d, source)
        return cls(model=ModelSettings(**checked.pop("model")), **checked)

    @classmethod
    def from_record(cls, d: dict[str, Any]) -> TrainConfig | None:
        """The training record of a model file (None when it has none): settings newer than the file take the
        value their absence meant (RECORD_DEFAULTS); keys this spiketok does not know are left out."""
        if not d:
            return None
        return cls.from_dict({**RECORD_DEFAULTS, **{k: v for k, v in d.items() if k in TRAIN_RULES}}, "train record")

    def set(self, dotted: str, value: Any) -> TrainConfig:
        """A copy with one setting (`lr`, `model.window`, `model` as a block or size name) changed and checked."""
        rule_for(dotted, value)
        top, _, key = dotted.partition(".")
        if key:
            return replace(self, model=replace(self.model, **{key: value}))
        if top == "model":
            return replace(self, model=value if isinstance(value, ModelSettings) else ModelSettings.from_dict(value))
        return replace(self, **{top: value})

    def get(self, dotted: str) -> Any:
        """The value of one setting (`lr`, `model.window`)."""
        top, _, key = dotted.partition(".")
        return getattr(getattr(self, top), key) if key else getattr(self, top)


TRAIN_RULES: dict[str, Rule | dict[str, Rule]] = {"model": MODEL_RULES, **rules_of(TrainConfig)}
# settings newer than some model files' training records: what a record without them meant
RECORD_DEFAULTS = {"init": None, "init_lr_factor": AUTO, "init_unit_id_restarts": 3, "ema": None, "patience": None}


@dataclass
class AdaptConfig:
    """Settings of an adaptation run; None means "as in the pretraining run" (model.meta.train)."""

    max_steps: int = setting(POSITIVE_INT, 300)  # per stage, with early stopping on the held-out part
    fixed_steps: int = setting(POSITIVE_INT, 100)  # per stage, when too little data to hold any out
    batch_size: int = setting(POSITIVE_INT, 16)
    eval_every: int = setting(POSITIVE_INT, 10)  # steps between validation checks
    patience: int = setting(POSITIVE_INT, 5)  # checks without improvement before stopping
    lr_unit_id: float = setting(Rule(float, low=0), 1e-2)  # new unit/session embeddings (and a new readout)
    # every weight in the finetune stage; None: a tenth of the pretraining lr
    lr_finetune: float | None = setting(Rule(float, low=0, null=True), None)
    lr_finetune_vocab: float = setting(Rule(float, low=0), 1e-3)  # the new embeddings in the finetune stage
    lr_scratch: float | None = setting(Rule(float, low=0, null=True), None)  # None: the pretraining lr
    # on weight matrices (finetune, scratch); None: the pretraining value
    weight_decay: float | None = setting(Rule(float, low=0, null=True), None)
    # of the adaptation trials (or seconds) held out for early stopping
    valid_fraction: float = setting(Rule(float, low=0, high=1, low_open=True, high_open=True), 0.2)
    # With fewer trials (seconds) nothing is held out and each stage runs `fixed_steps` steps on all of
    # them: on Mihi with 10 trials, early stopping on 2 held-out trials gave unit-id R² 0.60, fixed steps 0.73.
    min_valid_trials: int = setting(Rule(int, low=0), 20)
    min_valid_seconds: float = setting(Rule(float, low=0), 10.0)
    # Unit dropout (pretraining's augmentation) hurts few-shot adaptation: Mihi, 10 trials, unit-id R² 0.55
    # with it, 0.73 without. None: as in pretraining.
    unit_dropout: bool | None = setting(Rule(bool, null=True), False)
    # scratch: None = the recipe's steps (as `spiketok train`), early stopped
    scratch_max_steps: int | None = setting(Rule(int, low=1, null=True), None)
    # new unit rows start at the mean known row ("mean") or random ("random")
    unit_init: str = setting(Rule(str, choices=("mean", "random")), "mean")
    # weight of the model's pooled target statistics; 0: the new data's alone
    norm_prior_seconds: float = setting(Rule(float, low=0), 30.0)

    @classmethod
    def from_overrides(cls, overrides: list[str]) -> AdaptConfig:
        """Settings from key=value strings (values parsed as YAML), e.g. ["max_steps=100"], each checked against
        its rule (type and range; ConfigError names the key, the value and what is allowed)."""
        import yaml

        values = {}
        for item in overrides:
            key, sep, value = item.partition("=")
            key = key.strip()
            if not sep or key not in ADAPT_RULES:
                raise ConfigError(
                    f"adaptation setting {item!r}: expected key=value with key one of {sorted(ADAPT_RULES)}"
                )
            try:
                parsed = yaml.safe_load(value)
            except yaml.YAMLError:
                raise ConfigError(f"adaptation setting {item!r}: not a YAML value") from None
            values[key] = check_adapt_setting(key, parsed)
        return cls(**values)

    @classmethod
    def from_record(cls, d: dict[str, Any]) -> AdaptConfig:
        """The settings an adaptation record holds (keys this spiketok does not know left out)."""
        return cls(**{k: v for k, v in d.items() if k in ADAPT_RULES})


# `spiketok adapt` / `fewshot` key=value settings
ADAPT_RULES: dict[str, Rule] = rules_of(AdaptConfig)


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
