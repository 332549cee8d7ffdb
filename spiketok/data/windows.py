"""Window layout: where the context windows over a session's intervals start and end, for every use.

- training: `random_windows`, a uniform start inside an interval (`data.samplers`);
- evaluation, validation and adaptation: `sliding_windows`, a start every `stride` s (`eval_stride`; a
  trained model's `default_stride`), the last window flush with the interval's end, so every sample is covered;
- causal models: `causal_windows` end every `stride` s (validation), `ending_at` one window per
  sample (decoding, as a streaming decoder sees it), `causal_window` reads one, ending at a behaviour sample.

Windows never leave the intervals they are laid in (a split's trials or time blocks), so they never
cross into another split or into a gap with no data; an interval shorter than the window is taken
whole, as one shorter window. Times are seconds in the session's clock; a window is [t0, t1).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from .session import Behavior, Intervals, SessionLike, Window

if TYPE_CHECKING:
    from ..model.poyo import POYO


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


def default_stride(model: POYO) -> float:
    """Seconds between a model's offline decoding windows: its training config's `eval_stride`, at most half a
    window (`eval_stride`)."""
    return eval_stride(model.config.window, model.meta.train.eval_stride if model.meta.train else None)


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


def causal_window(session: SessionLike, spec: WindowSpec, target: str, length: float) -> Window:
    """The window of a causal model: `length` s of spikes ending exactly at a behaviour sample, which is
    its only output (query at the window end, time `length`).

    Takes the last `target` sample tau in [t0, t1) and returns the window [tau - length, tau). Always full
    length, as a real-time decoder (and `decode_times` for causal models) always has a full window of past
    spikes: when [t0, t1) is shorter (an interval shorter than the window, a validation window at an
    interval's start) the window reaches back before t0, for spikes only; its label stays inside [t0, t1).
    A [t0, t1) without samples comes back as it is, with no outputs.
    """
    w = session.slice(spec.t0, spec.t1, behavior=[target])
    b = w.behavior[target]
    if len(b.timestamps) == 0:
        return w
    end = spec.t0 + float(b.timestamps[-1])
    w = session.slice(end - length, end, behavior=[])
    w.behavior[target] = Behavior(target, np.array([w.length]), b.values[-1:], b.unit, b.dims, b.weights[-1:])
    return w
