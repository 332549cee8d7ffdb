"""What every streaming decoder does with a pushed packet of spikes: unit ids to local indices, checks, time
order and late spikes (`PacketRules`, shared by spiketok.stream.decoder and spiketok.stream.exported)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ..errors import SpiketokError
from ..model.poyo import POYO


class StreamOrderError(SpiketokError, ValueError):
    """A packet whose spikes are older than spikes already pushed (packets must arrive in time order)."""


class LateSpikeError(StreamOrderError):
    """A spike older than a decode already returned: that decode went out without it."""


class PacketRules:
    """What every streaming decoder does with a pushed packet: unit ids to local indices, checks, time order,
    late spikes. Subclasses set session_id, unit_ids, n_units, late, n_late, _last_time and _last_decode."""

    session_id: str
    target: str
    unit_ids: list[str]
    n_units: int
    late: str
    n_late: int
    _last_time: float
    _last_decode: float

    def _open(self, session_id: str, late: str) -> None:
        """Set the session and what to do with late spikes ("raise" or "drop"); ValueError for another `late`."""
        if late not in ("raise", "drop"):
            raise ValueError(f"late={late!r}: use 'raise' or 'drop'")
        self.session_id, self.late, self.n_late = session_id, late, 0

    def _bind_session(
        self, model: POYO, unit_ids: Sequence[str] | None, target: str | None
    ) -> tuple[int, torch.Tensor]:
        """Set unit_ids (default: the model's units of this session, in vocabulary order), n_units, target and the
        id table; returns the session's row and the units' vocabulary rows (n_units,). UnknownIdError: adapt first."""
        sess_row = int(model.session_emb.lookup([self.session_id])[0])
        if unit_ids is None:
            prefix = f"{self.session_id}/"
            unit_ids = [u for u in model.unit_emb.ids if u.startswith(prefix)]
            if not unit_ids:
                raise ValueError(f"the model knows session {self.session_id!r} but none of its units; pass unit_ids")
        self.unit_ids = list(unit_ids)
        rows = model.unit_emb.lookup(self.unit_ids)  # UnknownIdError for units the model has never seen
        self.target = model.readout_target(target, self.session_id)
        self.n_units = len(self.unit_ids)
        self._build_id_table()
        return sess_row, rows

    def _build_id_table(self) -> None:
        """Sorted string ids (full ids and bare unit names) -> local index, for vectorised lookups."""
        prefix = f"{self.session_id}/"
        keys = self.unit_ids + [u[len(prefix) :] for u in self.unit_ids if u.startswith(prefix)]
        local = list(range(self.n_units)) + [i for i, u in enumerate(self.unit_ids) if u.startswith(prefix)]
        if len(set(keys)) < len(keys):  # a bare name equal to another unit's full id: keep full ids only
            keys, local = self.unit_ids, list(range(self.n_units))
        order = np.argsort(keys)
        self._id_keys = np.asarray(keys)[order]
        self._id_local = np.asarray(local, dtype=np.int64)[order]

    def local_index(self, unit_ids: Sequence[str] | np.ndarray) -> np.ndarray:
        """Local unit indices (n,) of string ids (full "<session>/<unit>" ids or bare unit names)."""
        ids = np.asarray(unit_ids)
        if ids.dtype.kind not in "UO":
            raise TypeError(f"unit ids must be strings or integer local indices, got dtype {ids.dtype}")
        ids = ids.astype(str)
        pos = np.clip(np.searchsorted(self._id_keys, ids), 0, len(self._id_keys) - 1)
        bad = self._id_keys[pos] != ids
        if bad.any():
            raise KeyError(
                f"{int(bad.sum())} spike(s) from units unknown to this decoder (first: {ids[bad][0]!r}); "
                f"session {self.session_id!r} has {self.n_units} units"
            )
        return self._id_local[pos]

    def _checked_packet(
        self, unit_ids: Sequence | np.ndarray, times: Sequence[float] | np.ndarray
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """Local unit indices (n,) and times (n,) of a packet, sorted by time, late spikes dropped (late="drop")
        or refused; None when nothing is left to add."""
        times = np.asarray(times, dtype=np.float64).reshape(-1)
        ids = np.asarray(unit_ids).reshape(-1)
        if len(ids) != len(times):
            raise ValueError(f"push: {len(ids)} unit ids but {len(times)} times")
        if len(times) == 0:
            return None
        if ids.dtype.kind in "iu":
            units = ids.astype(np.int64)
            if units.min() < 0 or units.max() >= self.n_units:
                raise IndexError(
                    f"push: local unit index outside 0..{self.n_units - 1} (got {units.min()}..{units.max()})"
                )
        else:
            units = self.local_index(ids)
        if not np.isfinite(times).all():
            raise ValueError("push: spike times must be finite")
        if np.any(times[1:] < times[:-1]):
            order = np.argsort(times, kind="stable")
            times, units = times[order], units[order]
        if times[0] < self._last_decode:
            n_late = int(np.searchsorted(times, self._last_decode, side="left"))
            if self.late == "raise":
                raise LateSpikeError(
                    f"push: {n_late} spike(s) at t={times[0]:.6f} s and later arrived after a decode at "
                    f"t={self._last_decode:.6f} s already went out without them; push spikes before decoding "
                    "(or use late='drop')"
                )
            self.n_late += n_late
            times, units = times[n_late:], units[n_late:]
            if len(times) == 0:
                return None
        if times[0] < self._last_time:
            raise StreamOrderError(
                f"push: packet starts at t={times[0]:.6f} s, before the newest spike already pushed "
                f"(t={self._last_time:.6f} s); packets must arrive in time order"
            )
        return units, times
