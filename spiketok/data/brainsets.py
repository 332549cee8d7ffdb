"""Read brainsets / temporaldata session files (HDF5 written by `temporaldata.Data.to_hdf5`) into a Session.

Every group of such a file carries an `object` attribute (Data, IrregularTimeSeries, RegularTimeSeries,
Interval, ArrayDict); the file is opened with temporaldata's own lazy loader, so only the arrays used
are read. What `read_temporaldata` takes:
- spikes: `spikes.timestamps` and `spikes.unit_index` (IrregularTimeSeries); units: `units.id`
  (ArrayDict), with the other 1-D unit columns as unit metadata.
- behaviour: each numeric field of an IrregularTimeSeries / RegularTimeSeries other than spikes,
  named `<group>_<field>` (`cursor.vel` -> `cursor_vel`, `hand.pos` -> `hand_pos`; nested Data groups
  join with `_` too). Fields named `pos`/`position` count as positions (`--derive velocity`, `--keep-moving`).
- trials: the `trials` Interval with its 1-D columns.
- splits: `train_domain` / `valid_domain` / `test_domain` (brainsets' own splits) when all three are
  present and non-empty, else `make_splits` as for NWB files.
Spikes and behaviour then go through the same cleaning as NWB files (`cleanup.build_session`).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from .cleanup import PrepareReport, RawRecording, ReadOptions, build_session, select_signals, signals_to_behavior
from .session import DataError, Intervals, Session

DOMAINS = {"train": "train_domain", "valid": "valid_domain", "test": "test_domain"}
_NOT_SIGNALS = {"timestamps", "unit_index", "domain"}
_POSITION_FIELDS = ("pos", "position")
_META_GROUPS = ("brainset", "session", "subject", "device")


def _text(v: Any) -> str:
    return v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)


def _open(file: Path) -> tuple[h5py.File, Any]:
    """(h5py file, lazily loaded temporaldata.Data); any failure becomes a DataError."""
    try:
        from temporaldata import Data
    except ImportError as e:
        raise DataError(
            f"{file}: reading brainsets/temporaldata files needs the `temporaldata` package: "
            "pip install 'spiketok[brainsets]' (or pip install temporaldata)"
        ) from e
    try:
        f = h5py.File(file, "r")
    except OSError as e:
        raise DataError(f"{file}: the HDF5 file cannot be opened ({e}); it is probably truncated or corrupt") from e
    try:
        return f, Data.from_hdf5(f, lazy=True)
    except Exception as e:
        f.close()
        raise DataError(
            f"{file}: temporaldata cannot read this file ({type(e).__name__}: {e}); it may be "
            "truncated or written by an incompatible temporaldata version"
        ) from e


def _stored(obj: Any, key: str) -> Any:
    """A field without loading it: the h5py dataset of a lazy object (or the array when already loaded)."""
    return vars(obj).get(key)


def _walk(data: Any, prefix: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    """(path, time series) for every IrregularTimeSeries / RegularTimeSeries below `data`."""
    from temporaldata import Data, IrregularTimeSeries, RegularTimeSeries

    for key in data.keys():
        value = getattr(data, key)
        if isinstance(value, Data):
            yield from _walk(value, prefix + (key,))
        elif isinstance(value, (IrregularTimeSeries, RegularTimeSeries)):
            yield prefix + (key,), value


def _signals(data: Any) -> dict[str, tuple[Any, str, str]]:
    """Behaviour candidates: name -> (time series, field, dotted path), numeric fields with one row per sample."""
    out: dict[str, tuple[Any, str, str]] = {}
    for path, ts in _walk(data):
        if path == ("spikes",) or _stored(ts, "unit_index") is not None:
            continue  # spike trains, not behaviour
        n = len(ts)
        for field in ts.keys():
            arr = _stored(ts, field)
            if field in _NOT_SIGNALS or arr is None or arr.dtype.kind not in "biuf":
                continue
            if arr.ndim not in (1, 2) or arr.shape[0] != n:
                continue
            out["_".join(path + (field,))] = (ts, field, ".".join(path + (field,)))
    return out


def _describe(signals: dict[str, tuple[Any, str, str]]) -> str:
    return (
        ", ".join(
            f"{name} ({_stored(ts, f).shape[1] if _stored(ts, f).ndim == 2 else 1}-D)"
            for name, (ts, f, _) in signals.items()
        )
        or "none"
    )


def _select(signals: dict[str, tuple[Any, str, str]], behavior: list[str] | None, file: Path) -> list[str]:
    """Names of the requested signals; an entry may be `cursor_vel`, `cursor.vel` or 'a,b' (first that exists)."""
    if not signals and behavior != []:
        raise DataError(
            f"{file}: no behaviour in this temporaldata file (no numeric field of an "
            "IrregularTimeSeries or RegularTimeSeries other than spikes, e.g. cursor.vel); "
            "add the behaviour to decode to the session"
        )

    def match(name: str) -> str | None:
        key = name.replace(".", "_").replace("/", "_")
        return key if key in signals else None

    return select_signals(signals, behavior, file, match, _describe(signals), "read_temporaldata")


def _timestamps(ts: Any) -> tuple[np.ndarray, np.ndarray]:
    """Sample times (T,) and a mask of real samples (False: fill values in the gaps of a gappy RegularTimeSeries)."""
    t = np.asarray(ts.timestamps, dtype=np.float64).reshape(-1)
    real = np.asarray(ts.index_mask(), dtype=bool) if hasattr(ts, "index_mask") else np.ones(len(t), bool)
    return t, real


def _read_behavior(
    data: Any,
    file: Path,
    options: ReadOptions,
    report: PrepareReport,
) -> dict:
    from . import preprocess as pp

    signals = _signals(data)
    raw: dict[str, tuple[np.ndarray, np.ndarray, str, bool]] = {}
    for name in _select(signals, options.behavior, file):
        ts, field, dotted = signals[name]
        t, real = _timestamps(ts)
        values = np.asarray(getattr(ts, field), dtype=np.float64)
        values = values.reshape(len(values), -1)
        t, values = t[real], values[real]
        keep = pp.increasing_mask(t)
        if not keep.all():
            report.dropped_timestamps[name] = int((~keep).sum())
            t, values = t[keep], values[keep]
        if len(t) == 0:
            raise DataError(f"behaviour {dotted}: no samples with usable timestamps")
        raw[name] = (t, values, "", field in _POSITION_FIELDS)
        report.behavior[name] = dotted
    beh = signals_to_behavior(raw, options.derive, options.keep_moving, report)
    for name, b in beh.items():  # x, y, z names for 2-3 D kinematics (pos, vel, acc)
        if b.dim <= 3 and b.dims == [f"{name}_{i}" for i in range(b.dim)]:
            b.dims = [f"{name}_{a}" for a in "xyz"[: b.dim]]
    return beh


def _read_units(data: Any, file: Path) -> tuple[list[str], np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """Unit names, spike times unit after unit, spikes per unit, per-unit metadata columns."""
    spikes = getattr(data, "spikes", None) if "spikes" in data.keys() else None
    if spikes is None or _stored(spikes, "timestamps") is None or _stored(spikes, "unit_index") is None:
        raise DataError(
            f"{file}: no spikes in this temporaldata file (an IrregularTimeSeries `spikes` with "
            "`timestamps` and `unit_index`); it holds: "
            f"{', '.join(data.keys()) or 'nothing'}"
        )
    times = np.asarray(spikes.timestamps, dtype=np.float64).reshape(-1)
    index = np.asarray(spikes.unit_index).reshape(-1)
    if len(times) != len(index):
        raise DataError(f"{file}: spikes has {len(times)} timestamps but {len(index)} unit_index values")
    n = int(index.max()) + 1 if len(index) else 0
    meta: dict[str, np.ndarray] = {}
    if "units" in data.keys() and _stored(data.units, "id") is not None:
        units = data.units
        names = [_text(v) for v in np.asarray(units.id).reshape(-1)]
        if len(set(names)) != len(names):
            raise DataError(f"{file}: units.id holds repeated ids; unit ids must be unique")
        for key in units.keys():
            arr = _stored(units, key)
            if key != "id" and arr is not None and arr.ndim == 1 and arr.shape[0] == len(names):
                v = np.asarray(getattr(units, key))
                meta[key] = v.astype(object) if v.dtype.kind in "SU" else v
    else:
        names = [str(i) for i in range(n)]
    if len(index) and (index.min() < 0 or n > len(names)):
        raise DataError(f"{file}: spikes.unit_index goes up to {n - 1} but units.id lists {len(names)} units")
    order = np.argsort(index, kind="stable")  # unit after unit, each unit's spikes in file order
    counts = np.bincount(index, minlength=len(names)) if len(index) else np.zeros(len(names), np.int64)
    return names, times[order], counts, meta


def _intervals(iv: Any) -> Intervals | None:
    """An Interval as Intervals with its 1-D columns (numbers, booleans, strings); None when empty."""
    start = np.asarray(iv.start, dtype=np.float64).reshape(-1)
    if len(start) == 0:
        return None
    cols = {}
    for key in iv.keys():
        arr = _stored(iv, key)
        if key in ("start", "end") or arr is None or arr.ndim != 1 or arr.shape[0] != len(start):
            continue
        v = np.asarray(getattr(iv, key))
        if v.dtype.kind in "biuf":
            cols[key] = v
        elif v.dtype.kind in "SUO":
            cols[key] = np.array([_text(x) for x in v], dtype=object)
    return Intervals(start, np.asarray(iv.end, dtype=np.float64).reshape(-1), cols)


def _domains(data: Any, report: PrepareReport) -> dict[str, Intervals] | None:
    """The file's own splits from train/valid/test_domain, or None (with a note) when they are incomplete."""
    present = {name: key for name, key in DOMAINS.items() if key in data.keys()}
    if not present:
        return None
    splits = {name: _intervals(getattr(data, key)) for name, key in present.items()}
    missing = [DOMAINS[n] for n in DOMAINS if splits.get(n) is None]
    if missing:
        report.notes.append(f"splits: {', '.join(missing)} missing or empty in the file; split with --split instead")
        return None
    for name, iv in splits.items():
        order = np.argsort(iv.start)
        splits[name] = iv.select(order)
    report.notes.append("splits: train_domain, valid_domain and test_domain of the file")
    return splits


def _meta(data: Any, file: Path) -> dict[str, str]:
    """Source file and the scalar attributes of the brainset/session/subject/device groups (`session_id` ...)."""
    meta = {"source_file": file.name, "source_format": "temporaldata"}
    for group in _META_GROUPS:
        if group in data.keys():
            value = getattr(data, group)
            for key, v in vars(value).items():
                if not key.startswith("_") and isinstance(v, (str, bytes, int, float, np.generic)):
                    meta[f"{group}_{key}"] = _text(v)
    return meta


def temporaldata_signals(path: str | Path) -> list[str]:
    """Names of every behaviour signal in a temporaldata file (as accepted by `read_temporaldata(behavior=...)`)."""
    f, data = _open(Path(path))
    with f:  # h5py closes the file on leaving
        return list(_signals(data))


def read_temporaldata(
    path: str | Path,
    options: ReadOptions = ReadOptions(),
) -> tuple[Session, PrepareReport]:
    """Read a brainsets / temporaldata session file into a Session (cleaned, with splits) and a report.

    `options` as for `read_nwb`; behaviour names are `<group>_<field>` (`cursor_vel`, also accepted as
    `cursor.vel`). The file's train/valid/test domains, when all present, are the splits
    (`split_method` and `split_seed` are then unused).
    """
    file = Path(path)
    if not file.is_file():
        raise DataError(f"{file}: no such file")
    f, data = _open(file)
    report = PrepareReport(file=str(file), session_id=options.session_id or file.stem)
    try:
        raw = RawRecording(
            *_read_units(data, file),
            behavior=_read_behavior(data, file, options, report),
            trials=_intervals(data.trials) if "trials" in data.keys() else None,
            meta=_meta(data, file),
            splits=_domains(data, report),
        )
        return build_session(raw, report, options), report
    except DataError as e:
        msg = str(e)
        raise DataError(msg if msg.startswith(str(file)) else f"{file}: {msg}") from e
    except (OSError, KeyError, AttributeError) as e:
        raise DataError(
            f"{file}: reading failed ({type(e).__name__}: {e}); the file may be truncated or not a temporaldata session"
        ) from e
    finally:
        f.close()
