"""`spiketok replay`: stream a recorded session through the real-time decoder; latency and R²."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from . import app
from .checks import check_output
from .errors import fail
from .options import DecodeTarget, JsonOut, OverwriteJson

console = Console()


def _speed(value: str) -> float | None:
    if value.strip().lower() in ("max", "inf", "0"):
        return None
    try:
        speed = float(value)
    except ValueError:
        speed = -1.0
    if speed <= 0:
        raise typer.BadParameter(
            f"{value!r}: use 'max' or a positive factor of real time (1 = real time)", param_hint="--speed"
        )
    return speed


@app.command()
def replay(
    checkpoint: Annotated[
        Path | None,
        typer.Argument(
            help="A spiketok checkpoint, ideally trained with causal=true (left out with --onnx).", show_default=False
        ),
    ] = None,
    file: Annotated[
        Path | None, typer.Argument(help="A prepared session file (.h5) or an NWB file.", show_default=False)
    ] = None,
    speed: Annotated[
        str, typer.Option(help="'max' (decode as fast as possible) or a factor of real time (1 = real time).")
    ] = "max",
    every: Annotated[float, typer.Option(help="Seconds between decodes (and between spike packets).")] = 0.02,
    split: Annotated[
        str, typer.Option(help="Part to stream: a split (test, valid, train) as the checkpoint recorded it, or 'all'.")
    ] = "test",
    limit: Annotated[float | None, typer.Option(help="Stop after this many seconds of stream.")] = None,
    threads: Annotated[
        int,
        typer.Option(help="CPU threads for torch, or onnxruntime with --onnx (1 is usually fastest for one stream)."),
    ] = 1,
    target: DecodeTarget = None,
    keep_moving: Annotated[
        float | None,
        typer.Option(
            help="NWB files: score only position samples moving > PX over 1 s (as `prepare --keep-moving`).",
            metavar="PX",
        ),
    ] = None,
    json_path: JsonOut = None,
    plot: Annotated[
        Path | None, typer.Option(help="Write a PNG: streamed vs recorded traces and the latency histogram.")
    ] = None,
    incremental: Annotated[
        bool | None,
        typer.Option(
            "--incremental/--no-incremental",
            help="Merge per-packet attention partials (cost follows the new spikes); exact only for "
            "models trained with model.latent_grid=absolute. Default: on for those models, off for the others.",
            show_default=False,
        ),
    ] = None,
    precision: Annotated[
        str,
        typer.Option(
            help="Arithmetic of the linear layers: float32, bfloat16, int8, or auto (bfloat16 on "
            "CPUs with AMX, else float32); accuracy cost in docs/benchmarks.md."
        ),
    ] = "float32",
    onnx: Annotated[
        Path | None,
        typer.Option(
            "--onnx",
            help="Stream through a model exported by `spiketok export` (its FILE.json beside it) "
            "instead of a checkpoint: `replay --onnx model.onnx FILE`.",
        ),
    ] = None,
    overwrite: OverwriteJson = False,
) -> None:
    """Stream a recorded session through the real-time decoder: latency per decode and R² vs the recording."""
    from ..data.readers import file_kind
    from ..stream import plot_replay
    from ..stream.replay_file import replay_file

    sp = _speed(speed)
    if json_path is not None:
        check_output(json_path, overwrite, [p for p in (checkpoint, file, onnx) if p is not None], flag="--json")
    if every <= 0:
        raise typer.BadParameter(f"{every}: must be positive", param_hint="--every")
    if threads < 1:
        raise typer.BadParameter(f"{threads}: must be at least 1", param_hint="--threads")
    if onnx is not None:  # the exported model replaces the checkpoint: `replay --onnx MODEL FILE`
        if file is not None:
            fail("with --onnx give only the session FILE: the exported model replaces the checkpoint")
        if incremental:
            fail("--incremental applies to checkpoints; an exported model decodes whole windows")
        if precision != "float32":
            fail("--precision applies to checkpoints; export with --int8 for an int8 graph")
        checkpoint, file = None, checkpoint
    if file is None:
        raise typer.BadParameter("give a CHECKPOINT and a session FILE (or --onnx MODEL and a FILE)", param_hint="FILE")
    if keep_moving is not None and file_kind(file) == "prepared":
        typer.echo(
            "note: --keep-moving applies to NWB files; a prepared file keeps the weights it was prepared with", err=True
        )
    result = replay_file(
        file,
        checkpoint,
        onnx,
        split=split,
        target=target,
        keep_moving=keep_moving,
        threads=threads,
        every=every,
        speed=sp,
        limit=limit,
        incremental=incremental,
        precision=precision,
    )
    s = result.summary()
    if not s["n_decodes"]:
        fail("nothing was decoded: the chosen part of the recording is empty")
    table = Table(
        title=f"replay of {result.session} ({split}, {'max speed' if sp is None else f'{sp:g}x real time'}, "
        f"{threads} thread{'s' if threads > 1 else ''})"
    )
    table.add_column("")
    table.add_column("value", justify="right")
    lat = s["latency_ms"]
    table.add_row("decodes", f"{s['n_decodes']:,} (every {1e3 * every:g} ms, {s['stream_s']:.1f} s of stream)")
    table.add_row("latency median / p99 / max", f"{lat['median']:.2f} / {lat['p99']:.2f} / {lat['max']:.2f} ms")
    table.add_row("decode only median / p99", f"{s['decode_ms']['median']:.2f} / {s['decode_ms']['p99']:.2f} ms")
    table.add_row("decodes over budget", f"{s['over_budget']} (latency > {1e3 * every:g} ms)")
    table.add_row("wall time", f"{s['wall_s']:.1f} s")
    table.add_row("encoder", "incremental (per-packet partials)" if s["incremental"] else "whole window per decode")
    if "r2" in s:
        per_dim = ", ".join(f"{d}={v:.3f}" for d, v in zip(s["dims"], s["r2_per_dim"]))
        table.add_row(f"R² ({result.target})", f"{s['r2']:.3f} ({per_dim}; {s['n_scored']:,} scored)")
    else:
        table.add_row("R²", f"- (no recorded {result.target!r} in the file)")
    console.print(table)
    if json_path:
        from ..data.atomic import atomic_write

        with atomic_write(json_path) as tmp:
            Path(tmp).write_text(
                json.dumps(
                    {
                        **s,
                        "split": split,
                        "speed": speed,
                        "threads": threads,
                        "checkpoint": str(onnx or checkpoint),
                        "file": str(file),
                    },
                    indent=2,
                )
            )
        console.print(f"summary: {json_path}")
    if plot:
        console.print(f"plot: {plot_replay(result, plot)}")
