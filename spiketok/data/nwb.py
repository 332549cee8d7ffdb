"""Read NWB 2 files (pynwb) into a Session, repairing what real files get wrong and reporting it.

What `read_nwb` does, in order:
- units: spike times from the `units` table; each unit's times sorted if out of order, exact repeats
  within a unit removed; units left with no spikes dropped.
- behaviour: `TimeSeries`/`SpatialSeries` under `processing` or `acquisition` (also inside `Position`,
  `BehavioralTimeSeries`, ... containers). Samples whose timestamp is NaN or not above every earlier
  one are dropped; samples with NaN/inf values get weight 0 (and value 0).
- span: with behaviour, spikes outside [first, last] of the behaviour and trials, padded by 1 s, are dropped.
- trials table (all scalar columns) and train/valid/test splits (`make_splits`).
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator

import h5py
import numpy as np

from . import preprocess as pp
from .session import Behavior, DataError, Intervals, Session
from .splits import make_splits
from .storage import FORMAT as PREPARED_FORMAT

SPAN_PAD = 1.0  # seconds of padding around the behaviour/trial extent that spikes may fall in
_NOT_BEHAVIOR = {"ElectricalSeries", "SpikeEventSeries", "ImageSeries", "ImageMaskSeries", "OpticalSeries",
                 "TwoPhotonSeries", "OnePhotonSeries", "RoiResponseSeries", "IndexSeries"}
_NAME_COLUMNS = ("unit_name", "unit_id", "name")


@dataclass
class PrepareReport:
    """What reading one NWB file did and dropped."""

    file: str
    session_id: str
    n_units_in: int = 0
    n_spikes_in: int = 0
    n_units: int = 0
    n_spikes: int = 0
    dropped_units: list[str] = field(default_factory=list)  # no spikes (left)
    unsorted_units: list[str] = field(default_factory=list)  # spike times were out of order, now sorted
    duplicate_spikes: int = 0  # exact repeats within a unit, removed
    outside_span: int = 0  # spikes outside the span, removed
    span: tuple[float, float] | None = None
    behavior: dict[str, str] = field(default_factory=dict)  # session name -> NWB path (or "derived from X")
    dropped_timestamps: dict[str, int] = field(default_factory=dict)  # non-increasing or NaN timestamps
    masked_samples: dict[str, int] = field(default_factory=dict)  # NaN/inf values, weight 0
    moving_threshold: float | None = None
    moving_unit: str = ""
    moving_left_out: dict[str, float] = field(default_factory=dict)  # fraction of samples given weight 0
    notes: list[str] = field(default_factory=list)

    @property
    def dropped_spikes(self) -> int:
        return self.duplicate_spikes + self.outside_span

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def lines(self) -> list[str]:
        """Human-readable summary, one fact per line."""
        out = [f"read {self.n_units_in} units, {self.n_spikes_in} spikes; kept {self.n_units} units, "
               f"{self.n_spikes} spikes"]
        if self.dropped_units:
            out.append(f"dropped {len(self.dropped_units)} units with no spikes: {_names(self.dropped_units)}")
        if self.unsorted_units:
            out.append(f"sorted the spike times of {len(self.unsorted_units)} units that were out of order: "
                       f"{_names(self.unsorted_units)}")
        if self.duplicate_spikes:
            out.append(f"removed {self.duplicate_spikes} duplicated spikes (same unit, same time)")
        if self.outside_span:
            out.append(f"dropped {self.outside_span} spikes outside the recorded span "
                       f"[{self.span[0]:.3f}, {self.span[1]:.3f}] s")
        for name, src in self.behavior.items():
            out.append(f"behaviour {name} <- {src}")
        for name, n in self.dropped_timestamps.items():
            out.append(f"{name}: dropped {n} samples with non-increasing or NaN timestamps")
        for name, n in self.masked_samples.items():
            out.append(f"{name}: masked {n} samples with NaN/inf values (weight 0)")
        for name, frac in self.moving_left_out.items():
            out.append(f"{name}: moving filter (> {self.moving_threshold:g} {self.moving_unit} over 1 s) left out "
                       f"{100 * frac:.1f}% of samples (weight 0)")
        out.extend(self.notes)
        return out


def _names(names: list[str], limit: int = 12) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names) - limit} more)" if len(names) > limit else "")


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
        raise DataError(f"{path}: the HDF5 file cannot be opened ({e}); it is probably truncated or corrupt: "
                        "copy or download it again") from e
    if attrs.get("format") == PREPARED_FORMAT:
        raise DataError(f"{path}: this is a prepared spiketok session, not NWB; use it as it is")
    if "nwb_version" not in attrs:
        raise DataError(f"{path}: HDF5 file without NWB structure (no 'nwb_version' attribute); "
                        "convert the recording to NWB 2 first")


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
        name = name[len("processing/"):]
    if name in series:
        return name
    hits = [p for p in series if p.rsplit("/", 1)[-1] == name]
    if len(hits) > 1:
        raise DataError(f"{file}: behaviour name {name!r} is ambiguous: {', '.join(hits)}; give the full path")
    return hits[0] if hits else None


def _select(series: dict[str, Any], behavior: list[str] | None, file: Path) -> list[str]:
    """Paths of the requested series; each entry may be 'a,b': the first that exists is used."""
    if behavior is None:
        if len(series) > 1:
            raise DataError(f"{file}: {len(series)} behaviour signals found: {_describe(series)}; "
                            "choose with --behavior NAME (read_nwb(behavior=[...]))")
        return list(series)
    chosen: list[str] = []
    for entry in behavior:
        alternatives = [a for a in entry.split(",") if a.strip()]
        found = next((p for p in (_match(a, series, file) for a in alternatives) if p), None)
        if found is None:
            raise DataError(f"{file}: no behaviour signal named {entry!r}; available: {_describe(series)}; "
                            "pass one of these names with --behavior")
        if found not in chosen:
            chosen.append(found)
    return chosen


def _read_units(nwb: Any, file: Path) -> tuple[list[str], np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """Unit names, all spike times (unit after unit), spikes per unit, per-unit metadata columns."""
    units = nwb.units
    if units is None or len(units) == 0:
        raise DataError(f"{file}: no units table (NWB `units` with `spike_times`): the file holds no sorted "
                        "spikes; spike-sort the recording and add the units to the file")
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
    if "electrodes" in meta and nwb.electrodes is not None and "location" in nwb.electrodes.colnames \
            and "location" not in meta:
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


def _dims(name: str, d: int, spatial: bool) -> list[str]:
    if spatial and d <= 3:
        return [f"{name}_{a}" for a in "xyz"[:d]]
    return [f"{name}_{i}" for i in range(d)]


def _finish(name: str, ts: np.ndarray, values: np.ndarray, unit: str, dims: list[str], weights: np.ndarray,
            report: PrepareReport) -> Behavior:
    """Mask NaN/inf samples (weight 0, value 0) and build the Behavior."""
    bad = ~np.all(np.isfinite(values), axis=1)
    if bad.any():
        report.masked_samples[name] = int(bad.sum())
        values = np.where(bad[:, None], 0.0, values)
        weights = np.where(bad, 0.0, weights)
    return Behavior(name, ts, values, unit, dims, weights)


def _read_behavior(nwb: Any, file: Path, behavior: list[str] | None, derive: str | None,
                   keep_moving: float | None, report: PrepareReport) -> dict[str, Behavior]:
    from pynwb.behavior import SpatialSeries

    series = _all_series(nwb)
    raw: dict[str, tuple[np.ndarray, np.ndarray, str, bool]] = {}
    for path in _select(series, behavior, file):
        s = series[path]
        if s.name in raw:
            raise DataError(f"two selected behaviour signals are both named {s.name!r}; select only one")
        ts, values = _read_series(path, s, report)
        raw[s.name] = (ts, values, str(s.unit or ""), isinstance(s, SpatialSeries))
        finite = values[np.all(np.isfinite(values), axis=1)]
        if len(finite) > 1 and np.all(finite == finite[0]):
            report.notes.append(f"warning: {s.name}: every sample is {finite[0].tolist()}: the signal is constant "
                                "(probably missing in the source); anything derived from it is meaningless")
        report.behavior[s.name] = path
    return signals_to_behavior(raw, derive, keep_moving, report)


def signals_to_behavior(raw: dict[str, tuple[np.ndarray, np.ndarray, str, bool]], derive: str | None,
                        keep_moving: float | None, report: PrepareReport) -> dict[str, Behavior]:
    """Behaviours from raw signals {name: (timestamps (T,), values (T, D), unit, is_position)}.

    Applies the moving filter and the velocity derivation to the position signals and masks NaN/inf
    samples (weight 0); any reader (NWB, temporaldata) hands its selected signals through here.
    """
    positions = [n for n, r in raw.items() if r[3]]
    if (derive or keep_moving is not None) and not positions:
        what = "derive='velocity'" if derive else "keep_moving"
        raise DataError(f"{what} needs a position signal (a SpatialSeries, e.g. hand or led), but the selected "
                        f"behaviour ({', '.join(raw) or 'none'}) holds none; select a position with --behavior")
    moving: dict[str, np.ndarray] = {}
    if keep_moving is not None:
        report.moving_threshold = float(keep_moving)
        report.moving_unit = raw[positions[0]][2]
        for n in positions:
            ts, values = raw[n][:2]
            moving[n] = pp.moving_mask(ts, values, keep_moving)
            report.moving_left_out[n] = float(1.0 - moving[n].mean())
    out: dict[str, Behavior] = {}
    for n, (ts, values, unit, spatial) in raw.items():
        w = moving.get(n, np.ones(len(ts))).astype(np.float64)
        out[n] = _finish(n, ts, values, unit, _dims(n, values.shape[1], spatial), w, report)
    if derive is not None:
        if derive != "velocity":
            raise DataError(f"derive={derive!r}: only 'velocity' is supported")
        for n in positions:
            ts, values, unit, _ = raw[n]
            vname = f"{n}_velocity"
            if vname in out:
                raise DataError(f"the derived signal {vname!r} clashes with a selected signal of that name; "
                                f"select either {n!r} with --derive velocity or {vname!r}, not both")
            w = moving.get(n, np.ones(len(ts))).astype(np.float64)
            dims = [f"{d}_velocity" for d in out[n].dims]
            out[vname] = _finish(vname, ts, pp.velocity(ts, values), f"{unit}/s" if unit else "1/s", dims, w, report)
            report.behavior[vname] = f"derived from {n} (central differences per contiguous segment)"
    return out


def _meta(nwb: Any, file: Path) -> dict[str, str]:
    meta = {"source_file": file.name, "identifier": nwb.identifier, "session_description": nwb.session_description,
            "session_start_time": str(nwb.session_start_time)}
    subject = nwb.subject
    if subject is not None:
        meta["subject"] = subject.subject_id
        meta["species"] = subject.species
    meta["lab"] = nwb.lab
    meta["institution"] = nwb.institution
    return {k: str(v) for k, v in meta.items() if v}


def _convert(nwb: Any, file: Path, behavior: list[str] | None, derive: str | None, session_id: str | None,
             split_method: str, split_seed: int, keep_moving: float | None) -> tuple[Session, PrepareReport]:
    sid = session_id or file.stem
    report = PrepareReport(file=str(file), session_id=sid)
    names, times, counts, unit_meta = _read_units(nwb, file)
    report.n_units_in, report.n_spikes_in = len(names), len(times)
    beh = _read_behavior(nwb, file, behavior, derive, keep_moving, report)
    trials = _read_trials(nwb)
    session = build_session(sid, names, times, counts, unit_meta, beh, trials, _meta(nwb, file), report,
                            split_method, split_seed)
    return session, report


def build_session(sid: str, names: list[str], times: np.ndarray, counts: np.ndarray,
                  unit_meta: dict[str, np.ndarray], beh: dict[str, Behavior], trials: Intervals | None,
                  meta: dict[str, str], report: PrepareReport, split_method: str = "blocks", split_seed: int = 0,
                  splits: dict[str, Intervals] | None = None) -> Session:
    """A cleaned Session from one reader's units (spike times unit after unit, `counts` per unit).

    Sorts and de-duplicates each unit's spikes, drops spikes outside the behaviour/trial span (padded by
    SPAN_PAD) and units left empty, and splits with `make_splits` unless `splits` are given (e.g. a file's own).
    """
    times, units, unsorted, n_dup = pp.clean_unit_spikes(times, counts)
    report.unsorted_units = [names[i] for i in np.flatnonzero(unsorted)]
    report.duplicate_spikes = int(n_dup.sum())
    if beh:
        lo = min(float(b.timestamps[0]) for b in beh.values())
        hi = max(float(b.timestamps[-1]) for b in beh.values())
        if trials is not None:
            lo, hi = min(lo, float(trials.start.min())), max(hi, float(trials.end.max()))
        report.span = (lo - SPAN_PAD, hi + SPAN_PAD)
        inside = (times >= report.span[0]) & (times <= report.span[1])
        report.outside_span = int((~inside).sum())
        times, units = times[inside], units[inside]

    keep = np.bincount(units, minlength=len(names)) > 0
    report.dropped_units = [n for n, k in zip(names, keep) if not k]
    if not keep.any():
        raise DataError("no spikes left (every unit is empty or its spikes lie outside the behaviour span)")
    new_index = np.cumsum(keep) - 1
    units = new_index[units].astype(np.int32)
    names = [n for n, k in zip(names, keep) if k]
    unit_meta = {k: v[keep] for k, v in unit_meta.items()}
    order = np.argsort(times, kind="stable")
    times, units = times[order], units[order]

    starts = [times[0]] + [b.timestamps[0] for b in beh.values()] + ([trials.start.min()] if trials is not None else [])
    ends = [times[-1]] + [b.timestamps[-1] for b in beh.values()] + ([trials.end.max()] if trials is not None else [])
    start, end = float(min(starts)), float(max(ends))
    if splits is None:
        scored = np.concatenate([b.timestamps[b.weights > 0] for b in beh.values()]) if beh else None
        splits = make_splits(start, end, trials, method=split_method, seed=split_seed, scored_times=scored)
    else:
        start = min([start] + [float(iv.start.min()) for iv in splits.values() if len(iv)])
        end = max([end] + [float(iv.end.max()) for iv in splits.values() if len(iv)])
    session = Session(id=sid, spike_times=times, spike_units=units, unit_names=names, behavior=beh, trials=trials,
                      splits=splits, unit_meta=unit_meta, meta=meta, start=start, end=end)
    report.n_units, report.n_spikes = session.n_units, session.n_spikes
    return session


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
        raise DataError(f"{file}: pynwb cannot read this file ({type(e).__name__}: {e}); it may be truncated, "
                        "corrupt or not NWB 2: re-export or copy it again") from e


def behavior_signals(path: str | Path) -> list[str]:
    """Paths of every behaviour-like series in an NWB file (as accepted by `read_nwb(behavior=...)`)."""
    file = Path(path)
    io, nwb = _open(file)
    try:
        return list(_all_series(nwb))
    finally:
        io.close()


def read_nwb(path: str | Path, behavior: list[str] | None = None, derive: str | None = None,
             session_id: str | None = None, split_method: str = "blocks", split_seed: int = 0,
             keep_moving: float | None = None) -> tuple[Session, PrepareReport]:
    """Read an NWB 2 file into a Session (cleaned, with splits) and a report of what was dropped.

    behavior: series names (`hand_velocity`, `led`) or paths (`behavior/Position/hand`), each taken;
      an entry "a,b" takes the first of a, b that exists. None: the only series, error when several; []: none.
    derive="velocity": adds `<name>_velocity` for each selected position (SpatialSeries): np.gradient
      against the timestamps (central differences, one-sided at ends) per contiguous segment, never
      across gaps over 5 sample periods; samples it cannot compute get weight 0.
    keep_moving=PX: weight 0 on the position samples (and their derived velocity) where
      |pos(t + 0.5 s) - pos(t - 0.5 s)| <= PX; the report gives the fraction left out.
    """
    file = Path(path)
    io, nwb = _open(file)
    try:
        return _convert(nwb, file, behavior, derive, session_id, split_method, split_seed, keep_moving)
    except DataError as e:
        msg = str(e)
        raise DataError(msg if msg.startswith(str(file)) else f"{file}: {msg}") from e
    except (OSError, KeyError) as e:
        raise DataError(f"{file}: reading failed ({type(e).__name__}: {e}); the file may be truncated or "
                        "corrupt: copy or export it again") from e
    finally:
        io.close()
