"""Classical decoders on binned spikes, trained per session: ridge (Wiener filter), GRU and MLP.

Each session's spikes are counted in bins (20 ms by default) inside every interval of a split, never
across the gaps between intervals; bins outside an interval count as empty. A behaviour sample at time t
is decoded from a window of bins around the bin holding t, its *layout*: `causal` (the window ends at
t's bin: spikes up to t only, as a real-time decoder) or `centred` (the same number of bins, half of
them after t, as spiketok's offline model, which sees spikes on both sides of each output time).
Inputs are square-rooted counts z-scored with the training bins' statistics; targets are z-scored with
the training samples' statistics. Everything chosen is chosen on the `valid` split, never the test split:
ridge picks its window length, layout and penalty from a grid; GRU and MLP train one model per layout
(`lags="auto"`) with early stopping (the weights of the lowest validation error are restored) and keep the
better. Scored like `spiketok evaluate`: `r2_per_dim` on the split's behaviour samples with weight > 0,
in the same JSON layout; each session's `fit` says what was chosen. A 1-D behaviour is a (N, 1) signal.
"""

from .features import (
    DEFAULT_HISTORY,
    DEFAULT_LR,
    HISTORY_CHOICES,
    LAGS,
    MIN_VALID_SAMPLES,
    MODELS,
    BaselineConfig,
    Layout,
    SessionFit,
    SplitBins,
    Standardizer,
    bin_intervals,
    bin_split,
    window_features,
)
from .neural import Chunks, GRUDecoder, MLPDecoder
from .ridge import MAX_GRAM_FEATURES, MAX_SVD_VALUES
from .run import fit_session, run_baseline, run_baseline_files

__all__ = [
    "BaselineConfig",
    "Chunks",
    "GRUDecoder",
    "Layout",
    "MLPDecoder",
    "SessionFit",
    "SplitBins",
    "Standardizer",
    "bin_intervals",
    "bin_split",
    "fit_session",
    "run_baseline",
    "run_baseline_files",
    "window_features",
    "MODELS",
    "LAGS",
    "MIN_VALID_SAMPLES",
    "HISTORY_CHOICES",
    "DEFAULT_HISTORY",
    "DEFAULT_LR",
    "MAX_GRAM_FEATURES",
    "MAX_SVD_VALUES",
]
