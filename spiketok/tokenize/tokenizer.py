"""Turn a window of a session into input tokens, latent tokens and output queries."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..data.session import Window
from .batch import WindowTokens
from .token_types import TOKEN_END, TOKEN_SPIKE, TOKEN_START

LATENT_GRIDS = ("window", "absolute")


def is_multiple(length: float, step: float) -> bool:
    """Whether `length` is a whole number (>= 1) of `step`s, up to float rounding."""
    n = round(length / step)
    return n >= 1 and abs(n * step - length) <= 1e-9 * max(1.0, abs(length))


def grid_start(t0: float, step: float) -> int:
    """Index k of the first absolute grid point (k + 0.5) * step at or after t0 (the absolute latent grid)."""
    return int(np.ceil(t0 / step - 0.5))


def grid_times(k0: int, n: int, step: float) -> np.ndarray:
    """Absolute times (n,) float64 of grid points k0 .. k0 + n - 1: (k + 0.5) * step."""
    return (np.arange(k0, k0 + n, dtype=np.float64) + 0.5) * step


@dataclass
class SpikeTokenizer:
    """Spikes -> tokens; one instance per model, shared by training, evaluation and streaming.

    `window` is the context length (s); latents are `num_latents_per_step` ids repeated every
    `latent_step` seconds across the window. `latent_grid` says where: "window" = (k + 0.5) * step
    from the window's start; "absolute" = the session-clock grid points (k + 0.5) * step that fall in
    [t0, t0 + window) (always window / step of them: the window must be a multiple of the step).
    """

    num_latents_per_step: int = 8
    latent_step: float = 0.125
    window: float = 1.0
    latent_grid: str = "window"

    def __post_init__(self) -> None:
        if self.latent_grid not in LATENT_GRIDS:
            raise ValueError(f"latent_grid={self.latent_grid!r}: use one of {list(LATENT_GRIDS)}")

    def latents(self, length: float | None = None, t0: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Latent ids (n_latents,) and their timestamps (n_latents,) in s from the window start, over a window
        of `length` s that starts at session time `t0` (needed, and only used, with the absolute grid)."""
        length = self.window if length is None else length
        L = self.num_latents_per_step
        if self.latent_grid == "absolute":
            if t0 is None:
                raise ValueError("an absolute latent grid needs the window's start t0 (session time, s)")
            if not is_multiple(length, self.latent_step):
                raise ValueError(
                    f"an absolute latent grid needs a window ({length} s) that is a whole number of "
                    f"latent steps ({self.latent_step} s)"
                )
            n_steps = int(round(length / self.latent_step))
            times = grid_times(grid_start(t0, self.latent_step), n_steps, self.latent_step) - t0
        else:
            n_steps = max(1, int(round(length / self.latent_step)))
            times = (np.arange(n_steps) + 0.5) * (length / n_steps)
        ids = np.tile(np.arange(L), n_steps)
        return ids.astype(np.int64), np.repeat(times, L).astype(np.float64)

    def inputs(
        self,
        spike_times: np.ndarray,
        spike_units: np.ndarray,
        unit_index: np.ndarray,
        length: float,
        keep_units: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Input tokens (units, times, types), each (n_tokens,): one per spike plus a START (t=0) and END
        (t=length) token per unit.

        `unit_index` maps the session's local unit index to the model's vocabulary row;
        `keep_units` (local indices) restricts the tokens to a subset of units (unit dropout).
        """
        units = np.arange(len(unit_index)) if keep_units is None else np.asarray(keep_units)
        if keep_units is not None:
            keep = np.zeros(len(unit_index), dtype=bool)
            keep[units] = True
            sel = keep[spike_units]
            spike_times, spike_units = spike_times[sel], spike_units[sel]
        n_u, n_s = len(units), len(spike_times)
        local = np.concatenate([spike_units, units, units])
        return (
            unit_index[local].astype(np.int64),
            np.concatenate([spike_times, np.zeros(n_u), np.full(n_u, length)]).astype(np.float64),
            np.concatenate([np.full(n_s, TOKEN_SPIKE), np.full(n_u, TOKEN_START), np.full(n_u, TOKEN_END)]).astype(
                np.int64
            ),
        )

    def __call__(
        self,
        window: Window,
        unit_index: np.ndarray,
        session_index: int,
        task_index: int,
        target: str | None,
        keep_units: np.ndarray | None = None,
        output_times: np.ndarray | None = None,
    ) -> WindowTokens:
        """All arrays of one window; outputs at the target's samples (or at `output_times`)."""
        units, times_in, types = self.inputs(
            window.spike_times, window.spike_units, unit_index, window.length, keep_units
        )
        lat_ids, lat_times = self.latents(t0=window.t0)
        if target is not None:
            b = window.behavior[target]
            times, values = b.timestamps, b.values.astype(np.float32)
            weights = b.weights.astype(np.float32).copy()
            bad = ~np.isfinite(values).all(axis=1)
            weights[bad] = 0.0
            values = np.where(np.isfinite(values), values, 0.0).astype(np.float32)
        else:
            times = np.asarray(output_times, dtype=np.float64)
            values = np.zeros((len(times), 1), np.float32)
            weights = np.zeros(len(times), np.float32)
        return WindowTokens(
            input_units=units,
            input_times=times_in,
            input_types=types,
            latent_ids=lat_ids,
            latent_times=lat_times,
            output_times=times.astype(np.float64),
            output_values=values,
            output_weights=weights,
            output_sessions=np.full(len(times), session_index, dtype=np.int64),
            output_tasks=np.full(len(times), task_index, dtype=np.int64),
        )
