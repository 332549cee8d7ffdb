"""Writing an export graph to an ONNX or TorchScript file (int8 by onnxruntime's quantization), the normalisation
tables the graphs carry, and the error an export raises for what cannot be exported as asked."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from ..data.atomic import atomic_write
from ..errors import SpiketokError
from .export_sidecar import KEYS_NAME
from .poyo import POYO
from .sidecar import TensorSpec

ONNX_OPSET = 17  # LayerNormalization is an ONNX op from 17 on


class ExportError(SpiketokError, ValueError):
    """The model cannot be exported as asked (unknown format or target, export packages missing)."""


def normalization_tables(model: POYO, target: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Each session's mean and std (n_sessions, D) of task `target`; mean 0, std 1 for sessions without them."""
    dims = model.readouts[target].out_features
    mean, std = torch.zeros(len(model.session_emb), dims), torch.ones(len(model.session_emb), dims)
    for sid, per_task in model.normalizer.stats.items():
        if sid in model.session_emb.index and target in per_task:
            row = model.session_emb.index[sid]
            mean[row], std[row] = (torch.tensor(per_task[target][k], dtype=torch.float32) for k in ("mean", "std"))
    return mean, std


def write_graph(
    graph: nn.Module,
    example: tuple[torch.Tensor, ...],
    inputs: Sequence[TensorSpec],
    output: str | tuple[str, ...],
    path: Path,
    fmt: str,
    int8: bool,
) -> None:
    """Trace `graph` on `example` into an ONNX or TorchScript file at `path` (written atomically); inputs with a
    named first axis (n_tokens, n_out) are dynamic there, as is the output's first axis (several outputs, a tuple of
    names: of fixed shapes)."""
    names = [i.name for i in inputs]
    dynamic = {i.name: {0: i.shape[0]} for i in inputs if isinstance(i.shape[0], str)}
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
                    output_names=[output] if isinstance(output, str) else list(output),
                    opset_version=ONNX_OPSET,
                    dynamo=False,
                    dynamic_axes={**dynamic, output: {0: "n_tokens" if output == KEYS_NAME else "n_out"}}
                    if isinstance(output, str)
                    else dynamic,
                )
                if int8:
                    quantize_onnx(Path(tmp))
            else:  # frozen: weights as constants (possm-1.3M step graph: 1.19 ms traced, 0.97 ms frozen)
                torch.jit.save(torch.jit.freeze(torch.jit.trace(graph.eval(), example, check_trace=False)), tmp)


def quantize_onnx(path: Path) -> None:
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
