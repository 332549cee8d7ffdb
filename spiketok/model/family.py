"""Which model class a config builds: POYO (backbone "perceiver") or RecurrentPOYO (backbone "recurrent")."""

from __future__ import annotations

from collections.abc import Sequence

from .config import ModelConfig
from .poyo import POYO
from .recurrent import RecurrentPOYO


def model_class(config: ModelConfig) -> type[POYO]:
    """The class of a model with this config."""
    return RecurrentPOYO if config.backbone == "recurrent" else POYO


def new_model(
    config: ModelConfig,
    unit_ids: Sequence[str] = (),
    session_ids: Sequence[str] = (),
    tasks: dict[str, int] | None = None,
) -> POYO:
    """A fresh model of the class its config names (see `model_class`)."""
    return model_class(config)(config, unit_ids, session_ids, tasks)
