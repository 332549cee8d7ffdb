"""The clean-up every reader (NWB, temporaldata) hands its data through, and the report of what it did.

- spikes: each unit's times sorted, exact repeats removed, spikes outside the behaviour/trial span
  (padded by SPAN_PAD) dropped, units left with no spikes dropped;
- behaviour: the moving filter and velocity derivation on positions, NaN/inf samples weighted 0;
- splits: `make_splits` unless the file brings its own.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import preprocess as pp
from .session import Behavior, DataError, Intervals, Session
from .splits import MIN_SPLIT_TRIALS, make_splits

SPAN_PAD = 1.0  # seconds of padding around the behaviour/trial extent that spikes may fall in


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
        out = [
            f"read {self.n_units_in} units, {self.n_spikes_in} spikes; kept {self.n_units} units, "
            f"{self.n_spikes} spikes"
        ]
        said_if_any = (  # each fact only when it happened (`and` leaves the others unformatted)
            self.dropped_units
            and f"dropped {len(self.dropped_units)} units with no spikes: {_names(self.dropped_units)}",
            self.unsorted_units
            and f"sorted the spike times of {len(self.unsorted_units)} units that were out of order: "
            f"{_names(self.unsorted_units)}",
            self.duplicate_spikes and f"removed {self.duplicate_spikes} duplicated spikes (same unit, same time)",
            self.outside_span
            and f"dropped {self.outside_span} spikes outside the recorded span "
            f"[{self.span[0]:.3f}, {self.span[1]:.3f}] s",
        )
        out += [line for line in said_if_any if line]
        for name, src in self.behavior.items():
            out.append(f"behaviour {name} <- {src}")
        for name, n in self.dropped_timestamps.items():
            out.append(f"{name}: dropped {n} samples with non-increasing or NaN timestamps")
        for name, n in self.masked_samples.items():
            out.append(f"{name}: masked {n} samples with NaN/inf values (weight 0)")
        for name, frac in self.moving_left_out.items():
            out.append(
                f"{name}: moving filter (> {self.moving_threshold:g} {self.moving_unit} over 1 s) left out "
                f"{100 * frac:.1f}% of samples (weight 0)"
            )
        out.extend(self.notes)
        return out


def _names(names: list[str], limit: int = 12) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names) - limit} more)" if len(names) > limit else "")


def _dims(name: str, d: int, spatial: bool) -> list[str]:
    if spatial and d <= 3:
        return [f"{name}_{a}" for a in "xyz"[:d]]
    return [f"{name}_{i}" for i in range(d)]


def _finish(
    name: str,
    ts: np.ndarray,
    values: np.ndarray,
    unit: str,
    dims: list[str],
    weights: np.ndarray,
    report: PrepareReport,
) -> Behavior:
    """Mask NaN/inf samples (weight 0, value 0) and build the Behavior."""
    bad = ~np.all(np.isfinite(values), axis=1)
    if bad.any():
        report.masked_samples[name] = int(bad.sum())
        values = np.where(bad[:, None], 0.0, values)
        weights = np.where(bad, 0.0, weights)
    return Behavior(name, ts, values, unit, dims, weights)


def signals_to_behavior(
    raw: dict[str, tuple[np.ndarray, np.ndarray, str, bool]],
    derive: str | None,
    keep_moving: float | None,
    report: PrepareReport,
) -> dict[str, Behavior]:
    """Behaviours from raw signals {name: (timestamps (T,), values (T, D), unit, is_position)}.

    Applies the moving filter and the velocity derivation to the position signals and masks NaN/inf
    samples (weight 0); any reader (NWB, temporaldata) hands its selected signals through here.
    """
    positions = [n for n, r in raw.items() if r[3]]
    if (derive or keep_moving is not None) and not positions:
        what = "derive='velocity'" if derive else "keep_moving"
        raise DataError(
            f"{what} needs a position signal (a SpatialSeries, e.g. hand or led), but the selected "
            f"behaviour ({', '.join(raw) or 'none'}) holds none; select a position with --behavior"
        )
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
                raise DataError(
                    f"the derived signal {vname!r} clashes with a selected signal of that name; "
                    f"select either {n!r} with --derive velocity or {vname!r}, not both"
                )
            w = moving.get(n, np.ones(len(ts))).astype(np.float64)
            dims = [f"{d}_velocity" for d in out[n].dims]
            out[vname] = _finish(vname, ts, pp.velocity(ts, values), f"{unit}/s" if unit else "1/s", dims, w, report)
            report.behavior[vname] = f"derived from {n} (central differences per contiguous segment)"
    return out


@dataclass(frozen=True)
class ReadOptions:
    """What a reader takes from a recording and how it splits it: the options of `spiketok prepare`.

    behavior: series names (`hand_velocity`, `led`) or paths (`behavior/Position/hand`), each taken; an entry
    "a,b" takes the first of a, b that exists. None: the only series, an error when several; []: none.
    derive="velocity": adds `<name>_velocity` for each selected position (central differences per contiguous
    segment, never across gaps over 5 sample periods; samples it cannot compute get weight 0).
    keep_moving=PX: weight 0 on the position samples (and their derived velocity) where
    |pos(t + 0.5 s) - pos(t - 0.5 s)| <= PX; the report gives the fraction left out.
    """

    behavior: list[str] | None = None
    derive: str | None = None
    session_id: str | None = None  # None: the file's name without its extension
    split_method: str = "interleaved"  # see spiketok.data.splits.make_splits
    split_seed: int = 0
    keep_moving: float | None = None


@dataclass
class RawRecording:
    """What a reader read from a file, before clean-up: unit names, spike times (unit after unit, `counts` per
    unit), unit columns, behaviour, trials, file metadata, and the file's own splits if it has them."""

    names: list[str]
    times: np.ndarray
    counts: np.ndarray
    unit_meta: dict[str, np.ndarray]
    behavior: dict[str, Behavior]
    trials: Intervals | None
    meta: dict[str, str]
    splits: dict[str, Intervals] | None = None


def build_session(raw: RawRecording, report: PrepareReport, options: ReadOptions) -> Session:
    """A cleaned Session (id: report.session_id) from what one reader read.

    Sorts and de-duplicates each unit's spikes, drops spikes outside the behaviour/trial span (padded by
    SPAN_PAD) and units left empty, and splits with `make_splits` unless the file has its own splits.
    """
    names, times, unit_meta, beh, trials = raw.names, raw.times, raw.unit_meta, raw.behavior, raw.trials
    sid, meta, splits = report.session_id, raw.meta, raw.splits
    report.n_units_in, report.n_spikes_in = len(names), len(times)
    counts = raw.counts
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
        if trials is not None and len(trials) < MIN_SPLIT_TRIALS:
            report.notes.append(
                f"warning: only {len(trials)} trial(s), too few to split whole trials: the session "
                f"is split in time blocks, which may cut through trials"
            )
        scored = np.concatenate([b.timestamps[b.weights > 0] for b in beh.values()]) if beh else None
        splits = make_splits(
            start, end, trials, method=options.split_method, seed=options.split_seed, scored_times=scored
        )
    else:
        start = min([start] + [float(iv.start.min()) for iv in splits.values() if len(iv)])
        end = max([end] + [float(iv.end.max()) for iv in splits.values() if len(iv)])
    session = Session(
        id=sid,
        spike_times=times,
        spike_units=units,
        unit_names=names,
        behaviors=beh,
        trials=trials,
        splits=splits,
        unit_meta=unit_meta,
        meta=meta,
        start=start,
        end=end,
    )
    report.n_units, report.n_spikes = session.n_units, session.n_spikes
    return session


def select_signals(
    available: Mapping[str, Any],
    behavior: list[str] | None,
    file: Path,
    match: Callable[[str], str | None],
    describe: str,
    reader: str,
) -> list[str]:
    """Keys of `available` that `behavior` asks for, in order, as every reader chooses them.

    None: the only signal (an error when several); each entry may be 'a,b': the first alternative that
    `match` finds. `describe` lists the signals in messages; `reader` names the function in the hint.
    """
    if behavior is None:
        if len(available) > 1:
            raise DataError(
                f"{file}: {len(available)} behaviour signals found: {describe}; "
                f"choose with --behavior NAME ({reader}(behavior=[...]))"
            )
        return list(available)
    chosen: list[str] = []
    for entry in behavior:
        found = next((k for k in (match(a.strip()) for a in entry.split(",") if a.strip()) if k), None)
        if found is None:
            raise DataError(
                f"{file}: no behaviour signal named {entry!r}; available: {describe}; "
                "pass one of these names with --behavior"
            )
        if found not in chosen:
            chosen.append(found)
    return chosen
