"""Decode a whole recording with a trained model and write the predictions (the `spiketok predict` command's work)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..data.atomic import atomic_write
from ..data.readers import file_kind, read_recording
from ..data.session import DataError, Intervals, Session, SessionLike
from ..data.storage import StoredSession
from ..model.poyo import POYO
from .decode import decode_times

OUTPUT_SUFFIXES = (".nwb", ".npz", ".csv")


def open_recording(
    path: str | Path, model: POYO, target: str | None = None, keep_moving: float | None = None
) -> tuple[Session | StoredSession, str]:
    """A recording to decode with `model`, and the behaviour task to decode.

    A prepared session file opens lazily; an NWB or temporaldata file is read with that behaviour when
    it has it (to score against; keep_moving as `prepare --keep-moving`), else with spikes only.
    target: default, what the model decodes for this session (see POYO.target_for).
    """
    if file_kind(path) == "prepared":
        session = StoredSession(path)
        return session, target or model.target_for(session.id, None)
    session, _ = read_recording(path, behavior=[])
    target = target or model.target_for(session.id, None)
    try:
        session, _ = read_recording(path, behavior=[target], keep_moving=keep_moving)
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
        raise ValueError(f"{out}: the output must end in .nwb, .npz or .csv")
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
