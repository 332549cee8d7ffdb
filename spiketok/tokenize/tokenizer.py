"""Turn a window of a session into input tokens, latent tokens and output queries."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..data.session import Window
from .batch import WindowTokens
from .token_types import TOKEN_END, TOKEN_SPIKE, TOKEN_START


@dataclass
class SpikeTokenizer:
    """Spikes -> tokens; one instance per model, shared by training, evaluation and streaming.

    `window` is the context length (s); latents are `num_latents_per_step` ids repeated every
    `latent_step` seconds across the window.
    """

    num_latents_per_step: int = 8
    latent_step: float = 0.125
    window: float = 1.0

    def latents(self, length: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Latent ids (n_latents,) and their timestamps (n_latents,) over a window of `length` s."""
        length = self.window if length is None else length
        n_steps = max(1, int(round(length / self.latent_step)))
        times = (np.arange(n_steps) + 0.5) * (length / n_steps)
        ids = np.tile(np.arange(self.num_latents_per_step), n_steps)
        return ids.astype(np.int64), np.repeat(times, self.num_latents_per_step).astype(np.float64)

    def inputs(
        self, spike_times: np.ndarray, spike_units: np.ndarray, unit_index: np.ndarray, length: float,
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
            np.concatenate([np.full(n_s, TOKEN_SPIKE), np.full(n_u, TOKEN_START), np.full(n_u, TOKEN_END)]).astype(np.int64),
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
        units, times_in, types = self.inputs(window.spike_times, window.spike_units, unit_index, window.length, keep_units)
        lat_ids, lat_times = self.latents()
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
            input_units=units, input_times=times_in, input_types=types,
            latent_ids=lat_ids, latent_times=lat_times,
            output_times=times.astype(np.float64), output_values=values, output_weights=weights,
            output_sessions=np.full(len(times), session_index, dtype=np.int64),
            output_tasks=np.full(len(times), task_index, dtype=np.int64),
        )
