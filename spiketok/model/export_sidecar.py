"""What an exported POYO graph takes and gives, and the builders of its sidecar (`FILE.json`, a
spiketok.model.sidecar.Sidecar) that tells a caller outside Python how to tokenize a window for it and how to stream
with the keys and stream graphs (spiketok.model.export).
"""

from __future__ import annotations

import copy
from pathlib import Path

from ..tokenize.tokenizer import TOKEN_END, TOKEN_SPIKE, TOKEN_START, SpikeTokenizer
from .poyo import POYO
from .sidecar import SIDECAR_FORMAT, SIDECAR_VERSION, GraphEntry, LatentLayout, Sidecar, StreamEntry, TensorSpec
from .sidecar import sidecar_path as sidecar_path  # re-exported: FILE.json beside FILE

UNITS_IN = TensorSpec(
    "input_units", "int64", ("n_tokens",), "row of each token's unit in the unit vocabulary (`units`)"
)
TYPES_IN = TensorSpec("input_types", "int64", ("n_tokens",), "token type code (`token_types`)")
OUTPUT_TIMES_IN = TensorSpec(
    "output_times",
    "float64",
    ("n_out",),
    "times (s from the window start) to read the behaviour at; the window end (= window) for streaming",
)
SESSION_IN = TensorSpec("session", "int64", (1,), "row of the recording's session (`sessions`)")
INPUTS: tuple[TensorSpec, ...] = (
    UNITS_IN,
    TensorSpec(
        "input_times", "float64", ("n_tokens",), "each token's time in seconds from the window start, in [0, window]"
    ),
    TYPES_IN,
    OUTPUT_TIMES_IN,
    SESSION_IN,
)
WINDOW_START = TensorSpec(
    "window_start",
    "float64",
    (1,),
    "the window's start in session time (s); only graphs whose latents sit on the absolute grid "
    "(`latents.grid`) take it: the latents' times follow `latents.rule`",
)
OUTPUT_NAME = "behavior"
KEYS_NAME = "keys"
KEYS_INPUTS: tuple[TensorSpec, ...] = (
    UNITS_IN,
    TYPES_IN,
    TensorSpec(
        "input_times",
        "float64",
        ("n_tokens",),
        "each token's time in seconds of the SESSION clock (not from a window start)",
    ),
)
STREAM_INPUTS: tuple[TensorSpec, ...] = (
    TensorSpec(
        KEYS_NAME,
        "float32",
        ("n_tokens", "keys_width"),
        "the keys graph's output for every token of the window: its spikes, and a START token at window_start "
        "and an END token at window_start + window per unit of the session (any order)",
    ),
    OUTPUT_TIMES_IN,
    SESSION_IN,
    TensorSpec("window_start", "float64", (1,), "the window's start in session time (s)"),
)
STREAM_DOC = (
    "Streaming in two graphs, so that a decode keys only the spikes that arrived since the last one: key "
    "each packet of spikes once with the keys graph (type spike, session-clock times) and keep the keys of "
    "the last window's spikes; at each decode at time t, key the session's START tokens at t - window and "
    "END tokens at t with the keys graph, and run the stream graph on the keys of the START/END tokens "
    "and of the spikes in [t - window, t), with window_start = t - window. Same outputs as the window "
    "graph on that window (rotary attention depends on time differences only)."
)
ABSOLUTE_RULE = (
    "latent times (s from the window start) = (k0 + j + 0.5) * step - window_start for j = 0 .. "
    "window/step - 1, each repeated per_step times (ids 0 .. per_step - 1), with "
    "k0 = ceil(window_start / step - 0.5)"
)


def graph_inputs(model: POYO) -> tuple[TensorSpec, ...]:
    """The exported graph's inputs, in order: window_start only for latents on the absolute grid."""
    return INPUTS + (WINDOW_START,) if model.config.latent_grid == "absolute" else INPUTS


def latent_layout(model: POYO) -> LatentLayout:
    """Where the graph's latent tokens sit: the tokenizer's layout of the model's window and latent grid."""
    c = model.config
    lat_ids, lat_times = SpikeTokenizer(c.num_latents_per_step, c.latent_step, c.window).latents()
    absolute = c.latent_grid == "absolute"
    return LatentLayout(
        grid=c.latent_grid,
        step=float(c.latent_step),
        per_step=int(c.num_latents_per_step),
        ids=tuple(int(i) for i in lat_ids),
        times=None if absolute else tuple(float(t) for t in lat_times),
        rule=ABSOLUTE_RULE if absolute else None,
    )


def sidecar(
    model: POYO, target: str, graph_format: str, precision: str = "float32", stream: StreamEntry | None = None
) -> Sidecar:
    """What a caller outside Python needs to tokenize a window for the exported graph (the `FILE.json` beside it);
    `stream`: the streaming graphs' entry (`stream_entry`), when they were written."""
    from .. import __version__

    dims = model.readouts[target].out_features
    return Sidecar(
        format=SIDECAR_FORMAT,
        format_version=SIDECAR_VERSION,
        spiketok_version=__version__,
        graph=graph_format,
        precision=precision,
        target=target,
        dims=dims,
        window=float(model.config.window),
        causal=model.meta.causal,
        token_types={"spike": int(TOKEN_SPIKE), "start": int(TOKEN_START), "end": int(TOKEN_END)},
        latents=latent_layout(model),
        units={u: k for k, u in enumerate(model.unit_emb.ids)},
        sessions={s: k for k, s in enumerate(model.session_emb.ids)},
        normalization={
            sid: copy.deepcopy(per_task[target])
            for sid, per_task in model.normalizer.stats.items()
            if target in per_task and sid in model.session_emb.index
        },
        targets=dict(model.meta.targets),
        splits=copy.deepcopy(model.meta.splits),
        inputs=graph_inputs(model),
        outputs=(
            TensorSpec(
                OUTPUT_NAME,
                "float32",
                ("n_out", dims),
                f"{target} in the recording's units (denormalised with the session's statistics)",
            ),
        ),
        stream=stream,
    )


def stream_entry(model: POYO, target: str, keys_file: str, stream_file: str) -> StreamEntry:
    """The sidecar's description of the two streaming graphs (file names relative to the sidecar's folder)."""
    width = 2 * model.encoder.attn.heads * model.encoder.attn.head_dim
    keys_out = TensorSpec(
        KEYS_NAME, "float32", ("n_tokens", width), "each token's encoder keys then values, rotated by its session time"
    )
    behavior = TensorSpec(
        OUTPUT_NAME, "float32", ("n_out", model.readouts[target].out_features), "as the window graph's output"
    )
    return StreamEntry(
        doc=STREAM_DOC,
        keys=GraphEntry(keys_file, KEYS_INPUTS, (keys_out,)),
        window=GraphEntry(stream_file, STREAM_INPUTS, (behavior,)),
    )


def stream_paths(out: str | Path) -> tuple[Path, Path]:
    """Where the streaming graphs of an export at `out` go: OUT's stem + .keys / .stream, same suffix."""
    out = Path(out)
    return out.with_name(f"{out.stem}.keys{out.suffix}"), out.with_name(f"{out.stem}.stream{out.suffix}")
