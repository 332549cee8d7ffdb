"""Window layout: where the context windows over a session's intervals start and end, for every use.

- training: `random_windows`, a uniform start inside an interval (`data.samplers`);
- evaluation, validation and adaptation: `sliding_windows`, a start every `stride` s (`eval_stride`),
  the last window flush with the interval's end, so every sample is covered;
- causal models: `causal_windows` end every `stride` s (validation), `ending_at` one window per
  sample (decoding, as a streaming decoder sees it).

Windows never leave the intervals they are laid in (a split's trials or time blocks), so they never
cross into another split or into a gap with no data; an interval shorter than the window is taken
whole, as one shorter window. Times are seconds in the session's clock; a window is [t0, t1).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .session import Intervals


@dataclass(frozen=True)
class WindowSpec:
    """One window to read: session id and [t0, t1) in the session's clock.

    `draw` is a random number the training sampler gives each window it draws, so augmentations seeded
    by it (unit dropout) differ between two draws of the same [t0, t1), e.g. a trial shorter than the window.
    """

    session: str
    t0: float
    t1: float
    draw: int = 0


def eval_stride(window: float, configured: float | None = None) -> float:
    """Seconds between sliding windows: the configured `eval_stride`, at most half a window."""
    return min(window / 2, float(configured if configured is not None else window / 2))


def random_windows(start: np.ndarray, end: np.ndarray, window: float, u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Start (n,) and length (n,) of one window in each interval [start, end) (n,), at uniform draws `u` (n,)."""
    length = np.minimum(window, end - start)
    return start + u * (end - start - length), length


def sliding(start: float, end: float, window: float, stride: float) -> list[tuple[float, float]]:
    """Windows (t0, t1) over one interval: a start every `stride` s, the last flush with `end`."""
    if end - start <= window:
        return [(float(start), float(end))]
    starts = np.append(np.arange(start, end - window, stride), end - window)
    return [(float(t), float(min(end, t + window))) for t in starts]


def sliding_windows(intervals: Intervals, window: float, stride: float, session: str) -> list[WindowSpec]:
    """Overlapping windows covering every interval (see `sliding`)."""
    return [
        WindowSpec(session, t0, t1)
        for s, e in zip(intervals.start, intervals.end)
        for t0, t1 in sliding(s, e, window, stride)
    ]


def causal_windows(intervals: Intervals, window: float, stride: float, session: str) -> list[WindowSpec]:
    """Windows ending every `stride` s inside each interval (for models with outputs at the window end)."""
    specs = []
    for s, e in zip(intervals.start, intervals.end):
        ends = np.arange(s + stride, e + 1e-9, stride)
        specs.extend(WindowSpec(session, float(max(s, t - window)), float(t)) for t in ends)
    return specs


def ending_at(times: np.ndarray, window: float) -> list[tuple[float, float]]:
    """One full window (t - window, t) per time t: a causal model's output query sits at its end."""
    return [(t - window, t) for t in times]
