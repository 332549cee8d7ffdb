"""The export of a recurrent model (spiketok.model.recurrent): one step graph, a chunk's spikes and the state in,
the new state and its prediction out; and its sidecar.

The graph is `spiketok.model.recurrent_step.ChunkStep`, the streaming decoder's own step: the model's fixed parts
folded into constants, few nodes. A caller keeps the state between calls: the sidecar's
`recurrent.initial_state` at the stream's start, then the graph's `state_out` of each chunk as the next chunk's
`state`.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch

from .export_sidecar import INPUTS, OUTPUT_NAME, sidecar
from .graph_file import normalization_tables, write_graph
from .recurrent import RecurrentPOYO
from .recurrent_step import ChunkStep
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
    graph = ChunkStep(model.eval(), target).eval()
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
