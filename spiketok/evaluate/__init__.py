"""Metrics, stitching of overlapping windows, decoding and evaluation reports."""

from .decode import Decoded, decode_split, decode_times
from .metrics import r2_per_dim
from .report import evaluate, plot_results, write_json

__all__ = ["Decoded", "decode_split", "decode_times", "r2_per_dim", "evaluate", "plot_results", "write_json"]
