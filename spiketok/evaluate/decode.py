"""Decode a session offline: sliding windows over intervals, predictions stitched per sample."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch
from tqdm.auto import tqdm

from ..data.session import DataError, Intervals, SessionLike
from ..data.targets import TargetError
from ..data.windows import default_stride, ending_at, sliding
from ..model.normalize import denormalise
from ..model.poyo import POYO
from ..tokenize import collate
from .metrics import r2_per_dim, session_scores
from .stitching import Stitcher


@dataclass
class Decoded:
    """Predictions of one session at its behaviour samples inside the decoded intervals."""

    session: str
    target: str
    timestamps: np.ndarray  # (T,)
    y_pred: np.ndarray  # (T, D), original units
    y_true: np.ndarray | None  # (T, D) or None when the session has no such behaviour
    weights: np.ndarray  # (T,) samples that count in scores
    dims: list[str]

    def r2(self) -> np.ndarray:
        if self.y_true is None:
            raise ValueError(f"session {self.session}: no recorded {self.target!r} to score against")
        return r2_per_dim(self.y_true, self.y_pred, self.weights)

    def scores(self) -> dict:
        """The session's scores as reports store them (see metrics.session_scores)."""
        self.r2()  # refuses a session with nothing recorded to score against
        return session_scores(self.target, self.y_true, self.y_pred, self.weights, self.dims)


def average_decoded(runs: list[Decoded]) -> Decoded:
    """Several models' decodes of the same samples (an ensemble) as one: predictions averaged, and a sample counts
    in scores only where every model covered it."""
    first = runs[0]
    for r in runs[1:]:
        if (r.session, r.target) != (first.session, first.target) or not np.array_equal(r.timestamps, first.timestamps):
            raise ValueError(
                f"cannot average decodes of different samples ({first.session}/{first.target} and "
                f"{r.session}/{r.target})"
            )
    if len(runs) == 1:
        return first
    return replace(
        first, y_pred=np.mean([r.y_pred for r in runs], axis=0), weights=np.min([r.weights for r in runs], axis=0)
    )


@torch.no_grad()
def decode_times(
    model: POYO,
    session: SessionLike,
    target: str,
    intervals: Intervals,
    times: np.ndarray,
    stride: float | None = None,
    batch_size: int = 32,
    progress: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Predictions (T, D) at absolute `times` inside `intervals`, and which times were covered.

    Offline models: windows of the model's length every `stride` s (default: `default_stride`), each
    covering sample averaged over the windows that hold it. Causal models: one full-length window
    [t - window, t) per sample t, output query at its end (spikes before t only, also from before the
    interval's start, as a real-time decoder has them), as `spiketok.stream.StreamingDecoder` does.
    """
    c = model.config
    tok = model.tokenizer()
    units = model.unit_emb.lookup(session.unit_ids).numpy()
    sess_idx = int(model.session_emb.lookup([session.id])[0])
    task_idx = model.task_names.index(target)
    dim = model.readouts[target].out_features
    stitch = Stitcher(times, dim)
    specs: list[tuple[float, float, np.ndarray]] = []
    causal = model.meta.causal
    stride = default_stride(model) if stride is None else stride
    for s, e in zip(intervals.start, intervals.end):
        inside = times[(times >= s) & (times < e)]
        if causal:
            specs.extend((t0, t1, np.array([t1])) for t0, t1 in ending_at(inside, c.window))
        else:
            specs.extend((t0, t1, inside[(inside >= t0) & (inside < t1)]) for t0, t1 in sliding(s, e, c.window, stride))
    specs = [sp for sp in specs if len(sp[2])]
    model.eval()
    device = next(model.parameters()).device
    for i in tqdm(range(0, len(specs), batch_size), desc=f"decode {session.id}", disable=not progress, leave=False):
        chunk = specs[i : i + batch_size]
        samples = [
            tok(session.slice(t0, t1, behavior=[]), units, sess_idx, task_idx, None, output_times=out - t0)
            for t0, t1, out in chunk
        ]
        batch = collate(samples).to(device)
        pred = denormalise(model, model(batch), batch.output_sessions, batch.output_tasks).cpu().numpy()
        for j, (_, _, out) in enumerate(chunk):
            stitch.add(out, pred[j, : len(out), :dim])
    return stitch.result()


def require_duration(session: SessionLike, seconds: float, what: str) -> None:
    """Raise DataError for a recording shorter than `what` (one window): its R² would be nan, or from a few samples."""
    span = float(session.end - session.start)
    if span < seconds - 1e-9:
        raise DataError(
            f"session {session.id}: the recording is {span:.3g} s long, shorter than {what}; "
            f"it needs at least {seconds:g} s of recording"
        )


def require_window(session: SessionLike, window: float) -> None:
    """Raise DataError for a recording shorter than one `window` s context window of a model."""
    require_duration(session, window, f"one {window:g} s context window of the model")


def require_task(model: POYO, target: str, flag: str = "--target") -> None:
    """Raise TargetError when `model` has no readout for `target` (a behaviour it was never trained to decode)."""
    if target not in model.task_names:
        raise TargetError(
            f"{flag} {target}: not a behaviour this model decodes (it decodes {', '.join(model.task_names)})"
        )


def require_scored_samples(session: SessionLike, target: str, split: str) -> None:
    """Raise DataError when a split holds no `target` sample with weight > 0: an R² there would be nan."""
    b = session.behavior(target)
    if split in session.splits and not (b.weights[session.splits[split].contains(b.timestamps)] > 0).any():
        raise DataError(
            f"session {session.id}: its {split!r} split holds no {target!r} sample (with weight > 0), so "
            f"there is nothing to score; choose another split (--split), or prepare the NWB file again "
            f"with another --split-seed"
        )


def decode_split(
    model: POYO,
    session: SessionLike,
    target: str,
    split: str = "test",
    stride: float | None = None,
    batch_size: int = 32,
    progress: bool = False,
) -> Decoded:
    """Decode one split of a session at its behaviour samples; scores use weight > 0 samples only."""
    if split not in session.splits:
        raise DataError(f"session {session.id} has no {split!r} split (it has {list(session.splits)})")
    iv = session.splits[split]
    b = session.behavior(target)
    inside = iv.contains(b.timestamps)
    require_scored_samples(session, target, split)
    times = b.timestamps[inside]
    pred, covered = decode_times(model, session, target, iv, times, stride, batch_size, progress)
    weights = b.weights[inside] * covered
    return Decoded(session.id, target, times, pred, b.values[inside], weights, list(b.dims))
