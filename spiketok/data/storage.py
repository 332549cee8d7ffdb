"""One HDF5 file per session: atomic writes, lazy window reads through a small time index."""

from __future__ import annotations

import json
import os
from pathlib import Path

import h5py
import numpy as np

from .atomic import atomic_write
from .session import Behavior, DataError, Intervals, Session, SessionLike, Window

FORMAT = "spiketok-session"
VERSION = 1
INDEX_STEP = 1.0  # seconds between entries of the time index
CHUNK = 4096  # rows per HDF5 chunk (fastest random 1 s window reads; benchmarks/bench_window_reads.py)


def _time_index(times: np.ndarray, start: float, end: float, step: float = INDEX_STEP) -> np.ndarray:
    """Row of the first sample at or after start + k*step, for k = 0..ceil((end-start)/step)+1."""
    n = int(np.ceil((end - start) / step)) + 2
    return np.searchsorted(times, start + step * np.arange(n), side="left").astype(np.int64)


def _dataset(group: h5py.Group, name: str, data: np.ndarray) -> None:
    data = np.asarray(data)
    if data.shape and data.shape[0] > CHUNK:
        chunks = (CHUNK,) + data.shape[1:]
        group.create_dataset(name, data=data, chunks=chunks)
    else:
        group.create_dataset(name, data=data)


def _write_intervals(group: h5py.Group, iv: Intervals) -> None:
    group.create_dataset("start", data=iv.start)
    group.create_dataset("end", data=iv.end)
    cols = group.create_group("columns")
    for k, v in iv.columns.items():
        v = np.asarray(v)
        if v.dtype.kind in "OU":
            v = v.astype(h5py.string_dtype())
        cols.create_dataset(k, data=v)


def _read_intervals(group: h5py.Group) -> Intervals:
    cols = {}
    for k, d in group["columns"].items():
        v = d[()]
        if d.dtype.kind == "O":
            v = d.asstr()[()]
        cols[k] = v
    return Intervals(group["start"][()], group["end"][()], cols)


def write_session(session: Session, path: str | Path) -> Path:
    """Write a session to `path` atomically: a temporary file in the same folder, then a rename."""
    path = Path(path)
    with atomic_write(path) as tmp:
        with h5py.File(tmp, "w") as f:
            f.attrs["format"] = FORMAT
            f.attrs["version"] = VERSION
            f.attrs["session_id"] = session.id
            f.attrs["start"] = session.start
            f.attrs["end"] = session.end
            f.attrs["meta"] = json.dumps(session.meta)
            sp = f.create_group("spikes")
            _dataset(sp, "times", session.spike_times)
            _dataset(sp, "units", session.spike_units)
            sp.create_dataset("index", data=_time_index(session.spike_times, session.start, session.end))
            un = f.create_group("units")
            un.create_dataset("names", data=np.array(session.unit_names, dtype=object), dtype=h5py.string_dtype())
            un.create_dataset("n_spikes", data=np.bincount(session.spike_units, minlength=session.n_units))
            meta = un.create_group("meta")
            for k, v in session.unit_meta.items():
                v = np.asarray(v)
                meta.create_dataset(k, data=v.astype(h5py.string_dtype()) if v.dtype.kind in "OU" else v)
            bg = f.create_group("behavior")
            for name, b in session.behaviors.items():
                g = bg.create_group(name)
                _dataset(g, "timestamps", b.timestamps)
                _dataset(g, "values", b.values)
                _dataset(g, "weights", b.weights)
                g.create_dataset("index", data=_time_index(b.timestamps, session.start, session.end))
                g.attrs["unit"] = b.unit
                g.attrs["dims"] = json.dumps(list(b.dims))
            if session.trials is not None:
                _write_intervals(f.create_group("trials"), session.trials)
            spl = f.create_group("splits")
            for name, iv in session.splits.items():
                _write_intervals(spl.create_group(name), iv)
        os.chmod(tmp, 0o644)  # mkstemp makes owner-only files; a prepared session is for sharing
    return path


def _is_nwb(path: Path) -> bool:
    """Whether `path` is an NWB file (HDF5 with an `nwb_version` attribute)."""
    try:
        with h5py.File(path, "r") as f:
            return "nwb_version" in f.attrs
    except (OSError, ValueError):
        return False


class StoredSession(SessionLike):
    """A session in an HDF5 file, opened lazily; `slice` reads only the rows of that window."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._file: h5py.File | None = None
        self._d: dict = {}
        self._pid: int | None = None
        try:
            self._read_header()
        except (OSError, KeyError, ValueError, TypeError) as e:  # truncated, damaged or foreign HDF5
            self.close()
            if isinstance(e, DataError):
                raise
            if _is_nwb(self.path):
                raise DataError(
                    f"{self.path} is an NWB recording, not a prepared session: run `spiketok prepare "
                    f"{self.path} --out prepared/` first and give the prepared/ folder"
                ) from None
            raise DataError(
                f"{self.path}: cannot read it as a prepared session ({type(e).__name__}: {e}); the "
                "file is truncated, damaged or of another kind: run `spiketok prepare` on the NWB "
                "file again"
            ) from None

    def _read_header(self) -> None:
        """Session id, times, units, behaviour and split tables (the small parts; spikes stay on disk)."""
        f = self._open()
        if f.attrs.get("format") != FORMAT:
            raise DataError(f"{self.path}: not a spiketok session file (run `spiketok prepare` first)")
        self.id: str = str(f.attrs["session_id"])
        self.start = float(f.attrs["start"])
        self.end = float(f.attrs["end"])
        self.meta: dict[str, str] = json.loads(f.attrs["meta"])
        self.unit_names: list[str] = list(f["units/names"].asstr()[()])
        self._spike_index = f["spikes/index"][()]
        self._beh_index = {name: g["index"][()] for name, g in f["behavior"].items()}
        self.behavior_info = {
            name: {
                "unit": str(g.attrs["unit"]),
                "dims": json.loads(g.attrs["dims"]),
                "n_samples": int(g["timestamps"].shape[0]),
                "dim": int(g["values"].shape[1]),
            }
            for name, g in f["behavior"].items()
        }
        self.splits = {name: _read_intervals(g) for name, g in f["splits"].items()}
        self.trials = _read_intervals(f["trials"]) if "trials" in f else None
        self.n_spikes = int(f["spikes/times"].shape[0])

    def _open(self) -> h5py.File:
        # Re-open after a fork (DataLoader workers): h5py handles must not cross processes.
        if self._file is None or self._pid != os.getpid():
            self._file = h5py.File(self.path, "r", rdcc_nbytes=4 * 1024 * 1024)
            self._pid = os.getpid()
            # dataset handles kept open: a name lookup per read costs more than the read itself
            self._d = {"times": self._file["spikes/times"], "units": self._file["spikes/units"]}
            for name, g in self._file["behavior"].items():
                self._d[name] = (g["timestamps"], g["values"], g["weights"])
        return self._file

    def close(self) -> None:
        if self._file is not None and self._pid == os.getpid():
            self._file.close()
        self._file, self._d = None, {}

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_file"], state["_d"] = None, {}
        return state

    @property
    def behavior_names(self) -> list[str]:
        return list(self.behavior_info)

    def _rows(self, index: np.ndarray, t0: float, t1: float) -> tuple[int, int]:
        k0 = int(np.clip(np.floor((t0 - self.start) / INDEX_STEP), 0, len(index) - 1))
        k1 = int(np.clip(np.ceil((t1 - self.start) / INDEX_STEP), 0, len(index) - 1))
        lo = int(index[k0])
        hi = int(index[k1]) if t1 - self.start < (len(index) - 1) * INDEX_STEP else None
        return lo, hi

    def slice(self, t0: float, t1: float, behavior: list[str] | None = None) -> Window:
        """Spikes and behaviour (the signals named in `behavior`, default all) in [t0, t1), times relative to
        t0, reading only nearby rows."""
        self._open()
        d = self._d
        lo, hi = self._rows(self._spike_index, t0, t1)
        times = d["times"][lo:hi]
        a, b = np.searchsorted(times, [t0, t1], side="left")
        units = d["units"][lo + a : lo + b]
        beh = {}
        for name in behavior if behavior is not None else self._beh_index:
            g_ts, g_val, g_w = d[name]
            blo, bhi = self._rows(self._beh_index[name], t0, t1)
            ts = g_ts[blo:bhi]
            ba, bb = np.searchsorted(ts, [t0, t1], side="left")
            info = self.behavior_info[name]
            beh[name] = Behavior(
                name, ts[ba:bb] - t0, g_val[blo + ba : blo + bb], info["unit"], info["dims"], g_w[blo + ba : blo + bb]
            )
        return Window(t0, t1, times[a:b] - t0, units, beh)

    def behavior(self, name: str) -> Behavior:
        """The whole behaviour signal (small compared with spikes)."""
        g = self._open()["behavior"][name]
        info = self.behavior_info[name]
        return Behavior(name, g["timestamps"][()], g["values"][()], info["unit"], info["dims"], g["weights"][()])

    def load(self) -> Session:
        """Read the whole session into memory."""
        f = self._open()
        meta = {k: d[()] if d.dtype.kind != "O" else d.asstr()[()] for k, d in f["units/meta"].items()}
        return Session(
            id=self.id,
            spike_times=f["spikes/times"][()],
            spike_units=f["spikes/units"][()],
            unit_names=self.unit_names,
            behaviors={n: self.behavior(n) for n in self._beh_index},
            trials=self.trials,
            splits=self.splits,
            unit_meta=meta,
            meta=self.meta,
            start=self.start,
            end=self.end,
        )

    def unit_spike_counts(self) -> np.ndarray:
        return self._open()["units/n_spikes"][()]


def read_session(path: str | Path) -> Session:
    """Load a whole prepared session file into memory."""
    return StoredSession(path).load()


class SessionDataset:
    """Many prepared sessions (a folder of .h5 files, or a list of files) behind one small index."""

    def __init__(self, paths: str | Path | list[str | Path]):
        files: list[Path] = []
        for p in [paths] if isinstance(paths, (str, Path)) else paths:
            p = Path(p)
            if p.is_dir():
                files.extend(sorted(p.glob("*.h5")))
            elif p.exists():
                files.append(p)
            else:
                raise DataError(f"{p}: no such file or folder")
        if not files:
            given = ", ".join(str(p) for p in ([paths] if isinstance(paths, (str, Path)) else paths))
            raise DataError(f"{given}: no prepared session files (*.h5) in it; run `spiketok prepare` first")
        self.sessions: dict[str, StoredSession] = {}
        for path in files:
            s = StoredSession(path)
            if s.id in self.sessions:
                raise DataError(f"session id {s.id!r} appears twice ({self.sessions[s.id].path} and {path})")
            s.close()  # keep only the index in memory; files reopen on the first window read
            self.sessions[s.id] = s

    def __len__(self) -> int:
        return len(self.sessions)

    def __getitem__(self, session_id: str) -> StoredSession:
        return self.sessions[session_id]

    def __iter__(self):
        return iter(self.sessions.values())

    @property
    def ids(self) -> list[str]:
        return list(self.sessions)

    def unit_ids(self) -> list[str]:
        return [u for s in self.sessions.values() for u in s.unit_ids]
