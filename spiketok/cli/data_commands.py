"""`spiketok prepare` (NWB or brainsets/temporaldata files -> prepared session files) and `spiketok info`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import h5py
import numpy as np
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from ..data.nwb import PrepareReport
from ..data.readers import file_kind, read_recording, recording_signals
from ..data.session import DataError, Intervals, Session
from ..data.splits import SPLIT_METHODS
from ..data.storage import StoredSession, write_session
from . import app
from .errors import EXIT_USER_ERROR, debug_enabled, fail

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
    if derive not in (None, "velocity"):
        raise typer.BadParameter(f"{derive!r}: only 'velocity' is supported", param_hint="--derive")
    if split not in SPLIT_METHODS:
        raise typer.BadParameter(f"{split!r}: use one of {', '.join(SPLIT_METHODS)}", param_hint="--split")
    done: list[tuple[Path, Session, PrepareReport, Path]] = []
    errors: list[str] = []
    written: dict[str, Path] = {}
    err_console = Console(stderr=True)
    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()]
    with Progress(*columns, console=err_console, transient=True) as progress:
        task = progress.add_task("preparing", total=len(files))
        for file in files:
            progress.update(task, description=f"preparing {file.name}")
            try:
                session, report = read_recording(
                    file,
                    behavior=behavior,
                    derive=derive,
                    split_method=split,
                    split_seed=split_seed,
                    keep_moving=keep_moving,
                )
                if session.id in written:
                    raise DataError(
                        f"{file}: session id {session.id!r} was already written from "
                        f"{written[session.id]}; rename one of the files"
                    )
                target = out / f"{session.id}.h5"
                if target.exists() and target.resolve() == file.resolve():
                    raise DataError(f"{file}: writing {target} would replace this input file; choose another --out")
                other = _other_source(target, session)
                if other and not overwrite:
                    raise DataError(
                        f"{file}: {target} already holds {other}; give --overwrite to replace it, or another --out"
                    )
                target = write_session(session, target)
                written[session.id] = file
                done.append((file, session, report, target))
            except DataError as e:
                if debug_enabled(ctx):
                    raise  # --debug: the traceback, as every other command shows it
                errors.append(str(e))
            except Exception as e:  # an unexpected failure in one file must not stop the others
                if debug_enabled(ctx):
                    raise
                errors.append(f"{file}: unexpected {type(e).__name__}: {e}")
            progress.advance(task)
    _print_prepare_summary(done)
    for message in errors:
        typer.echo(f"error: {message}", err=True)
    if errors:
        if len(files) > 1:  # one file: its error line says it all
            typer.echo(f"{len(errors)} of {len(files)} files failed; nothing was written for them.", err=True)
        raise typer.Exit(EXIT_USER_ERROR)


def _other_source(target: Path, session: Session) -> str | None:
    """What `target` holds when writing `session` there would replace something else: a file that is not a prepared
    session, or a session prepared from another source file (None: nothing there, or the same source again)."""
    if not target.exists():
        return None
    if file_kind(target) != "prepared":
        return "a file that is not a prepared session"
    try:
        old = StoredSession(target)
        same = (
            all(old.meta.get(k) == session.meta.get(k) for k in ("source_file", "identifier"))
            and list(old.unit_names) == list(session.unit_names)
            and old.n_spikes == len(session.spike_times)
        )
    except (DataError, OSError, KeyError):
        return "a damaged prepared session"
    if same:  # the same recording again (e.g. other --behavior): replaced as asked
        return None
    source = old.meta.get("source_file")
    return f"a session prepared from another recording{f' (also named {source})' if source else ''}"


def _print_prepare_summary(done: list[tuple[Path, Session, PrepareReport, Path]]) -> None:
    console = Console()
    if not done:
        return
    table = Table(title=f"wrote {len(done)} session files to {done[0][3].parent}")
    table.add_column("wrote", no_wrap=True)
    for col in ("units", "spikes", "dropped units", "dropped spikes"):
        table.add_column(col, justify="right")
    table.add_column("behaviour", no_wrap=True)
    for _file, session, r, target in done:
        table.add_row(
            target.name,
            str(r.n_units),
            str(r.n_spikes),
            str(len(r.dropped_units)),
            str(r.dropped_spikes),
            ", ".join(session.behavior_names) or "-",
        )
    console.print(table)
    for file, _, r, _ in done:
        typer.echo(f"{file.name}:")
        for line in r.lines():
            typer.echo(f"  {line}")


def _intervals(iv: Intervals | None) -> dict[str, Any]:
    if iv is None:
        return {"count": 0, "duration_s": 0.0, "columns": []}
    return {"count": len(iv), "duration_s": iv.duration, "columns": list(iv.columns)}


def _summary(
    kind: str,
    path: Path,
    sid: str,
    counts: np.ndarray,
    duration: float,
    behavior: dict[str, dict[str, Any]],
    trials: Intervals | None,
    splits: dict[str, Intervals],
    meta: dict[str, str],
) -> dict[str, Any]:
    rates = counts / duration if duration > 0 else np.zeros(len(counts))
    return {
        "path": str(path),
        "kind": kind,
        "session_id": sid,
        "n_units": int(len(counts)),
        "n_spikes": int(counts.sum()),
        "duration_s": float(duration),
        "mean_rate_hz": float(rates.mean()) if len(rates) else 0.0,
        "median_rate_hz": float(np.median(rates)) if len(rates) else 0.0,
        "behavior": behavior,
        "trials": _intervals(trials),
        "splits": {name: {"count": len(iv), "duration_s": iv.duration} for name, iv in splits.items()},
        "meta": meta,
    }


def _behavior_info(
    name: str, timestamps: np.ndarray, values: np.ndarray, weights: np.ndarray, unit: str, dims: list[str]
) -> dict[str, Any]:
    return {
        "n_samples": int(len(timestamps)),
        "dim": int(values.shape[1]),
        "unit": unit,
        "dims": list(dims),
        "masked_fraction": float(np.mean(weights == 0)) if len(weights) else 0.0,
    }


def _info_prepared(path: Path) -> dict[str, Any]:
    s = StoredSession(path)
    try:
        beh = {}
        for name in s.behavior_info:
            b = s.behavior(name)
            beh[name] = _behavior_info(name, b.timestamps, b.values, b.weights, b.unit, b.dims)
        return _summary("prepared", path, s.id, s.unit_spike_counts(), s.duration, beh, s.trials, s.splits, s.meta)
    finally:
        s.close()


def _info_recording(path: Path, kind: str) -> dict[str, Any]:
    session, report = read_recording(path, behavior=recording_signals(path))
    beh = {
        n: _behavior_info(n, b.timestamps, b.values, b.weights, b.unit, b.dims) for n, b in session.behaviors.items()
    }
    counts = np.bincount(session.spike_units, minlength=session.n_units)
    d = _summary(kind, path, session.id, counts, session.duration, beh, session.trials, session.splits, session.meta)
    d["report"] = report.to_dict()
    d["report_lines"] = report.lines()
    return d


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
    try:
        if not path.is_file():
            raise DataError(f"{path}: no such file")
        if not h5py.is_hdf5(path):
            raise DataError(f"{path}: neither an NWB file nor a prepared session (not HDF5)")
        try:
            with h5py.File(path, "r"):
                pass
        except OSError as e:
            raise DataError(f"{path}: the HDF5 file cannot be opened ({e}); it is probably truncated or corrupt") from e
        kind = file_kind(path)
        if kind == "prepared":
            d = _info_prepared(path)
        elif kind in ("nwb", "temporaldata"):
            d = _info_recording(path, kind)
        else:
            raise DataError(
                f"{path}: HDF5 file that is neither NWB, nor temporaldata (brainsets), nor a prepared spiketok session"
            )
    except DataError as e:
        fail(str(e))
    if as_json:
        typer.echo(json.dumps(d, indent=2, default=_json_default))
    else:
        _print_info(d)


def _json_default(v: Any) -> Any:
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist()
    return str(v)
