"""What both recurrent streaming decoders do (spiketok.stream.recurrent: PyTorch, and exported_recurrent: an
exported step graph): keep the spikes of the chunk not yet run, and run each chunk once it has ended: at a decode
at or after its end, or at a push of a spike after its end (packets come in time order)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from ..model.recurrent import BOUNDARY_TOLERANCE
from .packets import PacketRules, StreamOrderError


class ChunkedStream(PacketRules):
    """Chunks of `step` seconds on the session clock: chunk k spans [origin + k * step, origin + (k + 1) * step),
        origin the start of the chunk (a multiple of step) of the first spike or decode after a reset, or the reset's
        `start`. Subclasses set `step` and run a chunk in `_run_chunk(units (n,), times (n,) s from its start)`, and
        restart their state in `_restart()`; `_advance(t)` (a decode) and `push` run the chunks ended at or before t or
    the newest spike."""

    step: float

    def reset(self, start: float | None = None) -> None:
        """Forget spikes, state and decode times; the state restarts at `start` (session time, s; default: the
        start of the chunk of the next spike or decode)."""
        self._times, self._units = np.zeros(0, np.float64), np.zeros(0, np.int64)
        self._origin = None if start is None else float(start)  # the first chunk's start
        self.n_chunks = 0  # chunks run since the reset: the next starts at origin + n_chunks * step
        self._last_time = self._last_decode = -np.inf
        self.n_late = 0
        self._restart()

    def _restart(self) -> None:
        raise NotImplementedError

    def _run_chunk(self, units: np.ndarray, times: np.ndarray) -> None:
        raise NotImplementedError

    @property
    def n_buffered(self) -> int:
        """Spikes held: those of the chunks not yet run."""
        return len(self._times)

    def _anchor(self, t: float) -> None:
        """Start the chunks at the start of the chunk (k * step) holding t, unless they have started."""
        if self._origin is None:
            self._origin = math.floor(t / self.step) * self.step

    def push(self, unit_ids: Sequence | np.ndarray, times: Sequence[float] | np.ndarray) -> int:
        """Add a packet of spikes (local indices or string ids, times in s), with the ordering rules of
        StreamingDecoder; they are only kept until their chunk runs. Returns how many were added."""
        packet = self._checked_packet(unit_ids, times)
        if packet is None:
            return 0
        units, times = packet
        self._anchor(float(times[0]))
        self._times, self._units = np.concatenate([self._times, times]), np.concatenate([self._units, units])
        self._last_time = float(times[-1])
        self._run_ended(self._last_time)  # packets come in time order: no spike will join a chunk ended before
        return len(times)

    def _advance(self, t: float) -> None:
        """Run every chunk that ended at or before t (none between chunk ends), each on its buffered spikes."""
        t = float(t)
        if t < self._last_decode:
            raise StreamOrderError(
                f"decode: t={t:.6f} s is before the previous decode time {self._last_decode:.6f} s; "
                "decode times must not decrease (call reset() to start over)"
            )
        self._anchor(t)
        self._run_ended(t)
        self._last_decode = t

    def _run_ended(self, t: float) -> None:
        """Run the chunks that ended at or before t, each on its buffered spikes."""
        while self._origin + self.step * (self.n_chunks + 1 - BOUNDARY_TOLERANCE) <= t:
            start = self._origin + self.n_chunks * self.step
            n = int(np.searchsorted(self._times, start + self.step, side="left"))
            self._run_chunk(self._units[:n], self._times[:n] - start)
            self._times, self._units = self._times[n:], self._units[n:]
            self.n_chunks += 1
