"""A baseline per session (`fit_session`) and over a dataset (`run_baseline`, the `spiketok baseline` command)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch
from threadpoolctl import threadpool_limits
from tqdm.auto import tqdm

from ...data.session import Intervals
from ...data.storage import SessionDataset, StoredSession
from ...data.targets import resolve_target
from ..decode import require_duration, require_scored_samples
from ..metrics import session_scores
from . import ridge
from .features import (
    DEFAULT_HISTORY,
    MIN_VALID_SAMPLES,
    BaselineConfig,
    FitData,
    Layout,
    SessionFit,
    Standardizer,
    bin_intervals,
    bin_split,
)
from .neural import _fit_neural


def fit_session(
    session: StoredSession, target: str, cfg: BaselineConfig, split: str = "test", progress: bool = False
) -> SessionFit:
    """Train a baseline on a session's train split (valid for model choice) and predict `split`.

    When the valid split has fewer than MIN_VALID_SAMPLES samples with weight > 0, the model is chosen on
    the last tenth of each train interval instead (and trained on the rest); `info["validation"]` says which.
    """
    names = ["train", "valid"] + ([split] if split not in ("train", "valid") else [])
    layouts = cfg.layouts()
    bins = {name: bin_split(session, target, name, cfg, layouts) for name in names}
    usable = int((bins["valid"].weights > 0).sum())
    validation = "valid split"
    if usable < MIN_VALID_SAMPLES and split not in ("train", "valid"):
        # e.g. a rat that sits still through the whole valid block, with stationary samples left out (weight 0)
        tr = session.splits["train"]
        cut = tr.start + 0.9 * (tr.end - tr.start)
        bins["train"] = bin_intervals(session, target, Intervals(tr.start, cut), cfg, layouts)
        bins["valid"] = bin_intervals(session, target, Intervals(cut, tr.end), cfg, layouts)
        validation = f"last tenth of each train interval (valid split: {usable} usable samples)"
    std = Standardizer.fit(bins["train"])
    xs = {name: std.inputs(b) for name, b in bins.items()}
    data = FitData(bins, xs, {name: std.targets(b.values) for name, b in bins.items()}, split)
    threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    try:
        with threadpool_limits(cfg.threads):  # BLAS threads (ridge)
            if cfg.model == "ridge":
                pred, info, _ = ridge._fit_ridge(cfg, layouts, data)
            elif cfg.history is not None:
                pred, info = _fit_neural(cfg, layouts, data, progress)
            else:  # the default window, and the one a ridge probe prefers on the valid split
                _, probe, probed = ridge._fit_ridge(cfg, layouts, replace(data, split="valid"))
                first = Layout.make("causal" if cfg.lags == "auto" else cfg.lags, DEFAULT_HISTORY[cfg.model], cfg.bin)
                tried = [first] + ([probed] if (probed.h, probed.la) != (first.h, first.la) else [])
                pred, info = _fit_neural(cfg, tried, data, progress)
                info["ridge_probe"] = {
                    k: probe[k] for k in ("lags", "history", "bins_before", "bins_after", "alpha", "valid_mse")
                }
    finally:
        torch.set_num_threads(threads)
    info["validation"] = validation
    out = bins[split]
    dims = list(session.behavior_info[target]["dims"])
    return SessionFit(session.id, target, dims, out.times, out.values, std.untarget(pred), out.weights, info)


def run_baseline(
    data: SessionDataset, cfg: BaselineConfig, target: str | None = None, split: str = "test", progress: bool = True
) -> tuple[dict, dict[str, SessionFit]]:
    """Fit and score a baseline on every session; results in the JSON layout of `spiketok evaluate`."""

    config = {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(cfg).items()}
    results: dict = {"split": split, "model": cfg.model, "config": config, "sessions": {}}
    fits: dict[str, SessionFit] = {}
    for s in tqdm(list(data), desc=f"baseline {cfg.model}", disable=not progress):
        t = resolve_target(s.id, list(s.behavior_info), target)
        fit = fits[s.id] = fit_session(s, t, cfg, split, progress)
        scores = session_scores(t, fit.y_true, fit.y_pred, fit.weights, fit.dims)
        results["sessions"][s.id] = {**scores, "fit": fit.info}
    results["mean_r2"] = float(np.nanmean([v["r2"] for v in results["sessions"].values()]))
    return results, fits


def run_baseline_files(
    paths: Sequence[str | Path], cfg: BaselineConfig, target: str | None = None, split: str = "test"
) -> dict:
    """`run_baseline` on the prepared sessions in `paths`, each checked first (DataError): at least as long as the
    longest input window tried, and with behaviour samples to score in `split` (an R² there would be nan)."""
    data = SessionDataset([Path(p) for p in paths])
    longest = cfg.history if cfg.history is not None else max(cfg.history_choices)
    for s in data:
        require_duration(s, longest, f"the {longest:g} s input window of the {cfg.model} baseline")
        require_scored_samples(s, resolve_target(s.id, list(s.behavior_info), target), split)
    return run_baseline(data, cfg, target=target, split=split)[0]
