"""Decoded behaviour out of spiketok: a new NWB file (pynwb) or a pynapple TsdFrame.

The NWB file is new (it never modifies the recording): the predictions are one `TimeSeries` in the
processing module "spiketok". It records its source instead of linking it with an HDF5 external
link, so it stays readable when the recording is moved or absent: the source's path, NWB identifier
and session id go into the file's `notes`, `session_id` and the series' description, with the model
file and its SHA-256. `session_start_time` is the source's when known, so times share its clock.
"""

from __future__ import annotations

import hashlib
import uuid
import warnings
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from ..data.atomic import atomic_write
from .decode import Decoded

MODULE = "spiketok"


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file's bytes (to record exactly which model file made the predictions)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _start_time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        t = datetime.fromisoformat(text)
    except ValueError:
        return None
    return t if t.tzinfo else t.replace(tzinfo=timezone.utc)


def _models_text(models: list[Path]) -> str:
    """The checkpoints that decoded, with their sha256 (so a reader can tell which files they were)."""
    named = ", ".join(f"{m} (sha256 {file_sha256(m)})" for m in models)
    return f"the spiketok model {named}" if len(models) == 1 else f"the average of the spiketok models {named}"


def write_predictions_nwb(
    path: str | Path,
    timestamps: np.ndarray,
    values: np.ndarray,
    *,
    target: str,
    dims: list[str],
    unit: str,
    session_id: str,
    source: str | Path,
    model: str | Path | list[str | Path],
    source_meta: dict[str, str] | None = None,
) -> Path:
    """Write predictions (T, D) at `timestamps` (T,) seconds as TimeSeries `target` in a new NWB file.

    model: the checkpoint that decoded them, or the checkpoints whose predictions were averaged (an ensemble).
    source_meta: the session's meta (from `spiketok prepare` or a reader): its `identifier` and
    `session_start_time`, when present, are those of the source NWB file.
    """
    from pynwb import NWBHDF5IO, NWBFile, TimeSeries

    import spiketok

    path, source = Path(path), Path(source).resolve()
    models = [Path(m).resolve() for m in (model if isinstance(model, list) else [model])]
    meta = source_meta or {}
    source_id = meta.get("identifier", "")
    start = _start_time(meta.get("session_start_time"))
    source_text = f"{source} (session {session_id}" + (f", NWB identifier {source_id})" if source_id else ")")
    notes = f"Predictions decoded by spiketok {spiketok.__version__} from {source_text}."
    if start is None:
        notes += " The source gives no session start time: session_start_time is when this file was written."
    nwb = NWBFile(
        session_description=f"spiketok predictions of {target} for {source.name}",
        identifier=str(uuid.uuid4()),
        session_start_time=start or datetime.now(timezone.utc),
        session_id=session_id,
        notes=notes,
        source_script=f"spiketok predict {' '.join(map(str, models))} {source}",
        source_script_file_name="spiketok",
        was_generated_by=[("spiketok", spiketok.__version__)],
    )
    module = nwb.create_processing_module(MODULE, "behaviour decoded from spikes by a spiketok model")
    values = np.asarray(values, dtype=np.float32)
    module.add(
        TimeSeries(
            name=target,
            data=values.reshape(len(values), -1),
            timestamps=np.asarray(timestamps, dtype=np.float64),
            unit=unit or "unknown",
            description=(
                f"{target} decoded by " + _models_text(models) + f" from {source_text}; columns: {', '.join(dims)}"
            ),
            comments=f"columns: {', '.join(dims)}",
        )
    )
    with warnings.catch_warnings(), atomic_write(path) as tmp:  # a kill leaves the previous file whole
        warnings.simplefilter("ignore")
        with NWBHDF5IO(str(tmp), "w") as io:
            io.write(nwb)
    return path


def predictions_tsdframe(timestamps: np.ndarray, values: np.ndarray, columns: list[str]) -> Any:
    """Predictions (T, D) at `timestamps` (T,) seconds as a pynapple TsdFrame (pynapple imported here only)."""
    import pynapple as nap

    values = np.asarray(values)
    return nap.TsdFrame(
        t=np.asarray(timestamps, dtype=np.float64),
        d=values.reshape(len(values), -1),
        columns=list(columns),
        time_units="s",
    )


def to_tsdframe(decoded: Decoded) -> Any:
    """A `Decoded` (from `decode_split` / `evaluate`) as a pynapple TsdFrame of its predictions, one column per dim."""
    return predictions_tsdframe(decoded.timestamps, decoded.y_pred, decoded.dims)
