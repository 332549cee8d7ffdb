"""Training configs: shipped YAML presets, user YAML files, and key=value overrides, read into a TrainConfig.

Every config returned is checked against the typed schema of spiketok.schema (known keys at every
depth, types, ranges): a wrong setting raises ConfigError before anything runs.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import yaml

from ..schema import ConfigError, TrainConfig, check_setting

PRESETS = ("tiny", "poyo-1.3M", "poyo-11.8M")


def preset_path(name: str) -> Path:
    return Path(str(resources.files("spiketok.train") / "configs" / f"{name}.yaml"))


def _read_yaml(text: str, source: str):
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"{source}: not valid YAML ({' '.join(str(e).split())})") from None


def load_config(source: str | Path | None = "tiny", overrides: list[str] | None = None) -> TrainConfig:
    """Read a preset name or a YAML file (a user file may name a preset under `base:`), then apply overrides;
    the result is checked against the schema (ConfigError names the key, the value and what is allowed)."""
    source = "tiny" if source is None else source
    if str(source) in PRESETS:
        cfg = TrainConfig.from_dict(yaml.safe_load(preset_path(str(source)).read_text()), f"config {source}")
    else:
        path = Path(source)
        if not path.is_file():
            raise ConfigError(f"config {source!r}: not a file and not a preset ({', '.join(PRESETS)})")
        user = _read_yaml(path.read_text(), f"config {source}") or {}
        if not isinstance(user, dict):
            raise ConfigError(
                f"config {source}: a config is a mapping of settings (key: value), not {type(user).__name__}"
            )
        base = user.pop("base", "tiny")
        if str(base) not in PRESETS:
            raise ConfigError(f"config {source}: base={base} is not allowed: base takes one of {', '.join(PRESETS)}")
        merged = load_config(str(base)).to_dict()
        for key, value in user.items():
            check_setting(str(key), value)  # an unknown key is named as the file spells it
        _merge(merged, user)
        cfg = TrainConfig.from_dict(merged, f"config {source}")
    for item in overrides or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {item!r} is not key=value (e.g. max_steps=500)")
        key = key.strip()
        cfg = cfg.set(key, check_setting(key, _read_yaml(value, f"override {item!r}")))
    return cfg


def _merge(base: dict, new: dict) -> None:
    for k, v in new.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            _merge(base[k], v)
        else:
            base[k] = v
