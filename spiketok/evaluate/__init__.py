"""Metrics, stitching of overlapping windows, decoding, evaluation reports and export (NWB, pynapple)."""

from .decode import Decoded, decode_split, decode_times
from .export import predictions_tsdframe, to_tsdframe, write_predictions_nwb
from .metrics import r2_per_dim
from .report import evaluate, plot_results, write_json

__all__ = [
    "Decoded",
    "decode_split",
    "decode_times",
    "r2_per_dim",
    "evaluate",
    "plot_results",
    "write_json",
    "predictions_tsdframe",
    "to_tsdframe",
    "write_predictions_nwb",
]
