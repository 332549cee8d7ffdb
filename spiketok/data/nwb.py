"""Read NWB 2 files (pynwb) into a Session, repairing what real files get wrong and reporting it.

What `read_nwb` does, in order:
- units: spike times from the `units` table; each unit's times sorted if out of order, exact repeats
  within a unit removed; units left with no spikes dropped.
- behaviour: `TimeSeries`/`SpatialSeries` under `processing` or `acquisition` (also inside `Position`,
  `BehavioralTimeSeries`, ... containers). Samples whose timestamp is NaN or not above every earlier
  one are dropped; samples with NaN/inf values get weight 0 (and value 0).
- span: with behaviour, spikes outside [first, last] of the behaviour and trials, padded by 1 s, are dropped.
- trials table (all scalar columns) and train/valid/test splits (`make_splits`).

The clean-up every reader shares (sorting, span, masking, splits) and its report are in `cleanup`.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from . import preprocess as pp
from .cleanup import PrepareReport, RawRecording, ReadOptions, build_session, select_signals, signals_to_behavior
from .session import Behavior, DataError, Intervals, Session
from .storage import FORMAT as PREPARED_FORMAT

_NOT_BEHAVIOR = {
    "ElectricalSeries",
    "SpikeEventSeries",
    "ImageSeries",
    "ImageMaskSeries",
    "OpticalSeries",
    "TwoPhotonSeries",
    "OnePhotonSeries",
    "RoiResponseSeries",
    "IndexSeries",
}
_NAME_COLUMNS = ("unit_name", "unit_id", "name")


def _check_file(path: Path) -> None:
    """Raise a clear DataError unless `path` is an HDF5 file with NWB structure that opens."""
    if not path.is_file():
        raise DataError(f"{path}: no such file; give the path of an NWB 2 file (.nwb)")
    if not h5py.is_hdf5(path):
        raise DataError(f"{path}: not an NWB file (not HDF5 at all); give an NWB 2 file written by pynwb or MatNWB")
    try:
        with h5py.File(path, "r") as f:
            attrs = dict(f.attrs)
    except OSError as e:
        raise DataError(
            f"{path}: the HDF5 file cannot be opened ({e}); it is probably truncated or corrupt: "
            "copy or download it again"
        ) from e
    if attrs.get("format") == PREPARED_FORMAT:
        raise DataError(f"{path}: this is a prepared spiketok session, not NWB; use it as it is")
    if "nwb_version" not in attrs:
        raise DataError(
            f"{path}: HDF5 file without NWB structure (no 'nwb_version' attribute); "
            "convert the recording to NWB 2 first"
        )


def _walk(obj: Any, path: str) -> Iterator[tuple[str, Any]]:
    from pynwb import TimeSeries

    if isinstance(obj, TimeSeries):
        if not any(c.__name__ in _NOT_BEHAVIOR for c in type(obj).__mro__):
            yield path, obj
        return
    for attr in ("data_interfaces", "spatial_series", "time_series"):
        children = getattr(obj, attr, None)
        if isinstance(children, dict):
            for name, child in children.items():
                yield from _walk(child, f"{path}/{name}")


def _all_series(nwb: Any) -> dict[str, Any]:
    """Behaviour-like series by path: `<module>/<container>/<name>` or `acquisition/<name>`."""
    out: dict[str, Any] = {}
    for mname, module in nwb.processing.items():
        out.update(_walk(module, mname))
    for name, obj in nwb.acquisition.items():
        out.update(_walk(obj, f"acquisition/{name}"))
    return out


def _describe(series: dict[str, Any]) -> str:
    if not series:
        return "none"
    return "; ".join(f"{p.rsplit('/', 1)[-1]} ({p}, {type(s).__name__}, unit {s.unit})" for p, s in series.items())


def _match(name: str, series: dict[str, Any], file: Path) -> str | None:
    name = name.strip().strip("/")
    if name.startswith("processing/"):
        name = name[len("processing/") :]
    if name in series:
        return name
    hits = [p for p in series if p.rsplit("/", 1)[-1] == name]
    if len(hits) > 1:
        raise DataError(f"{file}: behaviour name {name!r} is ambiguous: {', '.join(hits)}; give the full path")
    return hits[0] if hits else None


def _select(series: dict[str, Any], behavior: list[str] | None, file: Path) -> list[str]:
    """Paths of the requested series; each entry may be 'a,b': the first that exists is used."""
    return select_signals(
        series, behavior, file, lambda name: _match(name, series, file), _describe(series), "read_nwb"
    )


def _read_units(nwb: Any, file: Path) -> tuple[list[str], np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """Unit names, all spike times (unit after unit), spikes per unit, per-unit metadata columns."""
    units = nwb.units
    if units is None or len(units) == 0:
        raise DataError(
            f"{file}: no units table (NWB `units` with `spike_times`): the file holds no sorted "
            "spikes; spike-sort the recording and add the units to the file"
        )
    if "spike_times" not in units.colnames:
        raise DataError(f"{file}: the units table has no `spike_times` column; add spike times per unit")
    st = units["spike_times"]
    ends = np.asarray(st.data[:], dtype=np.int64)
    times = np.asarray(st.target.data[:], dtype=np.float64)
    counts = np.diff(np.concatenate([[0], ends]))
    n = len(counts)
    names = [str(i) for i in units.id[:]]
    for col in _NAME_COLUMNS:
        if col in units.colnames:
            vals = _column(units[col], n)
            if vals is not None and len(set(map(str, vals))) == n:
                names = [str(v) for v in vals]
                break
    meta: dict[str, np.ndarray] = {}
    for col in units.colnames:
        if col in ("spike_times", "obs_intervals", "waveforms", "waveform_mean", "waveform_sd") + _NAME_COLUMNS:
            continue
        vals = _column(units[col], n)
        if vals is not None:
            meta[col] = vals
    if (
        "electrodes" in meta
        and nwb.electrodes is not None
        and "location" in nwb.electrodes.colnames
        and "location" not in meta
    ):
        loc = _column(nwb.electrodes["location"], len(nwb.electrodes))
        if loc is not None:
            meta["location"] = loc[meta["electrodes"].astype(int)]
    return names, times, counts, meta


def _column(col: Any, n: int) -> np.ndarray | None:
    """A table column as a 1-D array of n numbers or strings; None when it is not that simple."""
    from hdmf.common import DynamicTableRegion, VectorIndex

    if isinstance(col, VectorIndex):  # ragged: keep it only when every row holds exactly one value
        ends = np.asarray(col.data[:])
        if len(ends) != n or np.any(np.diff(np.concatenate([[0], ends])) != 1):
            return None
        col = col.target
    data = col.data[:] if not isinstance(col, DynamicTableRegion) else np.asarray(col.data[:], dtype=np.int64)
    if isinstance(data, np.ndarray) and data.dtype.kind in "biuf" and data.ndim == 1 and len(data) == n:
        return data
    vals = list(data)
    if len(vals) != n:
        return None
    out = []
    for v in vals:
        if isinstance(v, bytes):
            v = v.decode("utf-8", "replace")
        elif not isinstance(v, (str, int, float, np.generic)):
            v = getattr(v, "name", None)
            if v is None:
                return None
        out.append(str(v))
    return np.array(out, dtype=object)


def _read_trials(nwb: Any) -> Intervals | None:
    trials = nwb.trials
    if trials is None or len(trials) == 0:
        return None
    n = len(trials)
    cols = {}
    for col in trials.colnames:
        if col in ("start_time", "stop_time"):
            continue
        vals = _column(trials[col], n)
        if vals is not None:
            cols[col] = vals
    return Intervals(np.asarray(trials["start_time"].data[:]), np.asarray(trials["stop_time"].data[:]), cols)


def _read_series(path: str, s: Any, report: PrepareReport) -> tuple[np.ndarray, np.ndarray]:
    """Timestamps (T,) and raw values (T, D), with non-increasing timestamps dropped."""
    values = np.asarray(s.data[:], dtype=np.float64)
    values = values.reshape(len(values), -1)
    conversion = float(getattr(s, "conversion", 1.0) or 1.0)
    offset = float(getattr(s, "offset", 0.0) or 0.0)
    if conversion != 1.0 or offset != 0.0:
        values = values * conversion + offset
    if s.timestamps is not None:
        ts = np.asarray(s.timestamps[:], dtype=np.float64).reshape(-1)
    elif s.rate:
        ts = float(s.starting_time or 0.0) + np.arange(len(values)) / float(s.rate)
    else:
        raise DataError(f"behaviour {path}: neither timestamps nor a sampling rate; add one to the file")
    if len(ts) != len(values):
        raise DataError(f"behaviour {path}: {len(ts)} timestamps but {len(values)} samples; fix the file")
    keep = pp.increasing_mask(ts)
    if not keep.all():
        report.dropped_timestamps[s.name] = int((~keep).sum())
        ts, values = ts[keep], values[keep]
    if len(ts) == 0:
        raise DataError(f"behaviour {path}: no samples with usable timestamps")
    return ts, values


def _read_behavior(
    nwb: Any,
    file: Path,
    options: ReadOptions,
    report: PrepareReport,
) -> dict[str, Behavior]:
    from pynwb.behavior import SpatialSeries

    series = _all_series(nwb)
    raw: dict[str, tuple[np.ndarray, np.ndarray, str, bool]] = {}
    for path in _select(series, options.behavior, file):
        s = series[path]
        if s.name in raw:
            raise DataError(f"two selected behaviour signals are both named {s.name!r}; select only one")
        ts, values = _read_series(path, s, report)
        raw[s.name] = (ts, values, str(s.unit or ""), isinstance(s, SpatialSeries))
        finite = values[np.all(np.isfinite(values), axis=1)]
        if len(finite) > 1 and np.all(finite == finite[0]):
            report.notes.append(
                f"warning: {s.name}: every sample is {finite[0].tolist()}: the signal is constant "
                "(probably missing in the source); anything derived from it is meaningless"
            )
        report.behavior[s.name] = path
    return signals_to_behavior(raw, options.derive, options.keep_moving, report)


def _meta(nwb: Any, file: Path) -> dict[str, str]:
    meta = {
        "source_file": file.name,
        "identifier": nwb.identifier,
        "session_description": nwb.session_description,
        "session_start_time": str(nwb.session_start_time),
    }
    subject = nwb.subject
    if subject is not None:
        meta["subject"] = subject.subject_id
        meta["species"] = subject.species
    meta["lab"] = nwb.lab
    meta["institution"] = nwb.institution
    return {k: str(v) for k, v in meta.items() if v}


def _convert(
    nwb: Any,
    file: Path,
    options: ReadOptions,
) -> tuple[Session, PrepareReport]:
    report = PrepareReport(file=str(file), session_id=options.session_id or file.stem)
    raw = RawRecording(
        *_read_units(nwb, file),
        behavior=_read_behavior(nwb, file, options, report),
        trials=_read_trials(nwb),
        meta=_meta(nwb, file),
    )
    return build_session(raw, report, options), report


def _open(file: Path) -> tuple[Any, Any]:
    """(io, nwbfile) for a checked NWB file; any pynwb failure becomes a DataError."""
    from pynwb import NWBHDF5IO

    _check_file(file)
    io = None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            io = NWBHDF5IO(str(file), "r")
            return io, io.read()
    except Exception as e:
        if io is not None:
            io.close()
        raise DataError(
            f"{file}: pynwb cannot read this file ({type(e).__name__}: {e}); it may be truncated, "
            "corrupt or not NWB 2: re-export or copy it again"
        ) from e


def behavior_signals(path: str | Path) -> list[str]:
    """Paths of every behaviour-like series in an NWB file (as accepted by `read_nwb(behavior=...)`)."""
    file = Path(path)
    io, nwb = _open(file)
    try:
        return list(_all_series(nwb))
    finally:
        io.close()


def read_nwb(
    path: str | Path,
    options: ReadOptions = ReadOptions(),
) -> tuple[Session, PrepareReport]:
    """Read an NWB 2 file into a Session (cleaned, with splits, as `options` say) and a report of what was
    dropped; positions are SpatialSeries."""
    file = Path(path)
    io, nwb = _open(file)
    try:
        return _convert(nwb, file, options)
    except DataError as e:
        msg = str(e)
        raise DataError(msg if msg.startswith(str(file)) else f"{file}: {msg}") from e
    except (OSError, KeyError) as e:
        raise DataError(
            f"{file}: reading failed ({type(e).__name__}: {e}); the file may be truncated or "
            "corrupt: copy or export it again"
        ) from e
    finally:
        io.close()
