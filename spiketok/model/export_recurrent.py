"""The export of a recurrent model (spiketok.model.recurrent): one step graph, a chunk's spikes and the state in,
the new state and its prediction out; and its sidecar.

`ChunkStepGraph` composes the model's own stages (`RecurrentStages`) over its own blocks and weights, with the
rotations as real cos and sin (ONNX has no complex tensors) and each unit's spike keys and values a row of a
constant table. A caller keeps the state between calls: the sidecar's `recurrent.initial_state` at the stream's
start, then the graph's `state_out` of each chunk as the next chunk's `state`.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..tokenize import TokenType
from .export_sidecar import INPUTS, OUTPUT_NAME, sidecar
from .graph_file import normalization_tables, write_graph
from .recurrent import RecurrentPOYO, RecurrentStages
from .rotary import rotate
from .sidecar import RecurrentEntry, TensorSpec, write_sidecar

STATE_NAME = "state_out"
_WINDOW_INPUTS = {i.name: i for i in INPUTS}  # the window graph's inputs, which the step graph shares in part
STEP_INPUTS: tuple[TensorSpec, ...] = (
    replace(_WINDOW_INPUTS["input_units"], doc="row of each spike's unit in `units`; spikes only, no START/END tokens"),
    replace(_WINDOW_INPUTS["input_times"], doc="each spike's time in seconds from the chunk's start, in [0, chunk)"),
    TensorSpec("state", "float32", (1, "dim"), "the state before this chunk"),
    _WINDOW_INPUTS["session"],
)
STEP_DOC = (
    "One call per chunk of `chunk` seconds of the stream (chunk k spans [start + k * chunk, start + (k + 1) * "
    "chunk) on the session clock): its spikes in, with times from the chunk's start (n_tokens may be 0), and the "
    "state before it (`initial_state` for the first chunk). Out: `behavior`, the prediction for any time from the "
    "chunk's end until the next chunk's end, and `state_out`, the next call's `state`. Before the first chunk ends "
    "the prediction is `initial_behavior` of the session."
)


class ChunkStepGraph(RecurrentStages, nn.Module):
    """One chunk of a recurrent model for one behaviour task, denormalised: the graph `spiketok export` writes.

    forward(input_units (n,) int64, input_times (n,) float64 s from the chunk start, state (1, dim) float32,
            session (1,) int64) -> behavior (1, D) float32 in the recording's units, state_out (1, dim) float32.
    """

    def __init__(self, model: RecurrentPOYO, target: str):
        super().__init__()
        model.eval()
        c = model.config
        self.session_weight, self.latent_emb, self.rotary = model.session_emb.weight, model.latent_emb, model.rotary
        self.encoder, self.processor, self.norm_out = model.encoder, model.processor, model.norm_out
        self.chunk_token, self.state_init, self.norm_chunk = model.chunk_token, model.state_init, model.norm_chunk
        self.recurrence, self.state_readout = model.recurrence, model.state_readout
        self.readouts = nn.ModuleDict({target: model.readouts[target]})
        with torch.no_grad():  # every unit's spike keys and values (n_units, 2 * inner): a row gather per spike
            units = model.unit_emb.weight
            table = model.pair_kv(units, torch.full((len(units),), int(TokenType.SPIKE), dtype=torch.long))
        self.register_buffer("spike_kv", table.detach().clone(), persistent=False)
        centre = torch.full((1, c.num_latents_per_step), c.latent_step / 2, dtype=torch.float64)
        self.register_buffer("centre", centre, persistent=False)  # the latents' time from the chunk start
        mean, std = normalization_tables(model, target)
        self.register_buffer("mean", mean, persistent=False)
        self.register_buffer("std", std, persistent=False)

    def forward(
        self, input_units: torch.Tensor, input_times: torch.Tensor, state: torch.Tensor, session: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        rot = self.rotary(self.centre, real=True)  # (1, L, 1, d/2) the latents, at the chunk's centre
        latents = self.latent_emb.weight[None]  # (1, L, dim)
        # one masked spike more (unit 0 at time 0): a chunk without spikes has no empty tensor (ONNX's reshape fails)
        units, times = F.pad(input_units, (0, 1)), F.pad(input_times, (0, 1))  # (n + 1,)
        mask = F.pad(torch.ones_like(input_units, dtype=torch.bool), (0, 1))[None]  # (1, n + 1), False: the pad
        kv = F.embedding(units, self.spike_kv)[None]  # (1, n + 1, 2 * inner)
        k, v = self.encoder.attn.rotate_kv(kv, self.rotary(times[None], real=True))  # (1, n + 1, H, d) each
        q = rotate(self.encoder.query(latents), rot)  # (1, L, H, d)
        latents = self.encode_chunks(latents, q, k, v, rot, mask)  # (1, L, dim)
        x = self.chunk_input(latents)  # (1, L * dim)
        state_out = self.update(x[:, None], state[None])[1][0]  # (1, dim)
        query = F.embedding(session, self.session_weight)  # (1, dim)
        pred = self.readout(self.read(query, state_out))  # (1, D), normalised
        return pred * self.std[session] + self.mean[session], state_out


def _example(model: RecurrentPOYO, n_tokens: int = 24) -> tuple[torch.Tensor, ...]:
    """Example inputs to trace with (the number of spikes becomes a dynamic axis)."""
    g = torch.Generator().manual_seed(0)
    units = torch.randint(0, len(model.unit_emb), (n_tokens,), generator=g)
    times = torch.rand(n_tokens, generator=g, dtype=torch.float64) * model.config.latent_step
    return units, times, torch.randn(1, model.config.dim, generator=g), torch.zeros(1, dtype=torch.long)


def recurrent_entry(model: RecurrentPOYO, target: str) -> RecurrentEntry:
    """The sidecar's `recurrent` entry: the chunk length, the initial state and each session's prediction from it."""
    with torch.no_grad():
        mean, std = normalization_tables(model, target)
        queries = model.session_emb.weight  # (n_sessions, dim)
        state = model.state_init.expand_as(queries)
        initial = model.readouts[target](model.read(queries, state)) * std + mean  # (n_sessions, D)
    return RecurrentEntry(
        doc=STEP_DOC,
        chunk=float(model.config.latent_step),
        dim=int(model.config.dim),
        initial_state=tuple(float(x) for x in model.state_init.detach()),
        initial_behavior={s: tuple(float(x) for x in initial[k]) for k, s in enumerate(model.session_emb.ids)},
    )


def export_recurrent(
    model: RecurrentPOYO, out: str | Path, fmt: str, target: str, int8: bool = False
) -> tuple[Path, Path]:
    """Write the step graph of a recurrent model at `out` and its sidecar at `out`.json (see spiketok.model.export's
    `export_model`, which checks the arguments and calls this); returns both paths."""
    out = Path(out)
    graph = ChunkStepGraph(model, target).eval()
    write_graph(graph, _example(model), STEP_INPUTS, (OUTPUT_NAME, STATE_NAME), out, fmt, int8)
    meta = sidecar(model, target, fmt, "int8" if int8 else "float32")
    outputs = (
        TensorSpec(OUTPUT_NAME, "float32", (1, meta.dims), f"{target} in the recording's units"),
        TensorSpec(STATE_NAME, "float32", (1, int(model.config.dim)), "the state after this chunk"),
    )
    meta = replace(
        meta, backbone="recurrent", inputs=STEP_INPUTS, outputs=outputs, recurrent=recurrent_entry(model, target)
    )
    return out, write_sidecar(meta, out)
