"""Adapt a trained model to a new session: unit identification, fine-tuning, or scratch; few-shot studies.

The package is callable: `spiketok.adapt(model, session, mode="unit-id", n_trials=10)` is
`spiketok.adapt.adapt(...)` (see `spiketok.adapt.run.adapt`).
"""

from __future__ import annotations

import sys
import types

from .data import AdaptationData, adaptation_data
from .embeddings import plot_unit_embeddings, project_unit_embeddings
from .fewshot import FewShotRun, few_shot_study, plot_study, read_runs, summarise, write_csv
from .run import MODES, AdaptConfig, adapt, finetune_adapted

__all__ = [
    "AdaptConfig",
    "AdaptationData",
    "FewShotRun",
    "MODES",
    "adapt",
    "adaptation_data",
    "few_shot_study",
    "finetune_adapted",
    "plot_study",
    "plot_unit_embeddings",
    "project_unit_embeddings",
    "read_runs",
    "summarise",
    "write_csv",
]


class _CallablePackage(types.ModuleType):
    """Importing `spiketok.adapt` makes it an attribute of `spiketok`; calling it runs `adapt`."""

    def __call__(self, *args, **kwargs):
        return adapt(*args, **kwargs)


sys.modules[__name__].__class__ = _CallablePackage
