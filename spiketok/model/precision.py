"""Lower-precision inference copies of a model: bfloat16 or int8 matrix products, everything else in float32.

On CPUs with AVX-512 BF16 (or AMX) a large bfloat16 matrix product runs ~4x faster than float32; attention,
normalisation and rotations stay in float32 (bfloat16 attention is not faster on CPU, and rotary phases
need float32). int8 uses PyTorch's dynamic quantization (weights int8, activations quantized per call).
The accuracy cost is measured on real data in docs/benchmarks.md (bench_export_latency.py).
"""

from __future__ import annotations

import copy
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

PRECISIONS = ("float32", "bfloat16", "int8")


class BFloat16Linear(nn.Module):
    """A linear layer computing in bfloat16: x (..., in) float32 -> (..., out) float32; weights stored bfloat16."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.register_buffer("weight", linear.weight.detach().to(torch.bfloat16))
        self.register_buffer("bias", None if linear.bias is None else linear.bias.detach().to(torch.bfloat16))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x.to(torch.bfloat16), self.weight, self.bias).to(x.dtype)


def cpu_flags() -> set[str]:
    """The CPU's feature flags (Linux /proc/cpuinfo; empty elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def best_precision() -> str:
    """bfloat16 where the CPU has AMX tiles for it, else float32: with AVX-512 BF16 alone, what bfloat16 gained on
    this model's small matrices was not steady across our runs (from 1.2x slower to 1.2x faster: docs/benchmarks.md,
    runtimes section), so float32, the exact path, stays."""
    return "bfloat16" if "amx_bf16" in cpu_flags() else "float32"


def with_precision(model: nn.Module, precision: str) -> nn.Module:
    """An inference copy of `model` (eval mode) whose linear layers compute in `precision`; "float32" returns
    the model itself. "auto" picks `best_precision()`. The copy is for inference only (no gradients)."""
    if precision == "auto":
        precision = best_precision()
    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision!r}: choose one of {', '.join(PRECISIONS)} or 'auto'")
    if precision == "float32":
        return model.eval()
    if next(model.parameters()).device.type != "cpu":
        raise ValueError(
            f"precision={precision!r} is a CPU inference path; the model is on {next(model.parameters()).device}"
        )
    out = copy.deepcopy(model).eval()
    if precision == "int8":
        with warnings.catch_warnings():  # torch.ao.quantization announces its move to torchao
            warnings.simplefilter("ignore")
            return torch.ao.quantization.quantize_dynamic(out, {nn.Linear}, dtype=torch.qint8, inplace=True)
    for parent in list(out.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.Linear):
                setattr(parent, name, BFloat16Linear(child))
    return out
