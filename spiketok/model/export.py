"""Export-friendly graphs of a trained POYO, and the writer of their ONNX or TorchScript files with the sidecar.

`WindowGraph` (one window of spike tokens in, behaviour in recording units out), `SpikeKeysGraph` and `StreamGraph`
(the two halves of a streaming decode) are compositions of the model's own stages (spiketok.model.stages) over its
own blocks and weights, on a batch of one window, with the rotations as real cos and sin (ONNX has no complex
tensors; spiketok.model.rotary.RealRotation): each token's keys and values a row of a constant table over the
vocabulary's (unit, type) pairs (computed per token instead when that table would pass MAX_TABLE_FLOATS), no masks
(nothing is padded). `sidecar` (spiketok.model.export_sidecar) describes how to tokenize for them: a typed
`Sidecar` (spiketok.model.sidecar), written as FILE.json beside the graph.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..tokenize.tokenizer import SpikeTokenizer
from .export_sidecar import (
    KEYS_INPUTS,
    KEYS_NAME,
    OUTPUT_NAME,
    STREAM_INPUTS,
    graph_inputs,
    sidecar,
    stream_entry,
    stream_paths,
)
from .graph_file import ExportError, normalization_tables, write_graph
from .poyo import N_TOKEN_TYPES, POYO
from .rotary import RealRotation
from .sidecar import SIDECAR_FORMAT, SIDECAR_VERSION, Sidecar, sidecar_path, write_sidecar
from .stages import PoyoStages, RotatedKV, TokenKV

__all__ = [
    "FORMATS",
    "SIDECAR_FORMAT",
    "SIDECAR_VERSION",
    "ExportError",
    "Sidecar",
    "SpikeKeysGraph",
    "StreamGraph",
    "WindowGraph",
    "export_model",
    "sidecar",
    "sidecar_path",
    "stream_paths",
]

MAX_TABLE_FLOATS = 16_000_000  # the graph holds the token key/value table up to 64 MB; larger ones project per token


class _GraphParts(PoyoStages, nn.Module):
    """The model's stages over its own submodules and weights (shared, not copied), plus the token key/value table,
    the latent layout and the normalisation of one task; subclasses' `forward` compose them for one window.

    Not the model itself: its vocabularies and statistics are extra state (dicts), which the tracers behind ONNX and
    TorchScript export cannot carry."""

    def __init__(self, model: POYO, target: str | None):
        super().__init__()
        c = model.config
        model.eval()
        self.target = target = model.readout_target(target)
        self.unit_weight, self.session_weight = model.unit_emb.weight, model.session_emb.weight
        self.token_type_emb, self.latent_emb, self.rotary = model.token_type_emb, model.latent_emb, model.rotary
        self.encoder, self.processor, self.decoder = model.encoder, model.processor, model.decoder
        self.norm_out, self.readouts = model.norm_out, nn.ModuleDict({target: model.readouts[target]})
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
        mean, std = normalization_tables(model, target)
        self.register_buffer("mean", mean, persistent=False)
        self.register_buffer("std", std, persistent=False)

    def rotation(self, t: torch.Tensor) -> RealRotation:
        """Rotations (1, n, 1, head_dim/2) as cos and sin of times t (n,) float64 (s)."""
        return self.rotary(t[None], real=True)

    def tokens_kv(self, input_units: torch.Tensor, input_types: torch.Tensor) -> torch.Tensor:
        """The encoder's keys and values (1, n_tokens, 2 * inner) of tokens (n_tokens,): normed and projected."""
        if self.token_kv is not None:  # each (unit, type) pair's keys and values, from the table
            return F.embedding(input_units * N_TOKEN_TYPES + input_types, self.token_kv)[None]
        return self.pair_kv(F.embedding(input_units, self.unit_weight), input_types)[None]

    def grid_times(self, window_start: torch.Tensor) -> torch.Tensor:
        """Session times (n_latents,) float64 of the absolute-grid latents of the window starting at window_start:
        grid points (k + 0.5) * step inside the window, as SpikeTokenizer.latents places them."""
        k0 = torch.ceil(window_start / self.latent_step - 0.5)
        return (k0 + self.latent_times) * self.latent_step

    def finish(
        self, latents: torch.Tensor, rot: RealRotation, output_times: torch.Tensor, session: torch.Tensor
    ) -> torch.Tensor:
        """Encoded latents (1, n_latents, dim) with their rotations from the window start rot -> behaviour (n_out, D):
        processor, decoder, readout, the session's statistics."""
        latents = self.process(latents, self.processor_rotations(rot))  # (1, n_latents, dim)
        queries = F.embedding(session.expand(output_times.shape[0]), self.session_weight)[None]  # (1, n_out, dim)
        out = self.decode(self.output_queries(queries, self.rotation(output_times)), latents, rot)
        pred = self.readout(out)[0]  # (n_out, D), normalised
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
        tokens = TokenKV(self.tokens_kv(input_units, input_types), self.rotation(input_times))  # (1, n_tokens, ...)
        times = self.grid_times(window_start) - window_start if self.absolute else self.latent_times
        rot = self.rotation(times)  # the latents' times from the window start
        latents = self.encode(self.latent_emb(self.latent_ids)[None], rot, tokens)  # (1, n_latents, dim)
        return self.finish(latents, rot, output_times, session)


class SpikeKeysGraph(_GraphParts):
    """The per-token half of a streaming decode: tokens' encoder keys and values, rotated by their SESSION times.

    forward(input_units (n,) int64, input_types (n,) int64, input_times (n,) float64 seconds of the session clock)
        -> keys (n, 2 * heads * head_dim) float32: keys then values per head, as StreamGraph takes them.
    A spike's keys never change while it stays in the window (rotary attention depends on time differences
    only), so a streaming caller keys each spike once, when it arrives, and START/END tokens at each decode."""

    def forward(self, input_units: torch.Tensor, input_types: torch.Tensor, input_times: torch.Tensor) -> torch.Tensor:
        k, v = self.encoder.attn.rotate_kv(self.tokens_kv(input_units, input_types), self.rotation(input_times))
        return torch.cat([k, v], dim=2)[0].flatten(1)  # (n, 2 * heads * head_dim)


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
        heads, head_dim = self.encoder.attn.heads, self.encoder.attn.head_dim
        k, v = keys.reshape(1, keys.shape[0], 2 * heads, head_dim).split(heads, dim=2)  # (1, n_tokens, H, d) each
        latents = self.latent_emb(self.latent_ids)[None]  # (1, n_latents, dim)
        latents = self.encode(latents, self.rotation(session_times), RotatedKV(k, v))  # the keys' clock
        return self.finish(latents, self.rotation(relative), output_times, session)


FORMATS = ("onnx", "torchscript")


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


def export_model(
    model: POYO, out: str | Path, fmt: str = "onnx", target: str | None = None, int8: bool = False
) -> tuple[Path, Path]:
    """Write `model` as an ONNX or TorchScript graph of one window (WindowGraph) at `out`, its two streaming graphs
    (SpikeKeysGraph, StreamGraph) beside it (`stream_paths`), and its sidecar JSON at `out`.json; returns the
    window graph's and the sidecar's paths. Dynamic axes: the number of tokens and of output times.
    int8 (ONNX only): weights of the matrix products quantized to int8 by onnxruntime's dynamic quantization
    (activations quantized per call); its accuracy cost is measured in docs/benchmarks.md.
    A recurrent model is written as one step graph instead (spiketok.model.export_recurrent)."""
    if fmt not in FORMATS:
        raise ExportError(f"unknown export format {fmt!r}; choose one of {list(FORMATS)}")
    if int8 and fmt != "onnx":
        raise ExportError("int8 export is for ONNX graphs (onnxruntime's quantization); use --format onnx")
    if not len(model.unit_emb) or not len(model.session_emb):
        raise ExportError("this model has no units or no sessions in its vocabulary: train it first")
    try:
        target = model.readout_target(target)
    except ValueError as e:
        raise ExportError(str(e)) from None
    if fmt == "onnx":
        try:
            import onnx  # noqa: F401  (torch.onnx.export needs it)
        except ImportError:
            raise ExportError("ONNX export needs the `onnx` package: pip install 'spiketok[export]'") from None
    if model.config.backbone == "recurrent":  # one step graph: a chunk's spikes and the state in, both out
        from .export_recurrent import export_recurrent

        return export_recurrent(model, out, fmt, target, int8)
    out = Path(out)
    keys_path, stream_path = stream_paths(out)
    example = _example(model)
    write_graph(WindowGraph(model, target).eval(), example["window"], graph_inputs(model), OUTPUT_NAME, out, fmt, int8)
    write_graph(SpikeKeysGraph(model, target).eval(), example["keys"], KEYS_INPUTS, KEYS_NAME, keys_path, fmt, False)
    write_graph(
        StreamGraph(model, target).eval(), example["stream"], STREAM_INPUTS, OUTPUT_NAME, stream_path, fmt, int8
    )
    stream = stream_entry(model, target, keys_path.name, stream_path.name)
    return out, write_sidecar(sidecar(model, target, fmt, "int8" if int8 else "float32", stream), out)
