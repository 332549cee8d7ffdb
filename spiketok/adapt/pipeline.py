"""What `spiketok train` runs: the settings and the sessions read and checked, then the run from its start
(scratch, a given model, or both under init: auto; spiketok.train.start) and the ensemble's other members.

Every wrong input raises one of spiketok's errors before anything trains, where it can be known then; a run
folder this call made is removed again when training stops on bad input, so a failed call leaves nothing.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..data.storage import SessionDataset
from ..errors import SpiketokError, UserError
from ..model.file import load_model_file
from ..train.config import load_config
from ..train.ensemble import train_members
from ..train.run import TrainResult
from .start import train_with_start
from .transfer import lr_factors, unit_id_restarts

RANK_VARIABLES = ("RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID")


def launched_as_rank_zero() -> bool:
    """Whether this process is the first of a launch (torchrun or SLURM set these before Lightning starts)."""
    return all(os.environ.get(k, "0") == "0" for k in RANK_VARIABLES)


@dataclass
class TrainingRun:
    """The model a `train` call kept, then the ensemble's other members (none without --ensemble)."""

    first: TrainResult
    members: list[TrainResult]

    @property
    def models(self) -> list[TrainResult]:
        return [self.first, *self.members]


def train_sessions(
    data: Sequence[str | Path],
    out: str | Path,
    config: str | Path = "tiny",
    overrides: Sequence[str] = (),
    init: str | Path | None = None,
    ensemble: int = 1,
    resume: bool = False,
    on_start: Callable[[SessionDataset, dict], None] | None = None,
    **trainer_kw,
) -> TrainingRun:
    """Train one model on the prepared sessions in `data` into `out` (and `ensemble` - 1 more, other seeds).

    `on_start(dataset, config)` is called on the first process once the inputs are checked, before training.
    """
    cfg = load_config(config, list(overrides))
    dataset = SessionDataset([Path(p) for p in data])
    if ensemble > 1 and init is not None:
        raise UserError("--ensemble trains its models from scratch; it does not combine with --init")
    if init is not None:
        lr_factors(cfg)  # a bad init_lr_factor or init_unit_id_restarts: ConfigError now, not after unit identification
        unit_id_restarts(cfg)
        load_model_file(init)  # a missing or damaged model file: ModelFileError before anything trains
    out = Path(out)
    fresh = not out.exists()
    first_process = launched_as_rank_zero()
    if on_start is not None and first_process:
        on_start(dataset, cfg)
    kw = dict(trainer_kw, resume=resume)
    try:
        first = train_with_start(dataset, cfg, out, init=init, ensemble=ensemble, **kw)
        members = train_members(dataset, cfg, first, ensemble, **kw) if ensemble > 1 else []
    except SpiketokError:
        if fresh and first_process:
            shutil.rmtree(out, ignore_errors=True)
        raise
    return TrainingRun(first, members)
