"""`evaluate`: decode held-out splits of many sessions, score R^2, write JSON and plots."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..data.atomic import atomic_write
from ..data.storage import SessionDataset
from ..errors import UserError
from ..model.file import load_model_file
from ..model.poyo import POYO
from .decode import Decoded, average_decoded, decode_split, require_task, require_window


def evaluate(
    model: POYO | Sequence[POYO],
    data: SessionDataset,
    split: str = "test",
    target: str | None = None,
    stride: float | None = None,
    progress: bool = True,
) -> tuple[dict, dict[str, Decoded]]:
    """R^2 per session and per dimension, and their mean, in the JSON layout of `spiketok evaluate`.
    Several models (an ensemble): their predictions are averaged (`average_decoded`); the first chooses the target."""
    models = [model] if isinstance(model, POYO) else list(model)
    results: dict = {"split": split, "sessions": {}}
    if len(models) > 1:
        results["ensemble"] = len(models)
    decoded: dict[str, Decoded] = {}
    for s in data:
        t = models[0].target_for(s.id, list(s.behavior_info), target)
        d = average_decoded([decode_split(m, s, t, split, stride=stride, progress=progress) for m in models])
        decoded[s.id] = d
        results["sessions"][s.id] = d.scores()
    results["mean_r2"] = float(np.nanmean([v["r2"] for v in results["sessions"].values()]))
    return results, decoded


def evaluate_files(
    checkpoints: Sequence[str | Path],
    data: Sequence[str | Path],
    split: str = "test",
    target: str | None = None,
    stride: float | None = None,
    progress: bool = True,
) -> tuple[dict, dict[str, Decoded]]:
    """`evaluate` of the models in `checkpoints` (several: an ensemble) on the prepared sessions in `data`, each
    checked first: a target every model decodes, a positive stride, sessions at least one window long."""
    if stride is not None and not stride > 0:
        raise UserError(f"--stride {stride:g}: give a positive number of seconds")
    models = [load_model_file(c) for c in checkpoints]
    for m in models if target is not None else []:
        require_task(m, target)
    sessions = SessionDataset([Path(p) for p in data])
    window = max(m.config.window for m in models)
    for s in sessions:
        require_window(s, window)
    return evaluate(models if len(models) > 1 else models[0], sessions, split, target, stride, progress=progress)


def write_json(results: dict, path: str | Path) -> None:
    """The results as JSON, written atomically (a temporary file renamed)."""
    with atomic_write(path) as tmp:
        Path(tmp).write_text(json.dumps(results, indent=2))


def plot_results(results: dict, decoded: dict[str, Decoded], out_dir: str | Path, n_segments: int = 3) -> list[Path]:
    """PNG plots: predicted against true traces per session, and R^2 per session."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    ids = list(results["sessions"])
    fig, ax = plt.subplots(figsize=(max(4, 0.6 * len(ids) + 2), 3.5))
    ax.bar(range(len(ids)), [results["sessions"][i]["r2"] for i in ids], color="tab:blue")
    ax.set_xticks(range(len(ids)), ids, rotation=45, ha="right", fontsize=8)
    ax.set_ylabel("R²")
    ax.set_ylim(min(0, *[results["sessions"][i]["r2"] for i in ids]), 1)
    ax.set_title(f"R² per session ({results['split']} split), mean {results['mean_r2']:.3f}")
    fig.tight_layout()
    fig.savefig(out / "r2_per_session.png", dpi=120)
    plt.close(fig)
    paths.append(out / "r2_per_session.png")
    for sid, d in decoded.items():
        gaps = np.flatnonzero(np.diff(d.timestamps) > 5 * np.median(np.diff(d.timestamps))) + 1
        segs = np.split(np.arange(len(d.timestamps)), gaps)[:n_segments]
        dims = d.y_pred.shape[1]
        fig, axes = plt.subplots(dims, len(segs), figsize=(3.2 * len(segs), 1.8 * dims), squeeze=False)
        for j, seg in enumerate(segs):
            seg = seg[:2000]
            for k in range(dims):
                a = axes[k, j]
                a.plot(d.timestamps[seg], d.y_true[seg, k], color="0.3", lw=1, label="true")
                a.plot(d.timestamps[seg], d.y_pred[seg, k], color="tab:red", lw=1, label="predicted")
                if j == 0:
                    a.set_ylabel(d.dims[k] if k < len(d.dims) else f"dim {k}", fontsize=8)
                if k == dims - 1:
                    a.set_xlabel("time (s)", fontsize=8)
        axes[0, 0].legend(fontsize=7, loc="upper right")
        fig.suptitle(f"{sid}: {d.target}, R² {results['sessions'][sid]['r2']:.3f}", fontsize=9)
        fig.tight_layout()
        path = out / f"traces_{sid}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths
