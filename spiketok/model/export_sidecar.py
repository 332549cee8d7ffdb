"""What an exported POYO graph takes and gives, and the sidecar JSON (`FILE.json`) that tells a caller outside
Python how to tokenize a window for it and how to stream with the keys and stream graphs (spiketok.model.export).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..tokenize.tokenizer import TOKEN_END, TOKEN_SPIKE, TOKEN_START, SpikeTokenizer
from .poyo import POYO

SIDECAR_FORMAT = "spiketok-export"
SIDECAR_VERSION = 3  # bump when the sidecar changes in a way older readers cannot follow (2: absolute latent grid;
# 3: recurrent models' step graph, `backbone` and `recurrent`)

INPUTS: list[dict[str, Any]] = [
    {
        "name": "input_units",
        "dtype": "int64",
        "shape": ["n_tokens"],
        "doc": "row of each token's unit in the unit vocabulary (`units`)",
    },
    {
        "name": "input_times",
        "dtype": "float64",
        "shape": ["n_tokens"],
        "doc": "each token's time in seconds from the window start, in [0, window]",
    },
    {"name": "input_types", "dtype": "int64", "shape": ["n_tokens"], "doc": "token type code (`token_types`)"},
    {
        "name": "output_times",
        "dtype": "float64",
        "shape": ["n_out"],
        "doc": "times (s from the window start) to read the behaviour at; the window end (= window) for streaming",
    },
    {"name": "session", "dtype": "int64", "shape": [1], "doc": "row of the recording's session (`sessions`)"},
]
WINDOW_START = {
    "name": "window_start",
    "dtype": "float64",
    "shape": [1],
    "doc": "the window's start in session time (s); only graphs whose latents sit on the absolute grid "
    "(`latents.grid`) take it: the latents' times follow `latents.rule`",
}
OUTPUT_NAME = "behavior"
KEYS_NAME = "keys"
KEYS_INPUTS: list[dict[str, Any]] = [
    {
        "name": "input_units",
        "dtype": "int64",
        "shape": ["n_tokens"],
        "doc": "row of each token's unit in the unit vocabulary (`units`)",
    },
    {"name": "input_types", "dtype": "int64", "shape": ["n_tokens"], "doc": "token type code (`token_types`)"},
    {
        "name": "input_times",
        "dtype": "float64",
        "shape": ["n_tokens"],
        "doc": "each token's time in seconds of the SESSION clock (not from a window start)",
    },
]
STREAM_INPUTS: list[dict[str, Any]] = [
    {
        "name": KEYS_NAME,
        "dtype": "float32",
        "shape": ["n_tokens", "keys_width"],
        "doc": "the keys graph's output for every token of the window: its spikes, and a START token at window_start "
        "and an END token at window_start + window per unit of the session (any order)",
    },
    {
        "name": "output_times",
        "dtype": "float64",
        "shape": ["n_out"],
        "doc": "times (s from the window start) to read the behaviour at; the window end (= window) for streaming",
    },
    {"name": "session", "dtype": "int64", "shape": [1], "doc": "row of the recording's session (`sessions`)"},
    {"name": "window_start", "dtype": "float64", "shape": [1], "doc": "the window's start in session time (s)"},
]
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


def graph_inputs(model: POYO) -> list[dict[str, Any]]:
    """The exported graph's inputs, in order: window_start only for latents on the absolute grid."""
    return INPUTS + [WINDOW_START] if model.config.latent_grid == "absolute" else list(INPUTS)


def sidecar(
    model: POYO, target: str, graph_format: str, precision: str = "float32", stream: dict[str, Any] | None = None
) -> dict[str, Any]:
    """What a caller outside Python needs to tokenize a window for the exported graph (the `FILE.json` beside it);
    `stream`: the streaming graphs' entry (`stream_entry`), when they were written."""
    from .. import __version__

    c = model.config
    lat_ids, lat_times = SpikeTokenizer(c.num_latents_per_step, c.latent_step, c.window).latents()
    dims = model.readouts[target].out_features
    return {
        "format": SIDECAR_FORMAT,
        "format_version": SIDECAR_VERSION,
        "spiketok_version": __version__,
        "graph": graph_format,
        "precision": precision,
        "target": target,
        "dims": dims,
        "window": float(c.window),
        "causal": model.meta.causal,
        "token_types": {"spike": TOKEN_SPIKE, "start": TOKEN_START, "end": TOKEN_END},
        "latents": {
            "grid": c.latent_grid,
            "step": float(c.latent_step),
            "per_step": int(c.num_latents_per_step),
            "ids": [int(i) for i in lat_ids],
            **({"rule": ABSOLUTE_RULE} if c.latent_grid == "absolute" else {"times": [float(t) for t in lat_times]}),
        },
        "units": {u: k for k, u in enumerate(model.unit_emb.ids)},
        "sessions": {s: k for k, s in enumerate(model.session_emb.ids)},
        "normalization": {
            sid: per_task[target]
            for sid, per_task in model.normalizer.stats.items()
            if target in per_task and sid in model.session_emb.index
        },
        "targets": dict(model.meta.targets),
        "splits": dict(model.meta.splits),
        "inputs": graph_inputs(model),
        "outputs": [
            {
                "name": OUTPUT_NAME,
                "dtype": "float32",
                "shape": ["n_out", dims],
                "doc": f"{target} in the recording's units (denormalised with the session's statistics)",
            }
        ],
        **({"stream": stream} if stream else {}),
    }


def stream_entry(model: POYO, target: str, keys_file: str, stream_file: str) -> dict[str, Any]:
    """The sidecar's description of the two streaming graphs (file names relative to the sidecar's folder)."""
    width = 2 * model.encoder.attn.heads * model.encoder.attn.head_dim
    return {
        "doc": STREAM_DOC,
        "keys": {
            "file": keys_file,
            "inputs": KEYS_INPUTS,
            "outputs": [
                {
                    "name": KEYS_NAME,
                    "dtype": "float32",
                    "shape": ["n_tokens", width],
                    "doc": "each token's encoder keys then values, rotated by its session time",
                }
            ],
        },
        "window": {
            "file": stream_file,
            "inputs": STREAM_INPUTS,
            "outputs": [
                {
                    "name": OUTPUT_NAME,
                    "dtype": "float32",
                    "shape": ["n_out", model.readouts[target].out_features],
                    "doc": "as the window graph's output",
                }
            ],
        },
    }


def stream_paths(out: str | Path) -> tuple[Path, Path]:
    """Where the streaming graphs of an export at `out` go: OUT's stem + .keys / .stream, same suffix."""
    out = Path(out)
    return out.with_name(f"{out.stem}.keys{out.suffix}"), out.with_name(f"{out.stem}.stream{out.suffix}")


def sidecar_path(path: str | Path) -> Path:
    """Where the sidecar of an exported graph lives: FILE.json beside FILE."""
    return Path(str(path) + ".json")
