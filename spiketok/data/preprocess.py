"""Numeric clean-up for readers: spike sorting and de-duplication, timestamp repair, velocity, moving masks."""

from __future__ import annotations

import numpy as np

MAX_GAP_PERIODS = 5.0  # a gap longer than this many median sample periods splits a signal into segments


def clean_unit_spikes(times: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Sort each unit's spike times and drop exact repeats within a unit.

    `times` holds the units' spikes one unit after another, `counts` the number per unit. Returns
    (times, unit index per spike, per-unit flag "was out of order", per-unit number of repeats removed).
    """
    times = np.asarray(times, dtype=np.float64)
    counts = np.asarray(counts, dtype=np.int64)
    units = np.repeat(np.arange(len(counts), dtype=np.int32), counts)
    same = units[1:] == units[:-1]
    back = same & (np.diff(times) < 0)
    unsorted = np.zeros(len(counts), dtype=bool)
    if back.any():
        unsorted[np.unique(units[1:][back])] = True
        order = np.lexsort((times, units))
        times = times[order]
    dup = np.zeros(len(times), dtype=bool)  # a spike at the same time as the previous one of its unit
    dup[1:] = same & (np.diff(times) == 0)
    n_dup = np.bincount(units[dup], minlength=len(counts))
    return times[~dup], units[~dup], unsorted, n_dup


def increasing_mask(ts: np.ndarray) -> np.ndarray:
    """True for samples whose timestamp is finite and above every earlier one (the rest are to be dropped)."""
    ts = np.asarray(ts, dtype=np.float64)
    if len(ts) == 0:
        return np.zeros(0, dtype=bool)
    prev = np.fmax.accumulate(np.concatenate([[-np.inf], ts[:-1]]))
    return np.isfinite(ts) & (ts > prev)


def segments(ts: np.ndarray, max_gap_periods: float = MAX_GAP_PERIODS) -> list[slice]:
    """Runs of samples with no gap longer than `max_gap_periods` median sample periods."""
    n = len(ts)
    if n < 2:
        return [slice(0, n)]
    d = np.diff(ts)
    breaks = np.flatnonzero(d > max_gap_periods * np.median(d)) + 1
    edges = np.concatenate([[0], breaks, [n]])
    return [slice(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:])]


def velocity(ts: np.ndarray, pos: np.ndarray, max_gap_periods: float = MAX_GAP_PERIODS) -> np.ndarray:
    """d pos / dt by central differences (`np.gradient` on the timestamps), one contiguous segment at a time.

    Interior samples use the second-order central difference for uneven spacing, segment ends one-sided
    differences; segments are split at gaps over `max_gap_periods` sample periods so no difference spans
    a gap. A one-sample segment, and any sample next to a NaN, gets NaN (to be masked).
    """
    pos = np.asarray(pos, dtype=np.float64)
    pos2 = pos.reshape(len(pos), -1)
    out = np.full(pos2.shape, np.nan)
    for seg in segments(ts, max_gap_periods):
        if seg.stop - seg.start >= 2:
            out[seg] = np.gradient(pos2[seg], ts[seg], axis=0)
    return out.reshape(pos.shape)


def moving_mask(
    ts: np.ndarray,
    pos: np.ndarray,
    threshold: float,
    half_window: float = 0.5,
    max_gap_periods: float = MAX_GAP_PERIODS,
) -> np.ndarray:
    """True where |pos(t + half_window) - pos(t - half_window)| > threshold (Euclidean distance).

    Positions at t +/- half_window are linearly interpolated from the finite samples of the same
    contiguous segment, clamped at its ends. Samples in a segment without finite positions are not moving.
    """
    pos2 = np.asarray(pos, dtype=np.float64).reshape(len(pos), -1)
    out = np.zeros(len(ts), dtype=bool)
    for seg in segments(ts, max_gap_periods):
        t, p = ts[seg], pos2[seg]
        ok = np.all(np.isfinite(p), axis=1)
        if not ok.any():
            continue
        t_ok, p_ok = t[ok], p[ok]
        ahead = np.stack([np.interp(t + half_window, t_ok, p_ok[:, d]) for d in range(p.shape[1])], axis=1)
        behind = np.stack([np.interp(t - half_window, t_ok, p_ok[:, d]) for d in range(p.shape[1])], axis=1)
        out[seg] = np.linalg.norm(ahead - behind, axis=1) > threshold
    return out
