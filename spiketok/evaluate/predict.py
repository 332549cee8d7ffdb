"""Decode a whole recording with a trained model and write the predictions (the `spiketok predict` command's work)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..data.atomic import atomic_write
from ..data.readers import ReadOptions, file_kind, read_recording
from ..data.session import DataError, Intervals, Session, SessionLike
from ..data.storage import StoredSession
from ..data.targets import TargetError
from ..errors import UserError
from ..model.file import load_model_file
from ..model.poyo import POYO
from .decode import decode_times, require_task, require_window

OUTPUT_SUFFIXES = (".nwb", ".npz", ".csv")


def open_recording(
    path: str | Path, model: POYO | None, target: str | None = None, keep_moving: float | None = None
) -> tuple[Session | StoredSession, str]:
    """A recording to decode, and the behaviour task to decode in it.

    A prepared session file opens lazily; an NWB or temporaldata file is read with that behaviour when
    it has it (to score against; keep_moving as `prepare --keep-moving`), else with spikes only.
    target: a task of `model` (TargetError otherwise); default, what `model` decodes for this session
    (POYO.target_for). Without a model (an exported graph decodes one task) give the target.
    """
    if model is not None and target is not None:
        require_task(model, target)
    prepared = file_kind(path) == "prepared"
    session = StoredSession(path) if prepared else read_recording(path, ReadOptions(behavior=[]))[0]
    target = model.target_for(session.id, None) if target is None else target
    if prepared:
        return session, target
    try:
        session, _ = read_recording(path, ReadOptions(behavior=[target], keep_moving=keep_moving))
    except DataError:
        pass  # no such behaviour in the file: decode without scoring
    return session, target


def has_behavior(session: SessionLike, name: str) -> bool:
    return name in session.behavior_names


@dataclass
class Prediction:
    """Predictions (T, D) of a whole recording at `times` (T,), in the behaviour's own units."""

    session: str
    target: str
    times: np.ndarray  # (T,) seconds, the recording's clock
    values: np.ndarray  # (T, D)
    covered: np.ndarray  # (T,) whether a window held each time
    dims: list[str]  # column names: <target>_0, <target>_1, ...
    recorded_dims: list[str] | None  # the recorded behaviour's dimension names, None when the file lacks it
    unit: str  # the recorded behaviour's unit, "" when the file lacks it


def predict_recording(
    model: POYO | list[POYO], session: SessionLike, target: str, rate: float = 100.0, progress: bool = False
) -> Prediction:
    """Decode the whole recording: at the behaviour's own samples when it has `target`, else every 1/rate s.

    Several models (an ensemble, as `train --ensemble` makes): their predictions are averaged, and a time
    counts as covered only where every model covered it (as `evaluate` scores an ensemble)."""
    models = model if isinstance(model, list) else [model]
    known = session.behavior(target) if has_behavior(session, target) else None
    times = known.timestamps if known is not None else np.arange(session.start, session.end, 1.0 / rate)
    span = Intervals([session.start], [session.end + 1e-6])
    runs = [decode_times(m, session, target, span, times, progress=progress) for m in models]
    values = np.mean([v for v, _ in runs], axis=0)
    covered = np.all([c for _, c in runs], axis=0)
    dims = [f"{target}_{k}" for k in range(values.shape[1])]
    if known is None:
        return Prediction(session.id, target, times, values, covered, dims, None, "")
    return Prediction(session.id, target, times, values, covered, dims, list(known.dims), known.unit)


def predict_file(
    checkpoints: Sequence[str | Path], path: str | Path, out: str | Path, rate: float = 100.0, progress: bool = False
) -> Prediction:
    """Decode the recording in `path` with the models in `checkpoints` (several: an ensemble, which must decode the
    behaviour the first one decodes for this recording) and write the predictions to `out` (write_prediction)."""
    models = [load_model_file(c) for c in checkpoints]
    session, target = open_recording(path, models[0])
    require_window(session, max(m.config.window for m in models))
    for c, m in zip(checkpoints[1:], models[1:]):
        if target not in m.task_names:
            raise TargetError(
                f"{c} does not decode {target!r} (it decodes {', '.join(m.task_names)}), which {checkpoints[0]} "
                f"decodes for this recording; an ensemble's models must decode the same behaviour"
            )
    pred = predict_recording(models if len(models) > 1 else models[0], session, target, rate, progress)
    write_prediction(pred, out, source=path, model_path=list(checkpoints), source_meta=session.meta)
    return pred


def write_prediction(
    p: Prediction,
    out: str | Path,
    source: str | Path,
    model_path: str | Path | list[str | Path],
    source_meta: dict | None = None,
) -> Path:
    """Write predictions as .npz, .csv, or .nwb (a new NWB file: a TimeSeries in processing module 'spiketok')."""
    out = Path(out)
    if out.suffix not in OUTPUT_SUFFIXES:
        raise UserError(f"{out}: the output must end in .nwb, .npz or .csv")
    if out.suffix == ".nwb":  # (written atomically: a temporary file renamed, so a kill leaves the old file whole)
        from .export import write_predictions_nwb

        write_predictions_nwb(
            out,
            p.times,
            p.values,
            target=p.target,
            dims=p.recorded_dims or p.dims,
            unit=p.unit,
            session_id=p.session,
            source=source,
            model=model_path,
            source_meta=source_meta,
        )
        return out
    with atomic_write(out) as tmp:
        if out.suffix == ".npz":
            with open(tmp, "wb") as f:  # a file object: np.savez would add .npz to the temporary name
                np.savez(
                    f,
                    timestamps=p.times,
                    predictions=p.values,
                    dims=np.array(p.dims),
                    session=p.session,
                    target=p.target,
                )
        else:
            header = "timestamp," + ",".join(p.dims)
            np.savetxt(tmp, np.column_stack([p.times, p.values]), delimiter=",", header=header, comments="", fmt="%.6f")
    return out
