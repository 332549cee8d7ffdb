"""Streaming with a recurrent model (spiketok.model.recurrent): a decode costs a chunk, not a window.

The stream is cut into chunks of `latent_step` seconds on the session clock (k * step, from the chunk of the
first spike or decode). A pushed spike is only stored (its unit and time); once a chunk has ended (a decode at or
after its end, or a spike pushed after it), it is run once by the model's folded step
(spiketok.model.recurrent_step.ChunkStep, the export's graph too): its spikes' keys and values, the chunk's
latents reading them, one state update, and the readout of the new state, kept. A decode between chunk ends
returns the kept prediction: the model reads the state of the last chunk that ended at or before t, as
`RecurrentPOYO.forward` does offline. Nothing grows with the time streamed: the state is one vector, the spikes
of finished chunks are dropped.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ..model.normalize import unnormalise
from ..model.precision import with_precision
from ..model.recurrent import RecurrentPOYO, first_time
from ..model.recurrent_step import ChunkStep, frozen
from ..model.rotary import rotate
from ..tokenize import TokenType
from .chunks import ChunkedStream

__all__ = ["RecurrentStreamingDecoder"]


class RecurrentStreamingDecoder(ChunkedStream):
    """Decode one session's behaviour from a live spike stream with a trained RecurrentPOYO.

    decoder = RecurrentStreamingDecoder(model, "session_id")
    decoder.push(unit_ids, times)      # as packets arrive, in time order
    y = decoder.decode(t)              # (D,) behaviour at t, original units: the state of the last chunk ended <= t

    Arguments as StreamingDecoder's (session_id, target, unit_ids, late, precision). The state starts at the
    model's initial state at the start of the chunk of the first spike pushed or decode time (`reset(start=)`
    sets it instead); the model was trained on windows of `window` s, each from its initial state, so a replay
    warms up over one window. For the lowest latency run with `torch.set_num_threads(1)`; not thread-safe.
    """

    def __init__(
        self,
        model: RecurrentPOYO,
        session_id: str,
        target: str | None = None,
        unit_ids: Sequence[str] | None = None,
        late: str = "raise",
        precision: str = "float32",
    ):
        self._open(session_id, late)
        self._load(model, target, unit_ids, precision)
        self.reset()

    def _load(self, model: RecurrentPOYO, target: str | None, unit_ids: Sequence[str] | None, precision: str) -> None:
        """Bind the model to the session (units, target) and keep what every chunk shares; sets window and step."""
        copy = with_precision(model, precision)  # the model itself for float32; else a copy
        self.model, self._float32 = copy.eval(), copy is model
        c = model.config
        self.window, self.step = float(c.window), float(c.latent_step)
        sess_row, rows = self._bind_session(model, unit_ids, target)
        self.device = next(model.parameters()).device
        with torch.inference_mode():
            self._precompute(rows.to(self.device), sess_row)

    def _precompute(self, rows: torch.Tensor, sess_row: int) -> None:
        """The folded step (float32), or what the stages share per chunk (another precision: its copy's layers)."""
        m, L = self.model, self.model.config.num_latents_per_step
        self._rows, self._session = rows, torch.tensor([sess_row], device=self.device)
        mean, std = m.normalizer.get(self.session_id, self.target)
        self._mean, self._std = mean.to(self.device), std.to(self.device)
        self._query = m.session_emb.weight[sess_row].reshape(1, -1)  # (1, dim) the output query
        self._readout = m.readouts[self.target]
        self._step = frozen(ChunkStep(m, self.target, denormalise=False)) if self._float32 else None
        if self._step is not None:
            return
        self._kv_spike = m.pair_kv(m.unit_emb.weight[rows], torch.full_like(rows, int(TokenType.SPIKE)))
        self._lat = m.latent_emb(torch.arange(L, device=self.device))[None]  # (1, L, dim)
        centre = torch.full((1, L), self.step / 2, dtype=torch.float64, device=self.device)
        self._rot = m.rotary(centre)  # (1, L, 1, d/2): the latents sit at the chunk's centre
        self._q = rotate(m.encoder.query(self._lat), self._rot)  # (1, L, H, d)
        self._token = m.chunk_token_kv(first_time(self._rot), 1)  # (1, 1, H, d) keys and values of the chunk token

    def _restart(self) -> None:
        with torch.inference_mode():
            self._state = self.model.state_init.reshape(1, 1, -1).clone()  # (1, 1, dim)
            self._pred = self._read()

    @torch.inference_mode()
    def decode(self, t: float) -> np.ndarray:
        """Behaviour (D,) at time t in original units: the state after the last chunk that ended at or before t."""
        return unnormalise(self.decode_normalised(t), self._mean, self._std).cpu().numpy()

    @torch.inference_mode()
    def decode_normalised(self, t: float) -> torch.Tensor:
        """The model's raw (normalised) output (D,) at time t; runs the chunks that ended since the last decode."""
        self._advance(t)
        return self._pred

    @torch.inference_mode()
    def _run_chunk(self, units: np.ndarray, times: np.ndarray) -> None:
        """One chunk: its spikes (local units (n,), times (n,) s from its start) -> encoder, state update, readout."""
        if self._step is not None:
            units_t = self._rows.index_select(
                0, torch.from_numpy(units).to(self.device)
            )  # (n,) rows of the model's vocabulary
            pred, state = self._step(units_t, torch.from_numpy(times).to(self.device), self._state[0], self._session)
            self._state, self._pred = state[None], pred[0]  # (1, 1, dim), (D,) normalised
            return
        m = self.model
        rot = m.rotary(torch.from_numpy(times)[None].to(self.device))  # (1, n, 1, d/2)
        kv = self._kv_spike.index_select(0, torch.from_numpy(units).to(self.device))[None]  # (1, n, 2 * inner)
        k, v = m.encoder.attn.rotate_kv(kv, rot)  # (1, n, H, d) each
        latents = m.encode_chunks(self._lat, self._q, k, v, self._rot, token=self._token)  # (1, L, dim)
        x = m.chunk_input(latents)  # (1, L * dim)
        self._state = m.update(x[:, None], self._state)[1]  # (1, 1, dim)
        self._pred = self._read()

    def _read(self) -> torch.Tensor:
        """The normalised prediction (D,) of the current state."""
        return self._readout(self.model.read(self._query, self._state[0]))[0].float()
