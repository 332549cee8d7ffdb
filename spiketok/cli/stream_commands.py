"""`spiketok replay`: stream a recorded session through the real-time decoder; latency and R²."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import numpy as np
import typer
from rich.console import Console
from rich.table import Table
from typing_extensions import Annotated

from . import app
from .errors import fail
from ..data.session import DataError

console = Console()


def _speed(value: str) -> float | None:
    if value.strip().lower() in ("max", "inf", "0"):
        return None
    try:
        speed = float(value)
    except ValueError:
        speed = -1.0
    if speed <= 0:
        raise typer.BadParameter(f"{value!r}: use 'max' or a positive factor of real time (1 = real time)",
                                 param_hint="--speed")
    return speed


def _load_session(file: Path, model, keep_moving: float | None):
    """A prepared session (lazy) or an NWB file read with the model's target for it."""
    from ..data.nwb import read_nwb
    from ..data.storage import FORMAT, StoredSession
    from .train_commands import _is_prepared

    if _is_prepared(file, FORMAT):
        if keep_moving is not None:
            typer.echo("note: --keep-moving applies to NWB files; a prepared file keeps the weights it was "
                       "prepared with", err=True)
        return StoredSession(file)
    session, _ = read_nwb(file, behavior=[])
    target = (model.hparams or {}).get("targets", {}).get(session.id)
    if target is None and len(model.task_names) == 1:
        target = model.task_names[0]
    if target is not None:
        try:
            session, _ = read_nwb(file, behavior=[target], keep_moving=keep_moving)
        except DataError:
            pass  # no such behaviour in the file: decode without scoring
    return session


def _intervals(model, session, split: str):
    """The intervals to stream: a split as the checkpoint recorded it (else the file's), or 'all'."""
    from ..data.session import Intervals

    if split == "all":
        return None
    stored = (model.hparams or {}).get("splits", {}).get(session.id, {})
    if split in stored:
        pairs = np.asarray(stored[split], dtype=np.float64).reshape(-1, 2)
        return Intervals(pairs[:, 0], pairs[:, 1])
    if split in session.splits:
        return session.splits[split]
    fail(f"session {session.id} has no {split!r} split (it has {sorted(set(stored) | set(session.splits))}); "
         "use --split all to stream the whole recording")


def plot_replay(result, path: Path, seconds: float = 30.0) -> Path:
    """PNG: predicted and recorded traces over the first `seconds` of stream, and the latency histogram."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dims = result.y_pred.shape[1]
    n = min(len(result.times), int(round(seconds / result.every)))
    fig, axes = plt.subplots(dims + 1, 1, figsize=(9, 1.9 * (dims + 1)), squeeze=False)
    t = result.times[:n]
    x = np.arange(n) * result.every  # stream time (intervals laid end to end)
    for k in range(dims):
        a = axes[k, 0]
        if result.y_true is not None:
            a.plot(x, np.where(result.weights[:n] > 0, result.y_true[:n, k], np.nan), color="0.3", lw=1, label="recorded")
        a.plot(x, result.y_pred[:n, k], color="tab:red", lw=1, label="streamed")
        a.set_ylabel(result.dims[k] if k < len(result.dims) else f"dim {k}", fontsize=8)
    axes[0, 0].legend(fontsize=7, loc="upper right")
    axes[dims - 1, 0].set_xlabel(f"stream time (s) from t = {t[0]:.2f} s" if n else "stream time (s)", fontsize=8)
    lat = result.latency_ms
    a = axes[dims, 0]
    top = min(float(lat.max()), 3 * float(np.percentile(lat, 99)))  # a rare hiccup must not squash the histogram
    a.hist(np.minimum(lat, top), bins=60, range=(0, top), color="tab:blue")
    if (lat > top).any():
        a.text(0.99, 0.5, f"{int((lat > top).sum())} above {top:.1f} ms (max {lat.max():.1f} ms), in the last bin",
               transform=a.transAxes, ha="right", fontsize=7)
    for q, style in ((50, "-"), (99, "--")):
        a.axvline(np.percentile(lat, q), color="k", ls=style, lw=1, label=f"p{q} {np.percentile(lat, q):.2f} ms")
    a.set_xlabel("latency per decode (ms)", fontsize=8)
    a.legend(fontsize=7)
    s = result.summary()
    title = f"{result.session}: {result.target}, decode every {1e3 * result.every:.0f} ms"
    if "r2" in s:
        title += f", R² {s['r2']:.3f}"
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


@app.command()
def replay(
    checkpoint: Annotated[Optional[Path], typer.Argument(help="A spiketok checkpoint, ideally trained with causal=true (left out with --onnx).", show_default=False)] = None,
    file: Annotated[Optional[Path], typer.Argument(help="A prepared session file (.h5) or an NWB file.", show_default=False)] = None,
    speed: Annotated[str, typer.Option(help="'max' (decode as fast as possible) or a factor of real time (1 = real time).")] = "max",
    every: Annotated[float, typer.Option(help="Seconds between decodes (and between spike packets).")] = 0.02,
    split: Annotated[str, typer.Option(help="Part to stream: a split (test, valid, train) as the checkpoint recorded it, or 'all'.")] = "test",
    limit: Annotated[Optional[float], typer.Option(help="Stop after this many seconds of stream.")] = None,
    threads: Annotated[int, typer.Option(help="CPU threads for torch, or onnxruntime with --onnx (1 is usually fastest for one stream).")] = 1,
    target: Annotated[Optional[str], typer.Option(help="Behaviour task to decode (default: as trained for this session).")] = None,
    keep_moving: Annotated[Optional[float], typer.Option(help="NWB files: score only position samples moving > PX over 1 s (as `prepare --keep-moving`).", metavar="PX")] = None,
    json_path: Annotated[Optional[Path], typer.Option("--json", help="Write the summary as JSON here.")] = None,
    plot: Annotated[Optional[Path], typer.Option(help="Write a PNG: streamed vs recorded traces and the latency histogram.")] = None,
    onnx: Annotated[Optional[Path], typer.Option("--onnx", help="Stream through a model exported by `spiketok export` (its FILE.json beside it) instead of a checkpoint: `replay --onnx model.onnx FILE`.")] = None,
) -> None:
    """Stream a recorded session through the real-time decoder: latency per decode and R² vs the recording."""
    import torch

    from ..model.embeddings import UnknownIdError
    from ..stream import StreamOrderError, replay as run_replay
    from ..train.checkpoint import load

    sp = _speed(speed)
    if every <= 0:
        raise typer.BadParameter(f"{every}: must be positive", param_hint="--every")
    if threads < 1:
        raise typer.BadParameter(f"{threads}: must be at least 1", param_hint="--threads")
    torch.set_num_threads(threads)
    if onnx is not None:  # the exported model replaces the checkpoint: `replay --onnx MODEL FILE`
        from .export_command import load_exported

        if file is not None:
            fail("with --onnx give only the session FILE: the exported model replaces the checkpoint")
        file, exported, model = checkpoint, *load_exported(onnx, threads)
    else:
        model = load(checkpoint) if checkpoint is not None else None  # a damaged or pickled file: one `error:` line
    if file is None:
        raise typer.BadParameter("give a CHECKPOINT and a session FILE (or --onnx MODEL and a FILE)", param_hint="FILE")
    try:
        session = _load_session(file, model, keep_moving)
        intervals = _intervals(model, session, split)
        if onnx is not None:
            from ..stream_onnx import replay_exported

            result = replay_exported(exported, session, intervals, every=every, speed=sp, target=target, limit=limit)
        else:
            result = run_replay(model, session, intervals, every=every, speed=sp, target=target, limit=limit)
    except (UnknownIdError, DataError, StreamOrderError, KeyError, ValueError) as e:
        fail(str(e))
    s = result.summary()
    if not s["n_decodes"]:
        fail("nothing was decoded: the chosen part of the recording is empty")
    table = Table(title=f"replay of {result.session} ({split}, {'max speed' if sp is None else f'{sp:g}x real time'}, "
                        f"{threads} thread{'s' if threads > 1 else ''})")
    table.add_column("")
    table.add_column("value", justify="right")
    lat = s["latency_ms"]
    table.add_row("decodes", f"{s['n_decodes']:,} (every {1e3 * every:g} ms, {s['stream_s']:.1f} s of stream)")
    table.add_row("latency median / p99 / max", f"{lat['median']:.2f} / {lat['p99']:.2f} / {lat['max']:.2f} ms")
    table.add_row("decode only median / p99", f"{s['decode_ms']['median']:.2f} / {s['decode_ms']['p99']:.2f} ms")
    table.add_row("decodes over budget", f"{s['over_budget']} (latency > {1e3 * every:g} ms)")
    table.add_row("wall time", f"{s['wall_s']:.1f} s")
    if "r2" in s:
        per_dim = ", ".join(f"{d}={v:.3f}" for d, v in zip(s["dims"], s["r2_per_dim"]))
        table.add_row(f"R² ({result.target})", f"{s['r2']:.3f} ({per_dim}; {s['n_scored']:,} scored)")
    else:
        table.add_row("R²", f"- (no recorded {result.target!r} in the file)")
    console.print(table)
    if json_path:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps({**s, "split": split, "speed": speed, "threads": threads,
                                         "checkpoint": str(checkpoint), "file": str(file)}, indent=2))
        console.print(f"summary: {json_path}")
    if plot:
        console.print(f"plot: {plot_replay(result, plot)}")
