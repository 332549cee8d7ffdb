"""Unit identification: learn only a new session's unit and session embeddings, every other weight frozen.

The new rows are appended to the vocabulary tables. The stage (spiketok.train.stage) masks the gradients of all
other rows to zero and the tables have no weight decay, so AdamW leaves the other sessions' rows exactly as they were.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..data.session import DataError
from ..data.storage import StoredSession
from ..model.normalize import adaptation_stats, prior_stats  # noqa: F401  (also imported from here)
from ..model.poyo import POYO


@dataclass
class NewRows:
    """Which rows and readouts a session added to a model."""

    unit_rows: torch.Tensor  # (n_new_units,) long, rows of model.unit_emb
    session_rows: torch.Tensor  # (1,) long, row of model.session_emb
    new_tasks: list[str]  # readouts created for this session (none when the task is known)


def register_new_session(
    model: POYO, session: StoredSession, target: str, stats: tuple[np.ndarray, np.ndarray]
) -> NewRows:
    """Append the session's units and id to the vocabularies, its readout if new, and its target statistics."""
    if session.id in model.session_emb.index:
        raise DataError(f"the model already knows session {session.id!r}; adapt it to a session it has not seen")
    known = [u for u in session.unit_ids if u in model.unit_emb.index]
    if known:
        raise DataError(f"{len(known)} unit(s) of {session.id!r} are already in the model (first: {known[0]!r})")
    new_tasks = [] if target in model.readouts else [target]
    model.unit_emb.extend(session.unit_ids)
    model.session_emb.extend([session.id])
    model.add_task(target, session.behavior_info[target]["dim"])
    model.normalizer.set(session.id, target, *stats)
    return NewRows(model.unit_emb.lookup(session.unit_ids), model.session_emb.lookup([session.id]), new_tasks)


def new_rows_only(rows: NewRows) -> dict[str, tuple[int, ...]]:
    """The vocabulary rows that may learn (a stage's `rows`): the new session's, in both tables."""
    return {
        "unit_emb.weight": tuple(int(r) for r in rows.unit_rows),
        "session_emb.weight": tuple(int(r) for r in rows.session_rows),
    }


def unit_id_parameters(model: POYO, rows: NewRows) -> tuple[str, ...]:
    """The parameters unit identification trains (a stage's `trainable`): the vocabulary tables (only their new
    rows get gradients) and the readout of a task new to the model."""
    readouts = [f"readouts.{t}.{name}" for t in rows.new_tasks for name, _ in model.readouts[t].named_parameters()]
    return ("unit_emb.weight", "session_emb.weight", *readouts)


def init_new_rows(model: POYO, rows: NewRows, units: str = "mean") -> None:
    """Start the new session row at the mean of the known sessions' rows (a neutral query), and the new
    unit rows at the mean known unit row plus a tenth of their random start (`units="mean"`), or leave
    the unit rows random (`units="random"`)."""
    for table, new, mode in (
        (model.unit_emb.weight, rows.unit_rows, units),
        (model.session_emb.weight, rows.session_rows, "mean"),
    ):
        old = torch.ones(table.shape[0], dtype=torch.bool)
        old[new] = False
        if mode == "random" or not old.any():
            continue
        with torch.no_grad():
            table[new] = table[old].mean(0, keepdim=True) + 0.1 * table[new]
