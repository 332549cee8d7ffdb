"""In-memory data model of one recording session: spikes, units, behaviour, intervals."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


class DataError(ValueError):
    """Bad input data, with a message that names the file, the field and what to do."""


@dataclass
class Intervals:
    """Half-open time intervals [start, end) in seconds, with optional per-interval columns."""

    start: np.ndarray
    end: np.ndarray
    columns: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.start = np.asarray(self.start, dtype=np.float64).reshape(-1)
        self.end = np.asarray(self.end, dtype=np.float64).reshape(-1)
        if self.start.shape != self.end.shape:
            raise DataError(f"intervals: start has {len(self.start)} entries, end has {len(self.end)}")
        if np.any(self.end < self.start):
            raise DataError("intervals: some end before their start")

    def __len__(self) -> int:
        return len(self.start)

    @property
    def duration(self) -> float:
        return float(np.sum(self.end - self.start))

    def contains(self, t: np.ndarray) -> np.ndarray:
        """Boolean mask of the times that fall inside any interval."""
        t = np.asarray(t)
        order = np.argsort(self.start)
        starts, ends = self.start[order], self.end[order]
        i = np.searchsorted(starts, t, side="right") - 1
        ok = i >= 0
        out = np.zeros(t.shape, dtype=bool)
        out[ok] = t[ok] < ends[i[ok]]
        return out

    def select(self, mask: np.ndarray) -> "Intervals":
        return Intervals(self.start[mask], self.end[mask], {k: v[mask] for k, v in self.columns.items()})


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
            raise DataError(
                f"behaviour {self.name!r}: {len(self.timestamps)} timestamps but {len(self.values)} values"
            )
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


@dataclass
class Session:
    """One recording: sorted spikes with a unit index each, units, behaviour, trials, splits."""

    id: str
    spike_times: np.ndarray
    spike_units: np.ndarray
    unit_names: list[str]
    behavior: dict[str, Behavior] = field(default_factory=dict)
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
        times = [self.spike_times] + [b.timestamps for b in self.behavior.values()]
        times = [t for t in times if len(t)]
        if not times:
            return 0.0, 0.0
        return float(min(t[0] for t in times)), float(max(t[-1] for t in times))

    @classmethod
    def from_unit_spikes(cls, id: str, spikes: dict[str, np.ndarray], **kwargs) -> "Session":
        """Build from one array of spike times per unit name; sorts them into one stream."""
        names = list(spikes)
        times = np.concatenate([np.asarray(spikes[n], dtype=np.float64) for n in names]) if names else np.zeros(0)
        units = np.concatenate([np.full(len(spikes[n]), i, dtype=np.int32) for i, n in enumerate(names)]) if names else np.zeros(0, np.int32)
        order = np.argsort(times, kind="stable")
        return cls(id=id, spike_times=times[order], spike_units=units[order], unit_names=names, **kwargs)

    @property
    def unit_ids(self) -> list[str]:
        """Unit ids unique across sessions: `<session_id>/<unit_name>`."""
        return [f"{self.id}/{n}" for n in self.unit_names]

    @property
    def n_units(self) -> int:
        return len(self.unit_names)

    @property
    def n_spikes(self) -> int:
        return len(self.spike_times)

    @property
    def duration(self) -> float:
        return float(self.end - self.start)

    def slice(self, t0: float, t1: float) -> Window:
        """Spikes and behaviour in [t0, t1), times relative to t0."""
        lo, hi = np.searchsorted(self.spike_times, [t0, t1], side="left")
        beh = {}
        for name, b in self.behavior.items():
            blo, bhi = np.searchsorted(b.timestamps, [t0, t1], side="left")
            beh[name] = Behavior(name, b.timestamps[blo:bhi] - t0, b.values[blo:bhi], b.unit, b.dims, b.weights[blo:bhi])
        return Window(t0, t1, self.spike_times[lo:hi] - t0, self.spike_units[lo:hi], beh)
