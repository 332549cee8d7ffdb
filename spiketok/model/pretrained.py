"""Pretrained models that ship with spiketok, named `pretrained:NAME` wherever a model file is expected.

`spiketok.load("pretrained:primate-reaching")`, `spiketok adapt pretrained:primate-reaching new.h5 ...`: the
name resolves to a data-only model file inside the package (spiketok/model/weights/NAME.safetensors),
with its model card (NAME.md) beside it. A name a model was shipped under before resolves to what replaced it
(ALIASES).
"""

from __future__ import annotations

from pathlib import Path

from .meta import ModelFileError

PREFIX = "pretrained:"
FOLDER = Path(__file__).with_name("weights")
DEFAULT = "primate-reaching"  # the model to start a new primate recording from
ALIASES = {"m1-reaching": DEFAULT}  # m1-reaching (three macaque sessions) was replaced by the six-session model


def available() -> list[str]:
    """Names of the pretrained models in this installation."""
    return sorted(p.stem for p in FOLDER.glob("*.safetensors"))


def is_pretrained_name(path: str | Path) -> bool:
    return str(path).startswith(PREFIX)


def pretrained_path(name: str) -> Path:
    """The model file of pretrained model `name` (with or without the `pretrained:` prefix)."""
    name = name[len(PREFIX) :] if name.startswith(PREFIX) else name
    name = ALIASES.get(name, name)
    path = FOLDER / f"{name}.safetensors"
    if not path.is_file():
        have = ", ".join(PREFIX + n for n in available()) or "none"
        raise ModelFileError(f"no pretrained model named {name!r} (available: {have})")
    return path


def resolve_model_path(path: str | Path) -> Path:
    """`pretrained:NAME` -> the packaged file; any other path as it is."""
    return pretrained_path(str(path)) if is_pretrained_name(path) else Path(path)


def model_card(name: str) -> str:
    """The model card (markdown) of pretrained model `name`: data, settings, test R² per session, licences."""
    card = pretrained_path(name).with_suffix(".md")
    return card.read_text() if card.is_file() else f"(no model card for {name})"
