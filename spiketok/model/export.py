"""An export-friendly graph of a trained POYO: one window of spike tokens in, behaviour in recording units out.

`WindowGraph` runs the model's own submodules and weights (embeddings, layer norms, projections, feed-forward
blocks, read-out) on a batch of one window, written with operations that ONNX and TorchScript carry:
rotations as real cos/sin arithmetic (ONNX has no complex tensors; the model multiplies complex numbers,
the same products), each token's key and value a row of a constant table over the vocabulary's (unit, type)
pairs (computed per token instead when that table would pass MAX_TABLE_FLOATS), no masks (nothing is
padded). `sidecar` describes how to tokenize for it.
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..data.atomic import atomic_write
from ..errors import SpiketokError
from ..tokenize.tokenizer import TOKEN_END, TOKEN_SPIKE, TOKEN_START, SpikeTokenizer
from .attention import RotaryAttention, RotarySelfAttention
from .poyo import N_TOKEN_TYPES, POYO

MAX_TABLE_FLOATS = (
    16_000_000  # the graph holds the token key/value table up to 64 MB; larger vocabularies project per token
)

SIDECAR_FORMAT = "spiketok-export"
SIDECAR_VERSION = 2  # bump when the sidecar changes in a way older readers cannot follow (2: absolute latent grid)

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


class _Rotation(nn.Module):
    """cos and sin (n, 1, head_dim/2) of a RotaryTimeEmbedding's angles for times t (n,) float64.

    The same float64 angles, wrapped to [0, 2*pi), then float32, as spiketok.model.rotary computes them."""

    def __init__(self, omega: torch.Tensor):
        super().__init__()
        self.register_buffer("omega", omega.detach().clone().to(torch.float64), persistent=False)

    def forward(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        a = t.to(torch.float64).unsqueeze(-1) * self.omega
        a = (a - (2 * math.pi) * torch.floor(a / (2 * math.pi))).to(torch.float32)
        return a.cos().unsqueeze(-2), a.sin().unsqueeze(-2)


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, inverse: bool = False) -> torch.Tensor:
    """x (n, H, d) with consecutive feature pairs rotated by (cos, sin) (n, 1, d/2): spiketok.model.rotary.rotate
    in real arithmetic ((a + ib)(c + is) = (ac - bs) + i(as + bc))."""
    n, h, d = x.shape
    pairs = x.reshape(n, h, d // 2, 2)
    a, b = pairs[..., 0], pairs[..., 1]
    if inverse:
        sin = -sin
    cos, sin = cos.expand(n, h, d // 2), sin.expand(n, h, d // 2)  # same shapes: onnxruntime's fast element-wise path
    return torch.stack([a * cos - b * sin, a * sin + b * cos], dim=-1).reshape(n, h, d)


def _rotate_context(att: RotaryAttention, kv: torch.Tensor, ctx_rot: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """Keys and values kv (m, 2 * inner) (normed and projected) rotated by the context's angles -> (m, 2 * H, d):
    keys in heads 0 .. H-1, values in H .. 2H-1 (rotated too where the attention rotates its values)."""
    h, d = att.heads, att.head_dim
    if att.rotate_value:  # keys and values rotated by the same angles: one rotation for both
        return _rotate(kv.reshape(-1, 2 * h, d), *ctx_rot)
    k, v = kv.reshape(-1, 2 * h, d).chunk(2, dim=1)
    return torch.cat([_rotate(k, *ctx_rot), v], dim=1)


def _attend_rotated(
    att: RotaryAttention, x: torch.Tensor, x_rot: tuple[torch.Tensor, torch.Tensor], kv_rot: torch.Tensor
) -> torch.Tensor:
    """RotaryAttention.forward for one window: normed queries x (n, dim) over rotated keys and values
    kv_rot (m, 2 * H, d) (`_rotate_context`) -> (n, dim)."""
    h, d = att.heads, att.head_dim
    q = _rotate(att.to_q(x).reshape(-1, h, d), *x_rot)
    k, v = kv_rot.chunk(2, dim=1)
    q, k, v = (t.transpose(0, 1).unsqueeze(0) for t in (q, k, v))  # (1, H, n, d): the model's 4-D layout
    out = F.scaled_dot_product_attention(q, k, v)[0].transpose(0, 1)
    if att.rotate_value:
        out = _rotate(out, *x_rot, inverse=True)
    return att.to_out(out.reshape(-1, h * d))


def _attend(
    att: RotaryAttention,
    x: torch.Tensor,
    x_rot: tuple[torch.Tensor, torch.Tensor],
    kv: torch.Tensor,
    ctx_rot: tuple[torch.Tensor, torch.Tensor],
) -> torch.Tensor:
    """RotaryAttention.forward for one window: normed queries x (n, dim) over the context's keys and values
    kv (m, 2 * inner) (normed and projected, not rotated) -> (n, dim)."""
    return _attend_rotated(att, x, x_rot, _rotate_context(att, kv, ctx_rot))


def _self_attend(att: RotarySelfAttention, x: torch.Tensor, rot: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """RotarySelfAttention.forward for one window: x (n, dim) -> (n, dim)."""
    h, d = att.heads, att.head_dim
    q, k, v = (_rotate(t.reshape(-1, h, d), *rot) for t in att.to_qkv(x).chunk(3, dim=-1))
    q, k, v = (t.transpose(0, 1).unsqueeze(0) for t in (q, k, v))  # (1, H, n, d): the model's 4-D layout
    out = F.scaled_dot_product_attention(q, k, v)[0].transpose(0, 1)
    return att.to_out(_rotate(out, *rot, inverse=True).reshape(-1, h * d))


class _GraphParts(nn.Module):
    """The pieces every exported graph is made of: the model's own submodules and weights (shared, not copied), the
    token key/value table, the latent layout and the normalisation of one task; subclasses' `forward` assemble them.

    Not the model itself: its vocabularies and statistics are extra state (dicts), which the tracers behind ONNX and
    TorchScript export cannot carry."""

    def __init__(self, model: POYO, target: str):
        super().__init__()
        if target not in model.task_names:
            raise ValueError(f"target {target!r} is not a task of this model (it has {model.task_names})")
        c = model.config
        model.eval()
        self.target = target
        self.unit_weight, self.session_weight = model.unit_emb.weight, model.session_emb.weight
        self.token_type_emb, self.latent_emb = model.token_type_emb, model.latent_emb
        self.encoder, self.processor, self.decoder = model.encoder, model.processor, model.decoder
        self.norm_out, self.readout = model.norm_out, model.readouts[target]
        self.rotation = _Rotation(model.rotary.omega)
        # the encoder's keys and values of every (unit, type) pair, as a constant of the graph (the model keeps
        # the same table in inference): a token's then cost a row gather, not a LayerNorm and a projection
        if model.token_kv_table_floats() <= MAX_TABLE_FLOATS:
            with torch.no_grad():
                table = model.token_kv_table()
            self.register_buffer("token_kv", table.detach().clone(), persistent=False)
        else:
            self.token_kv = None
        self.absolute, self.latent_step = c.latent_grid == "absolute", float(c.latent_step)
        lat_ids, lat_times = SpikeTokenizer(c.num_latents_per_step, c.latent_step, c.window).latents()
        self.register_buffer("latent_ids", torch.from_numpy(lat_ids), persistent=False)
        # window grid: the latents' times; absolute grid: their offsets j + 0.5 on the grid from its first point
        offsets = np.repeat(np.arange(len(lat_ids) // c.num_latents_per_step) + 0.5, c.num_latents_per_step)
        self.register_buffer(
            "latent_times", torch.from_numpy(offsets if self.absolute else lat_times), persistent=False
        )
        dims = model.readouts[target].out_features
        mean, std = torch.zeros(len(model.session_emb), dims), torch.ones(len(model.session_emb), dims)
        for sid, per_task in model.normalizer.stats.items():
            if sid in model.session_emb.index and target in per_task:
                row = model.session_emb.index[sid]
                mean[row], std[row] = (torch.tensor(per_task[target][k], dtype=torch.float32) for k in ("mean", "std"))
        self.register_buffer("mean", mean, persistent=False)
        self.register_buffer("std", std, persistent=False)

    def tokens_kv(self, input_units: torch.Tensor, input_types: torch.Tensor) -> torch.Tensor:
        """The encoder's keys and values (n_tokens, 2 * inner) of tokens (normed and projected, not rotated)."""
        if self.token_kv is not None:  # each (unit, type) pair's keys and values, from the table
            return F.embedding(input_units * N_TOKEN_TYPES + input_types, self.token_kv)
        x = F.embedding(input_units, self.unit_weight) + self.token_type_emb(input_types)  # (n_tokens, dim)
        return self.encoder.kv(x)

    def grid_times(self, window_start: torch.Tensor) -> torch.Tensor:
        """Session times (n_latents,) float64 of the absolute-grid latents of the window starting at window_start:
        grid points (k + 0.5) * step inside the window, as SpikeTokenizer.latents places them."""
        k0 = torch.ceil(window_start / self.latent_step - 0.5)
        return (k0 + self.latent_times) * self.latent_step

    def finish(
        self,
        lat: torch.Tensor,
        lat_rot: tuple[torch.Tensor, torch.Tensor],
        output_times: torch.Tensor,
        session: torch.Tensor,
    ) -> torch.Tensor:
        """Encoded latents (n_latents, dim) with their rotations from the window start -> behaviour (n_out, D):
        the latent blocks, the output queries' cross-attention, the read-out and the session's statistics."""
        for block in self.processor:
            lat = lat + _self_attend(block.attn, block.norm_attn(lat), lat_rot)
            lat = lat + block.ff(block.norm_ff(lat))
        q = F.embedding(session.expand(output_times.shape[0]), self.session_weight)  # (n_out, dim)
        dec = self.decoder
        q = q + _attend(dec.attn, dec.norm_q(q), self.rotation(output_times), dec.kv(lat), lat_rot)
        q = q + dec.ff(dec.norm_ff(q))
        pred = self.readout(self.norm_out(q))  # (n_out, D), normalised
        return pred * self.std[session] + self.mean[session]


class WindowGraph(_GraphParts):
    """POYO on one window for one behaviour task, denormalised: the graph `spiketok export` writes.

    forward(input_units (n_tokens,) int64, input_times (n_tokens,) float64, input_types (n_tokens,) int64,
            output_times (n_out,) float64, session (1,) int64[, window_start (1,) float64]) -> behaviour (n_out, D).
    Latent ids are fixed by the model's window and latent grid (buffers, not inputs); so are their times on the
    window grid, while on the absolute grid they follow window_start as the tokenizer places them. Sessions
    without normalisation statistics for `target` get mean 0, std 1 (normalised output).
    """

    def forward(
        self,
        input_units: torch.Tensor,
        input_times: torch.Tensor,
        input_types: torch.Tensor,
        output_times: torch.Tensor,
        session: torch.Tensor,
        window_start: torch.Tensor | None = None,
    ) -> torch.Tensor:
        kv = self.tokens_kv(input_units, input_types)  # (n_tokens, 2 * inner)
        x_rot = self.rotation(input_times)
        lat = self.latent_emb(self.latent_ids)  # (n_latents, dim)
        if self.absolute:
            lat_rot = self.rotation(self.grid_times(window_start) - window_start)
        else:
            lat_rot = self.rotation(self.latent_times)
        enc = self.encoder
        lat = lat + _attend(enc.attn, enc.norm_q(lat), lat_rot, kv, x_rot)
        lat = lat + enc.ff(enc.norm_ff(lat))
        return self.finish(lat, lat_rot, output_times, session)


class SpikeKeysGraph(_GraphParts):
    """The per-token half of a streaming decode: tokens' encoder keys and values, rotated by their SESSION times.

    forward(input_units (n,) int64, input_types (n,) int64, input_times (n,) float64 seconds of the session clock)
        -> keys (n, 2 * heads * head_dim) float32: keys then values per head, as StreamGraph takes them.
    A spike's keys never change while it stays in the window (rotary attention depends on time differences
    only), so a streaming caller keys each spike once, when it arrives, and START/END tokens at each decode."""

    def forward(self, input_units: torch.Tensor, input_types: torch.Tensor, input_times: torch.Tensor) -> torch.Tensor:
        kv = _rotate_context(self.encoder.attn, self.tokens_kv(input_units, input_types), self.rotation(input_times))
        return kv.reshape(kv.shape[0], -1)


class StreamGraph(_GraphParts):
    """The per-window half of a streaming decode: the window's keyed tokens (SpikeKeysGraph) -> behaviour.

    forward(keys (n_tokens, 2 * heads * head_dim) float32, output_times (n_out,) float64 from the window start,
            session (1,) int64, window_start (1,) float64 session time) -> behaviour (n_out, D).
    The latents' encoder queries are rotated by their session times (window_start + their offsets), the same
    clock as the keys; the latent blocks and read-out use times from the window start, as WindowGraph does."""

    def forward(
        self, keys: torch.Tensor, output_times: torch.Tensor, session: torch.Tensor, window_start: torch.Tensor
    ) -> torch.Tensor:
        if self.absolute:
            session_times = self.grid_times(window_start)
            relative = session_times - window_start
        else:
            relative = self.latent_times
            session_times = relative + window_start
        enc = self.encoder
        kv_rot = keys.reshape(keys.shape[0], 2 * enc.attn.heads, enc.attn.head_dim)
        lat = self.latent_emb(self.latent_ids)  # (n_latents, dim)
        lat = lat + _attend_rotated(enc.attn, enc.norm_q(lat), self.rotation(session_times), kv_rot)
        lat = lat + enc.ff(enc.norm_ff(lat))
        return self.finish(lat, self.rotation(relative), output_times, session)


def sidecar(
    model: POYO, target: str, graph_format: str, precision: str = "float32", stream: dict[str, Any] | None = None
) -> dict[str, Any]:
    """What a caller outside Python needs to tokenize a window for the exported graph (the `FILE.json` beside it);
    `stream`: the streaming graphs' entry (`stream_entry`), when they were written."""
    from .. import __version__

    c = model.config
    lat_ids, lat_times = SpikeTokenizer(c.num_latents_per_step, c.latent_step, c.window).latents()
    hp = getattr(model, "hparams", None) or {}
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
        "causal": bool(hp.get("train", {}).get("causal", False)),
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
        "targets": dict(hp.get("targets") or {}),
        "splits": dict(hp.get("splits") or {}),
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


FORMATS = ("onnx", "torchscript")
ONNX_OPSET = 17  # LayerNormalization is an ONNX op from 17 on


class ExportError(SpiketokError, ValueError):
    """The model cannot be exported as asked (unknown format or target, export packages missing)."""


def sidecar_path(path: str | Path) -> Path:
    """Where the sidecar of an exported graph lives: FILE.json beside FILE."""
    return Path(str(path) + ".json")


def default_target(model: POYO) -> str:
    """The task to export: the model's only task, or the one every session was trained on."""
    if len(model.task_names) == 1:
        return model.task_names[0]
    trained = set(((getattr(model, "hparams", None) or {}).get("targets") or {}).values())
    if len(trained) == 1:
        return trained.pop()
    raise ExportError(f"this model has several tasks {model.task_names}: choose one with --target")


def _example(model: POYO, n_tokens: int = 64, n_out: int = 2) -> dict[str, tuple[torch.Tensor, ...]]:
    """Example inputs of each graph to trace with (their sizes become dynamic axes)."""
    g = torch.Generator().manual_seed(0)
    w = model.config.window
    units = torch.randint(0, max(len(model.unit_emb), 1), (n_tokens,), generator=g)
    times = torch.rand(n_tokens, generator=g, dtype=torch.float64) * w
    types = torch.randint(0, 3, (n_tokens,), generator=g)
    out_times = torch.linspace(0, w, n_out, dtype=torch.float64)
    session, start = torch.zeros(1, dtype=torch.long), torch.tensor([12.34], dtype=torch.float64)
    width = 2 * model.encoder.attn.heads * model.encoder.attn.head_dim
    return {
        "window": (units, times, types, out_times, session)
        + ((start,) if model.config.latent_grid == "absolute" else ()),
        "keys": (units, types, times + start),
        "stream": (torch.randn(n_tokens, width, generator=g), out_times, session, start),
    }


def _write_graph(
    graph: nn.Module,
    example: tuple[torch.Tensor, ...],
    inputs: list[dict[str, Any]],
    output: str,
    path: Path,
    fmt: str,
    int8: bool,
) -> None:
    """Trace `graph` on `example` into an ONNX or TorchScript file at `path` (written atomically); inputs with a
    named first axis (n_tokens, n_out) are dynamic there, as is the output's first axis."""
    names = [i["name"] for i in inputs]
    dynamic = {i["name"]: {0: i["shape"][0]} for i in inputs if isinstance(i["shape"][0], str)}
    with warnings.catch_warnings():  # tracer and deprecation notes about the exporters themselves, not the model
        warnings.simplefilter("ignore")
        with torch.no_grad(), atomic_write(path) as tmp:
            if fmt == "onnx":
                # the TorchScript-based exporter: with dynamo=True the ONNX graph drifted 7e-4 from PyTorch
                torch.onnx.export(
                    graph,
                    example,
                    tmp,
                    input_names=names,
                    output_names=[output],
                    opset_version=ONNX_OPSET,
                    dynamo=False,
                    dynamic_axes={**dynamic, output: {0: "n_tokens" if output == KEYS_NAME else "n_out"}},
                )
                if int8:
                    _quantize_onnx(Path(tmp))
            else:
                torch.jit.save(torch.jit.trace(graph, example, check_trace=False), tmp)


def export_model(
    model: POYO, out: str | Path, fmt: str = "onnx", target: str | None = None, int8: bool = False
) -> tuple[Path, Path]:
    """Write `model` as an ONNX or TorchScript graph of one window (WindowGraph) at `out`, its two streaming graphs
    (SpikeKeysGraph, StreamGraph) beside it (`stream_paths`), and its sidecar JSON at `out`.json; returns the
    window graph's and the sidecar's paths. Dynamic axes: the number of tokens and of output times.
    int8 (ONNX only): weights of the matrix products quantized to int8 by onnxruntime's dynamic quantization
    (activations quantized per call); its accuracy cost is measured in docs/benchmarks.md."""
    if fmt not in FORMATS:
        raise ExportError(f"unknown export format {fmt!r}; choose one of {list(FORMATS)}")
    if int8 and fmt != "onnx":
        raise ExportError("int8 export is for ONNX graphs (onnxruntime's quantization); use --format onnx")
    if not len(model.unit_emb) or not len(model.session_emb):
        raise ExportError("this model has no units or no sessions in its vocabulary: train it first")
    target = default_target(model) if target is None else target
    if target not in model.task_names:
        raise ExportError(f"target {target!r} is not a task of this model (it has {model.task_names})")
    if fmt == "onnx":
        try:
            import onnx  # noqa: F401  (torch.onnx.export needs it)
        except ImportError:
            raise ExportError("ONNX export needs the `onnx` package: pip install 'spiketok[export]'") from None
    out = Path(out)
    keys_path, stream_path = stream_paths(out)
    example = _example(model)
    _write_graph(WindowGraph(model, target).eval(), example["window"], graph_inputs(model), OUTPUT_NAME, out, fmt, int8)
    _write_graph(SpikeKeysGraph(model, target).eval(), example["keys"], KEYS_INPUTS, KEYS_NAME, keys_path, fmt, False)
    _write_graph(
        StreamGraph(model, target).eval(), example["stream"], STREAM_INPUTS, OUTPUT_NAME, stream_path, fmt, int8
    )
    side = sidecar_path(out)
    stream = stream_entry(model, target, keys_path.name, stream_path.name)
    with atomic_write(side) as tmp:
        Path(tmp).write_text(json.dumps(sidecar(model, target, fmt, "int8" if int8 else "float32", stream), indent=1))
    return out, side


def _quantize_onnx(path: Path) -> None:
    """Replace the ONNX graph at `path` by its int8 dynamic quantization (weights int8 per output channel)."""
    try:
        from onnxruntime.quantization import QuantType, quantize_dynamic
    except ImportError:
        raise ExportError("int8 export needs onnxruntime: pip install 'spiketok[export]'") from None
    fp32 = path.with_name(path.name + ".fp32")
    path.replace(fp32)
    try:
        quantize_dynamic(
            fp32,
            path,
            weight_type=QuantType.QInt8,
            per_channel=True,
            op_types_to_quantize=["MatMul"],
            extra_options={"MatMulConstBOnly": True},
        )  # weights only: not the attention products
    finally:
        fp32.unlink(missing_ok=True)
