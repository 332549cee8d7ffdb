"""In-memory data model of one recording session: spikes, units, behaviour (intervals: spiketok.data.intervals)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from .intervals import DataError, Intervals


@dataclass
class Behavior:
    """A sampled behaviour signal: timestamps (T,), values (T, D), per-sample weights (T,)."""

    name: str
    timestamps: np.ndarray
    values: np.ndarray
    unit: str = ""
    dims: list[str] = field(default_factory=list)
    weights: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.timestamps = np.asarray(self.timestamps, dtype=np.float64).reshape(-1)
        values = np.asarray(self.values, dtype=np.float32)
        if values.ndim == 1:
            values = values[:, None]
        self.values = values
        if len(self.values) != len(self.timestamps):
            raise DataError(f"behaviour {self.name!r}: {len(self.timestamps)} timestamps but {len(self.values)} values")
        if not self.dims:
            self.dims = [f"{self.name}_{i}" for i in range(self.values.shape[1])]
        if self.weights is None:
            self.weights = np.ones(len(self.timestamps), dtype=np.float32)
        self.weights = np.asarray(self.weights, dtype=np.float32).reshape(-1)

    @property
    def dim(self) -> int:
        return int(self.values.shape[1])


@dataclass
class Window:
    """What a session holds in [t0, t1), with times relative to t0."""

    t0: float
    t1: float
    spike_times: np.ndarray  # (n_spikes,) float64, seconds from t0
    spike_units: np.ndarray  # (n_spikes,) int, index into the session's units
    behavior: dict[str, Behavior]

    @property
    def length(self) -> float:
        return self.t1 - self.t0


class SessionLike(Protocol):
    """What every session offers, in memory (`Session`) or in a file (`storage.StoredSession`).

    Subclasses inherit the unit and duration helpers below; callers never need to know which they hold.
    """

    id: str
    unit_names: list[str]
    start: float
    end: float
    splits: dict[str, Intervals]
    trials: Intervals | None

    @property
    def behavior_names(self) -> list[str]:
        """Names of the session's behaviour signals."""
        ...

    def behavior(self, name: str) -> Behavior:
        """The whole behaviour signal `name` (absolute times)."""
        ...

    def slice(self, t0: float, t1: float, behavior: list[str] | None = None) -> Window:
        """Spikes and behaviour (the signals named in `behavior`, default all) in [t0, t1), times relative to t0."""
        ...

    @property
    def unit_ids(self) -> list[str]:
        """Unit ids unique across sessions: `<session_id>/<unit_name>`."""
        return [f"{self.id}/{n}" for n in self.unit_names]

    @property
    def n_units(self) -> int:
        return len(self.unit_names)

    @property
    def duration(self) -> float:
        return float(self.end - self.start)


@dataclass
class Session(SessionLike):
    """One recording: sorted spikes with a unit index each, units, behaviour, trials, splits."""

    id: str
    spike_times: np.ndarray
    spike_units: np.ndarray
    unit_names: list[str]
    behaviors: dict[str, Behavior] = field(default_factory=dict)
    trials: Intervals | None = None
    splits: dict[str, Intervals] = field(default_factory=dict)
    unit_meta: dict[str, np.ndarray] = field(default_factory=dict)
    meta: dict[str, str] = field(default_factory=dict)
    start: float | None = None
    end: float | None = None

    def __post_init__(self) -> None:
        if "/" in self.id or not self.id:
            raise DataError(f"session id {self.id!r} must be non-empty and contain no '/'")
        self.spike_times = np.asarray(self.spike_times, dtype=np.float64).reshape(-1)
        self.spike_units = np.asarray(self.spike_units, dtype=np.int32).reshape(-1)
        if self.spike_times.shape != self.spike_units.shape:
            raise DataError("session: spike_times and spike_units differ in length")
        if len(self.spike_times) and np.any(np.diff(self.spike_times) < 0):
            raise DataError(f"session {self.id}: spike times must be sorted (use Session.from_unit_spikes)")
        if len(self.spike_units) and (self.spike_units.min() < 0 or self.spike_units.max() >= len(self.unit_names)):
            raise DataError(f"session {self.id}: a spike's unit index is outside the units table")
        if len(set(self.unit_names)) != len(self.unit_names):
            raise DataError(f"session {self.id}: unit names are not unique")
        if self.start is None:
            self.start = self._span()[0]
        if self.end is None:
            self.end = self._span()[1]

    def _span(self) -> tuple[float, float]:
        times = [self.spike_times] + [b.timestamps for b in self.behaviors.values()]
        times = [t for t in times if len(t)]
        if not times:
            return 0.0, 0.0
        return float(min(t[0] for t in times)), float(max(t[-1] for t in times))

    @classmethod
    def from_unit_spikes(cls, id: str, spikes: dict[str, np.ndarray], **kwargs) -> Session:
        """Build from one array of spike times per unit name; sorts them into one stream."""
        names = list(spikes)
        times = np.concatenate([np.asarray(spikes[n], dtype=np.float64) for n in names]) if names else np.zeros(0)
        units = (
            np.concatenate([np.full(len(spikes[n]), i, dtype=np.int32) for i, n in enumerate(names)])
            if names
            else np.zeros(0, np.int32)
        )
        order = np.argsort(times, kind="stable")
        return cls(id=id, spike_times=times[order], spike_units=units[order], unit_names=names, **kwargs)

    @classmethod
    def from_pynapple(
        cls,
        tsgroup: Any,
        behavior: Any = None,
        id: str = "pynapple",
        name: str = "behavior",
        unit: str = "",
        trials: Any = None,
        splits: dict[str, Any] | None = None,
        split_method: str = "interleaved",
        split_seed: int = 0,
    ) -> Session:
        """Build from pynapple objects (pynapple is imported only here: an optional dependency).

        tsgroup: a `TsGroup`, one `Ts` per unit; its keys become unit names, its metadata columns other
          than `rate` unit metadata. behavior: a `Tsd` (T,) or `TsdFrame` (T, D) named `name` (dims
          `<name>_<column>`), or a dict {name: Tsd | TsdFrame}; NaN samples get weight 0. trials: an
          `IntervalSet` (with its metadata columns). splits: {"train", "valid", "test"} IntervalSets, else
          `make_splits` as `spiketok prepare` does (whole trials when given, else time blocks).
        """
        import pynapple as nap

        from .splits import make_splits

        if not isinstance(tsgroup, nap.TsGroup):
            raise DataError(f"from_pynapple: tsgroup must be a pynapple TsGroup, got {type(tsgroup).__name__}")
        keys = list(tsgroup.keys())
        spikes = {str(k): np.asarray(tsgroup[k].t, dtype=np.float64) for k in keys}
        unit_meta = {
            col: np.asarray(tsgroup.get_info(col).loc[keys].values)
            for col in getattr(tsgroup, "metadata_columns", [])
            if col != "rate"
        }
        unit_meta = {k: (v.astype(str).astype(object) if v.dtype.kind in "OUS" else v) for k, v in unit_meta.items()}
        signals = behavior if isinstance(behavior, dict) else ({} if behavior is None else {name: behavior})
        beh: dict[str, Behavior] = {}
        for bname, tsd in signals.items():
            if not isinstance(tsd, (nap.Tsd, nap.TsdFrame)):
                raise DataError(
                    f"from_pynapple: behaviour {bname!r} must be a pynapple Tsd or TsdFrame, got {type(tsd).__name__}"
                )
            values = np.asarray(tsd.values, dtype=np.float64).reshape(len(tsd), -1)
            dims = [f"{bname}_{c}" for c in tsd.columns] if isinstance(tsd, nap.TsdFrame) else []
            bad = ~np.all(np.isfinite(values), axis=1)
            beh[bname] = Behavior(
                bname,
                np.asarray(tsd.t, dtype=np.float64),
                np.where(bad[:, None], 0.0, values),
                unit,
                dims,
                (~bad).astype(np.float32),
            )
        trial_iv = _intervals_from_pynapple(trials) if trials is not None else None
        session = cls.from_unit_spikes(
            id, spikes, behaviors=beh, trials=trial_iv, unit_meta=unit_meta, meta={"source_format": "pynapple"}
        )
        if trial_iv is not None:
            session.start = min(session.start, float(trial_iv.start.min()))
            session.end = max(session.end, float(trial_iv.end.max()))
        if splits is not None:
            session.splits = {k: _intervals_from_pynapple(v) for k, v in splits.items()}
        else:
            scored = np.concatenate([b.timestamps[b.weights > 0] for b in beh.values()]) if beh else None
            session.splits = make_splits(
                session.start, session.end, trial_iv, method=split_method, seed=split_seed, scored_times=scored
            )
        return session

    @property
    def n_spikes(self) -> int:
        return len(self.spike_times)

    @property
    def behavior_names(self) -> list[str]:
        return list(self.behaviors)

    def behavior(self, name: str) -> Behavior:
        """The whole behaviour signal `name`."""
        return self.behaviors[name]

    def slice(self, t0: float, t1: float, behavior: list[str] | None = None) -> Window:
        """Spikes and behaviour (the signals named in `behavior`, default all) in [t0, t1), times relative to t0."""
        lo, hi = np.searchsorted(self.spike_times, [t0, t1], side="left")
        beh = {}
        for name in self.behaviors if behavior is None else behavior:
            b = self.behaviors[name]
            blo, bhi = np.searchsorted(b.timestamps, [t0, t1], side="left")
            beh[name] = Behavior(
                name, b.timestamps[blo:bhi] - t0, b.values[blo:bhi], b.unit, b.dims, b.weights[blo:bhi]
            )
        return Window(t0, t1, self.spike_times[lo:hi] - t0, self.spike_units[lo:hi], beh)


def _intervals_from_pynapple(iv: Any) -> Intervals:
    """A pynapple IntervalSet as Intervals, with its 1-D metadata columns (pynapple >= 0.8 has them)."""
    cols = {}
    for col in getattr(iv, "metadata_columns", []):
        v = np.asarray(iv.get_info(col))
        cols[col] = v.astype(str).astype(object) if v.dtype.kind in "OUS" else v
    return Intervals(np.asarray(iv.start, dtype=np.float64), np.asarray(iv.end, dtype=np.float64), cols)
