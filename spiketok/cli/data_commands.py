"""`spiketok prepare` (NWB or brainsets/temporaldata files -> prepared session files) and `spiketok info`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from . import app
from .errors import EXIT_USER_ERROR, debug_enabled

if TYPE_CHECKING:
    from ..data.prepare import Prepared

BEHAVIOR_HELP = (
    "Behaviour signal(s) to keep, by name (hand_velocity, led) or path (behavior/Position/hand). "
    "A comma list 'a,b' takes the first name that exists in each file (so one command fits files "
    "of different kinds); repeat the option to keep several signals. Default: the file's only signal."
)


@app.command()
def prepare(
    ctx: typer.Context,
    files: Annotated[
        list[Path],
        typer.Argument(
            help="NWB files or brainsets/temporaldata session files (.h5) to prepare; the reader is chosen by content.",
            show_default=False,
        ),
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the prepared <session_id>.h5 files.")],
    behavior: Annotated[list[str] | None, typer.Option("--behavior", "-b", help=BEHAVIOR_HELP)] = None,
    derive: Annotated[
        str | None,
        typer.Option(help="'velocity': add <position>_velocity by central differences within contiguous segments."),
    ] = None,
    split: Annotated[
        str,
        typer.Option(
            help="Split method: 'interleaved' (runs of ten trials of one condition, or "
            "~30 s blocks without trials, dealt 7 train / 1 valid / 2 test, so "
            "validation looks like the test), 'blocks' (chronological: 10 time "
            "blocks, 3rd and 8th test) or 'random'; whole trials when the file "
            "has trials."
        ),
    ] = "interleaved",
    split_seed: Annotated[int, typer.Option(help="Seed for the splits.")] = 0,
    keep_moving: Annotated[
        float | None,
        typer.Option(
            help="Weight 0 on position samples that move <= PX "
            "between t-0.5 s and t+0.5 s; reports the fraction "
            "left out.",
            metavar="PX",
        ),
    ] = None,
    overwrite: Annotated[
        bool,
        typer.Option(
            "--overwrite",
            help="Replace a prepared session in --out that was prepared from another file (same session id).",
        ),
    ] = False,
) -> None:
    """Read NWB or brainsets (temporaldata) files, clean them (and say what was dropped), write one session file
    each into --out. A brainsets file's train/valid/test domains become the splits."""
    from ..data.prepare import prepare_files
    from ..data.readers import ReadOptions
    from ..data.splits import SPLIT_METHODS

    if derive not in (None, "velocity"):
        raise typer.BadParameter(f"{derive!r}: only 'velocity' is supported", param_hint="--derive")
    if split not in SPLIT_METHODS:
        raise typer.BadParameter(f"{split!r}: use one of {', '.join(SPLIT_METHODS)}", param_hint="--split")
    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()]
    with Progress(*columns, console=Console(stderr=True), transient=True) as progress:
        task = progress.add_task("preparing", total=len(files))
        outcome = prepare_files(
            files,
            out,
            overwrite=overwrite,
            stop_on_error=debug_enabled(ctx),  # --debug: the traceback, as every other command shows it
            on_file=lambda path, i: progress.update(task, description=f"preparing {path.name}", completed=i),
            options=ReadOptions(behavior, derive, None, split, split_seed, keep_moving),
        )
    _print_prepare_summary(outcome.done)
    for message in outcome.errors:
        typer.echo(f"error: {message}", err=True)
    if outcome.errors:
        if len(files) > 1:  # one file: its error line says it all
            typer.echo(f"{len(outcome.errors)} of {len(files)} files failed; nothing was written for them.", err=True)
        raise typer.Exit(EXIT_USER_ERROR)


def _print_prepare_summary(done: list[Prepared]) -> None:
    console = Console()
    if not done:
        return
    table = Table(title=f"wrote {len(done)} session files to {done[0].written.parent}")
    table.add_column("wrote", no_wrap=True)
    for col in ("units", "spikes", "dropped units", "dropped spikes"):
        table.add_column(col, justify="right")
    table.add_column("behaviour", no_wrap=True)
    for d in done:
        r = d.report
        table.add_row(
            d.written.name,
            str(r.n_units),
            str(r.n_spikes),
            str(len(r.dropped_units)),
            str(r.dropped_spikes),
            ", ".join(d.session.behavior_names) or "-",
        )
    console.print(table)
    for d in done:
        typer.echo(f"{d.source.name}:")
        for line in d.report.lines():
            typer.echo(f"  {line}")


def _print_info(d: dict[str, Any]) -> None:
    console = Console()
    head = Table(title=f"{d['session_id']} ({d['kind']}: {d['path']})", show_header=False)
    head.add_column("", style="bold")
    head.add_column("")
    for key, label in (
        ("n_units", "units"),
        ("n_spikes", "spikes"),
        ("duration_s", "duration (s)"),
        ("mean_rate_hz", "mean rate (Hz)"),
        ("median_rate_hz", "median rate (Hz)"),
    ):
        v = d[key]
        head.add_row(label, f"{v:.3f}" if isinstance(v, float) else str(v))
    t = d["trials"]
    head.add_row("trials", f"{t['count']} ({t['duration_s']:.1f} s; columns: {', '.join(t['columns']) or '-'})")
    for k, v in d["meta"].items():
        head.add_row(k, v)
    console.print(head)
    beh = Table(title="behaviour")
    for col in ("name", "dims", "unit", "samples", "weight 0"):
        beh.add_column(col)
    for name, b in d["behavior"].items():
        beh.add_row(
            name,
            f"{b['dim']} ({', '.join(b['dims'])})",
            b["unit"],
            str(b["n_samples"]),
            f"{100 * b['masked_fraction']:.1f}%",
        )
    console.print(beh)
    spl = Table(title="splits")
    for col in ("split", "count", "duration (s)"):
        spl.add_column(col)
    for name, s in d["splits"].items():
        spl.add_row(name, str(s["count"]), f"{s['duration_s']:.1f}")
    console.print(spl)
    for line in d.get("report_lines", []):
        typer.echo(f"  {line}")


@app.command()
def info(
    path: Annotated[
        Path,
        typer.Argument(
            help="An NWB file, a brainsets/temporaldata file or a prepared session file (.h5).", show_default=False
        ),
    ],
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Summarise an NWB file, a brainsets file or a prepared session: units, spikes, rates, behaviour, trials,
    splits."""
    from ..data.summary import summarise_file

    d = summarise_file(path)
    if as_json:
        typer.echo(json.dumps(d, indent=2, default=_json_default))
    else:
        _print_info(d)


def _json_default(v: Any) -> Any:
    import numpy as np

    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist()
    return str(v)
