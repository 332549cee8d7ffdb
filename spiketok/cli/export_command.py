"""`spiketok export`: a trained model as an ONNX or TorchScript graph of one window, with its sidecar JSON."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from . import app
from .checks import check_output, staged_files
from .common import load_model
from .errors import fail
from .options import OverwriteOutput


@app.command()
def export(
    checkpoint: Annotated[
        Path, typer.Argument(help="A spiketok model file (run_dir/model.ckpt or an `adapt` output).")
    ],
    out: Annotated[Path, typer.Option("--out", help="The graph file to write; its sidecar goes to OUT.json.")],
    fmt: Annotated[
        str, typer.Option("--format", help="onnx (for onnxruntime, C++, C#...) or torchscript (libtorch).")
    ] = "onnx",
    target: Annotated[
        str | None, typer.Option(help="Behaviour task to export (default: the model's only or trained one).")
    ] = None,
    int8: Annotated[
        bool,
        typer.Option(
            "--int8",
            help="ONNX only: int8 weights (onnxruntime dynamic quantization); "
            "speed and accuracy cost in docs/benchmarks.md.",
        ),
    ] = False,
    overwrite: OverwriteOutput = False,
) -> None:
    """Export the model as a graph of one window (spike tokens in, behaviour in recording units out) and OUT.json.

    Inputs: unit rows, token times and types (any number of tokens), output times, the session row. Beside it, two
    streaming graphs (OUT's stem + .keys and .stream): key each spike once as it arrives, then one graph per decode.
    The sidecar OUT.json holds the unit and session vocabularies, normalisation, window, token layout and how to
    stream (docs/export.md).
    """
    from ..model.export import FORMATS, export_model, sidecar_path, stream_paths

    if fmt not in FORMATS:
        raise typer.BadParameter(f"{fmt!r}: choose one of {', '.join(FORMATS)}", param_hint="--format")
    if out.is_dir():
        fail(f"--out {out} is a folder: give a file name (e.g. {out / 'model.onnx'})")
    outputs = [out, *stream_paths(out), sidecar_path(out)]  # the sidecar last: renamed into place after the graphs
    for path in outputs:
        check_output(path, overwrite, [checkpoint])
    model = load_model(checkpoint)  # a damaged or pickled file: ModelFileError, one `error:` line
    recurrent = model.config.backbone == "recurrent"  # one step graph, no streaming graphs (model.export_recurrent)
    if recurrent:
        outputs = [out, sidecar_path(out)]
    with staged_files(outputs) as stage:  # a failed export leaves no graph without its sidecar
        export_model(model, stage / out.name, fmt, target, int8=int8)  # ExportError: one `error:` line
    graph, side = out, sidecar_path(out)
    keys, stream = stream_paths(graph)
    typer.echo(f"{fmt} {'step ' if recurrent else ''}graph: {graph}")
    if not recurrent:
        typer.echo(f"streaming graphs: {keys} (keys each spike once), {stream} (one decode)")
    typer.echo(f"sidecar: {side}")
