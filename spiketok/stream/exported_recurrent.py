"""Streaming with the exported step graph of a recurrent model (`spiketok export` of a RecurrentPOYO): the
decoder of spiketok.stream.recurrent with its chunks run by onnxruntime or TorchScript instead of PyTorch."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .exported import ExportedModel
from .recurrent import RecurrentStreamingDecoder

__all__ = ["ExportedRecurrentDecoder"]


class ExportedRecurrentDecoder(RecurrentStreamingDecoder):
    """Decode one session's behaviour from a live spike stream with an exported recurrent model.

    decoder = ExportedRecurrentDecoder(ExportedModel("possm.onnx"), "session_id")
    decoder.push(unit_ids, times); y = decoder.decode(t)   # (D,): the state after the last chunk ended <= t

    Arguments as RecurrentStreamingDecoder's, the model an ExportedModel of a step graph; its arithmetic was fixed
    at export (`--int8`), so `precision` stays "float32". Each chunk that ended since the last decode is one call of
    the step graph (its spikes, the kept state); between chunk ends a decode returns the kept prediction. The state
    starts at the sidecar's initial state.
    """

    def _load(
        self, exported: ExportedModel, target: str | None, unit_ids: Sequence[str] | None, precision: str
    ) -> None:
        if not exported.recurrent:
            raise ValueError(f"{exported.path.name}: not a recurrent model's step graph; use ExportedStreamingDecoder")
        if target is not None and target != exported.target:
            raise ValueError(f"target {target!r}: this model was exported for {exported.target!r}")
        if precision != "float32":
            raise ValueError(f"precision={precision!r}: an export's arithmetic is set when exporting (--int8)")
        self.exported, self.window, self.target = exported, exported.window, exported.target
        rec = exported.meta.recurrent  # set whenever the sidecar's backbone is recurrent (read_sidecar checks)
        self.step = float(rec.chunk)
        self._initial_state = np.asarray(rec.initial_state, np.float32)[None]  # (1, dim)
        self._initial_pred = np.asarray(rec.initial_behavior[self.session_id], np.float32)  # (D,)
        self._session = exported.session_row(self.session_id)
        self._rows = exported.bind_units(self, unit_ids)

    def _restart(self) -> None:
        self._state, self._pred = self._initial_state, self._initial_pred

    def _run_chunk(self, units: np.ndarray, times: np.ndarray) -> None:
        pred, self._state = self.exported.step(self._rows[units], times, self._state, self._session)
        self._pred = pred[0]

    def decode(self, t: float) -> np.ndarray:
        """Behaviour (D,) at time t in the recording's units: the state after the last chunk ended at or before t."""
        self._advance(t)
        return self._pred

    def decode_normalised(self, t: float) -> np.ndarray:
        raise NotImplementedError("an exported graph gives the behaviour in the recording's units only: use decode")
