"""What `spiketok replay` runs: a model file or an exported graph, and a recording, opened, checked and streamed.

A checkpoint decodes the task the user asks for or the one it decodes for the session (POYO.target_for); an
exported graph decodes the one task it was exported for. Either streams the split the model recorded for
the session when it has one, else the file's.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..data.session import DataError, Intervals, SessionLike
from ..data.targets import TargetError
from ..errors import UserError
from ..evaluate.decode import require_window
from ..evaluate.predict import open_recording
from ..model.file import load_model_file
from ..model.poyo import POYO
from ..model.precision import PRECISIONS
from .exported import ExportedModel
from .replay import ReplayResult, replay


def stream_intervals(recorded: dict[str, list], session: SessionLike, split: str) -> Intervals | None:
    """The intervals to stream: `split` as the model recorded it for the session (`recorded`), else the file's;
    None for 'all' (the whole recording)."""
    if split == "all":
        return None
    if split in recorded:
        pairs = np.asarray(recorded[split], dtype=np.float64).reshape(-1, 2)
        return Intervals(pairs[:, 0], pairs[:, 1])
    if split in session.splits:
        return session.splits[split]
    raise DataError(
        f"session {session.id} has no {split!r} split (it has {sorted(set(recorded) | set(session.splits))}); "
        "use --split all to stream the whole recording"
    )


def check_stream_settings(model: POYO, incremental: bool | None, precision: str) -> None:
    """Raise UserError for settings the streaming decoder cannot run `model` with."""
    if precision != "auto" and precision not in PRECISIONS:
        raise UserError(f"precision={precision!r}: choose one of {', '.join(PRECISIONS)} or 'auto'")
    grid = model.config.latent_grid
    if incremental and grid != "absolute":
        raise UserError(
            f"--incremental needs a model with latent_grid='absolute' (this one has {grid!r}): its latents move with "
            "every decode, so no partial sum can be reused; train with model.latent_grid=absolute"
        )


def replay_file(
    path: str | Path,
    checkpoint: str | Path | None = None,
    exported: str | Path | None = None,
    split: str = "test",
    target: str | None = None,
    keep_moving: float | None = None,
    threads: int = 1,
    **replay_kw,
) -> ReplayResult:
    """Stream the recording in `path` through the model in `checkpoint`, or the graph `exported` (with its
    sidecar), on `threads` CPU threads; `replay_kw`: every, speed, limit, incremental, precision (see replay)."""
    torch.set_num_threads(threads)
    if exported is not None:
        model: POYO | ExportedModel = ExportedModel(exported, threads=threads)
        if target is not None and target != model.target:
            raise TargetError(f"--target {target}: the exported model decodes {model.target!r}")
        session, target = open_recording(path, None, model.target, keep_moving)
        recorded, window = model.meta.splits, model.window
    else:
        model = load_model_file(checkpoint)
        check_stream_settings(model, replay_kw.get("incremental"), replay_kw.get("precision", "float32"))
        session, target = open_recording(path, model, target, keep_moving)
        recorded, window = model.meta.splits, model.config.window
    require_window(session, window)
    intervals = stream_intervals(recorded.get(session.id, {}), session, split)
    return replay(model, session, intervals, target=target, **replay_kw)
