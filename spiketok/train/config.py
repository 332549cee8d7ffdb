"""Training configs: shipped YAML presets, user YAML files, and key=value overrides."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import yaml

PRESETS = ("tiny", "poyo-1.3M", "poyo-11.8M")


def preset_path(name: str) -> Path:
    return Path(str(resources.files("spiketok.train") / "configs" / f"{name}.yaml"))


def load_config(source: str | Path | None = "tiny", overrides: list[str] | None = None) -> dict:
    """Read a preset name or a YAML file (a user file may name a preset under `base:`), then apply overrides."""
    source = "tiny" if source is None else source
    if str(source) in PRESETS:
        cfg = yaml.safe_load(preset_path(str(source)).read_text())
    else:
        path = Path(source)
        if not path.exists():
            raise FileNotFoundError(f"config {source!r}: not a file and not a preset ({', '.join(PRESETS)})")
        user = yaml.safe_load(path.read_text()) or {}
        cfg = load_config(user.pop("base", "tiny"))
        _merge(cfg, user)
    for item in overrides or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"override {item!r} is not key=value")
        _set(cfg, key.strip(), yaml.safe_load(value))
    return cfg


def _merge(base: dict, new: dict) -> None:
    for k, v in new.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            _merge(base[k], v)
        else:
            base[k] = v


def _set(cfg: dict, dotted: str, value) -> None:
    keys = dotted.split(".")
    node = cfg
    for k in keys[:-1]:
        node = node.setdefault(k, {})
    if keys[-1] not in node and len(keys) == 1:
        raise KeyError(f"unknown config key {dotted!r}; known: {sorted(cfg)}")
    node[keys[-1]] = value
