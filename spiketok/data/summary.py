"""What `spiketok info` reports about a file: units, spikes, rates, behaviour, trials and splits, as a dict.

An NWB or brainsets (temporaldata) file is read as `prepare` would read it, with its cleaning report; a prepared
session file is read as it is. A file that is neither raises DataError.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import h5py
import numpy as np

from .readers import ReadOptions, file_kind, read_recording, recording_signals
from .session import Behavior, DataError, Intervals
from .storage import StoredSession


def _intervals(iv: Intervals | None) -> dict[str, Any]:
    if iv is None:
        return {"count": 0, "duration_s": 0.0, "columns": []}
    return {"count": len(iv), "duration_s": iv.duration, "columns": list(iv.columns)}


def _behavior(b: Behavior) -> dict[str, Any]:
    return {
        "n_samples": int(len(b.timestamps)),
        "dim": int(b.values.shape[1]),
        "unit": b.unit,
        "dims": list(b.dims),
        "masked_fraction": float(np.mean(b.weights == 0)) if len(b.weights) else 0.0,
    }


def _summary(
    kind: str,
    path: Path,
    sid: str,
    counts: np.ndarray,
    duration: float,
    behavior: dict[str, dict[str, Any]],
    trials: Intervals | None,
    splits: dict[str, Intervals],
    meta: dict[str, str],
) -> dict[str, Any]:
    rates = counts / duration if duration > 0 else np.zeros(len(counts))
    return {
        "path": str(path),
        "kind": kind,
        "session_id": sid,
        "n_units": int(len(counts)),
        "n_spikes": int(counts.sum()),
        "duration_s": float(duration),
        "mean_rate_hz": float(rates.mean()) if len(rates) else 0.0,
        "median_rate_hz": float(np.median(rates)) if len(rates) else 0.0,
        "behavior": behavior,
        "trials": _intervals(trials),
        "splits": {name: {"count": len(iv), "duration_s": iv.duration} for name, iv in splits.items()},
        "meta": meta,
    }


def _prepared(path: Path) -> dict[str, Any]:
    s = StoredSession(path)
    try:
        beh = {name: _behavior(s.behavior(name)) for name in s.behavior_info}
        return _summary("prepared", path, s.id, s.unit_spike_counts(), s.duration, beh, s.trials, s.splits, s.meta)
    finally:
        s.close()


def _recording(path: Path, kind: str) -> dict[str, Any]:
    session, report = read_recording(path, ReadOptions(behavior=recording_signals(path)))
    beh = {n: _behavior(b) for n, b in session.behaviors.items()}
    counts = np.bincount(session.spike_units, minlength=session.n_units)
    d = _summary(kind, path, session.id, counts, session.duration, beh, session.trials, session.splits, session.meta)
    d["report"] = report.to_dict()
    d["report_lines"] = report.lines()
    return d


def summarise_file(path: str | Path) -> dict[str, Any]:
    """The summary of an NWB file, a brainsets file or a prepared session (DataError for any other file)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    if not h5py.is_hdf5(path):
        raise DataError(f"{path}: neither an NWB file nor a prepared session (not HDF5)")
    try:
        with h5py.File(path, "r"):
            pass
    except OSError as e:
        raise DataError(f"{path}: the HDF5 file cannot be opened ({e}); it is probably truncated or corrupt") from e
    kind = file_kind(path)
    if kind == "prepared":
        return _prepared(path)
    if kind in ("nwb", "temporaldata"):
        return _recording(path, kind)
    raise DataError(
        f"{path}: HDF5 file that is neither NWB, nor temporaldata (brainsets), nor a prepared spiketok session"
    )
