"""`spiketok train`, `evaluate`, `predict`, `demo` and `model-info`."""

from __future__ import annotations

import os
import time
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


def _results_table(results: dict) -> Table:
    table = Table(title=f"R² on the {results['split']} split")
    for col in ("session", "target", "R²", "R² per dimension", "samples"):
        table.add_column(col, justify="left" if col in ("session", "target") else "right")
    for sid, r in results["sessions"].items():
        per_dim = ", ".join(f"{d}={v:.3f}" for d, v in zip(r["dims"], r["r2_per_dim"]))
        table.add_row(sid, r["target"], f"{r['r2']:.3f}", per_dim, str(r["n_samples"]))
    table.add_row("[bold]mean[/bold]", "", f"[bold]{results['mean_r2']:.3f}[/bold]", "", "")
    return table


def _dataset(data: list[Path]):
    from ..data.storage import SessionDataset

    try:
        return SessionDataset(data)
    except DataError as e:
        fail(str(e))


@app.command()
def train(
    data: Annotated[list[Path], typer.Option("--data", "-d", help="Prepared session files or folders of them.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Run folder: checkpoints, logs, model.ckpt.")],
    config: Annotated[str, typer.Option("--config", "-c", help="A preset (tiny, poyo-1.3M, poyo-11.8M) or a YAML file.")] = "tiny",
    overrides: Annotated[Optional[list[str]], typer.Argument(help="key=value config overrides, e.g. max_steps=500 model.depth=4.", show_default=False)] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from OUT/checkpoints/last.ckpt.")] = False,
    devices: Annotated[str, typer.Option(help="Devices per node: 'auto', a count, or a list.")] = "auto",
    num_nodes: Annotated[int, typer.Option(help="Nodes for multi-node DDP (under torchrun or SLURM).")] = 1,
    accelerator: Annotated[str, typer.Option(help="auto, cpu or gpu.")] = "auto",
    strategy: Annotated[str, typer.Option(help="Lightning strategy: auto (DDP when several devices), ddp, ...")] = "auto",
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
    init: Annotated[Optional[Path], typer.Option("--init", help="Start from this pretrained model: new sessions get "
                    "their unit embeddings by unit identification, then every weight trains at a tenth of the lr "
                    "(the model's size and window are kept). With --resume, give the same --init.")] = None,
) -> None:
    """Train one model on all given sessions together (Lightning; DDP when several devices).

    A checkpoint is written at the end of every epoch (steps_per_epoch steps) and on SIGTERM or
    Ctrl-C; `--resume` continues from the last one.
    """
    from ..train.config import load_config
    from ..train.run import TrainingInterrupted, train as run_train

    try:
        cfg = load_config(config, overrides or [])
    except (ValueError, KeyError, FileNotFoundError) as e:
        fail(str(e))
    ds = _dataset(data)
    dev: int | str = int(devices) if devices.isdigit() else devices
    rank0 = all(os.environ.get(k, "0") == "0" for k in ("RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID"))
    if rank0:
        console.print(f"training on {len(ds)} session(s), {len(ds.unit_ids())} units, config {config}"
                      + (" (resuming)" if resume else ""))
    kw = dict(resume=resume, devices=dev, num_nodes=num_nodes, accelerator=accelerator, strategy=strategy,
              progress=progress)
    try:
        if init is not None:
            from ..adapt.transfer import train_from_pretrained
            from ..train.checkpoint import load

            cfg["init"] = str(init)
            result = train_from_pretrained(load(init), ds, cfg, out, **kw)
        else:
            result = run_train(ds, cfg, out, **kw)
    except TrainingInterrupted as e:
        if rank0:
            typer.echo(f"stopped: {e}", err=True)
        raise typer.Exit(130)
    except (DataError, FileNotFoundError, FileExistsError) as e:
        fail(str(e))
    if result.rank != 0:
        return
    console.print(f"[green]done[/green]: {result.steps} steps in {result.seconds / 60:.1f} min")
    if result.recipe and result.recipe.settings:
        console.print("  chosen from the data (settings left at auto; pass key=value to set them yourself):")
        for line in result.recipe.summary():
            console.print(f"    {line}")
    score = "n/a" if result.best_score is None else f"{result.best_score:.3f}"
    console.print(f"  model checkpoint  : {result.checkpoint} (best validation R² {score})")
    console.print(f"  all checkpoints   : {out / 'checkpoints'} (last.ckpt to resume)")
    console.print(f"  logs (CSV)        : {out / 'logs' / 'metrics.csv'}")
    console.print(f"  logs (TensorBoard): tensorboard --logdir {out / 'tb'}")
    console.print(f"  next              : spiketok evaluate {result.checkpoint} --data {' --data '.join(map(str, data))}")


@app.command()
def evaluate(
    checkpoint: Annotated[Path, typer.Argument(help="A spiketok checkpoint (model.ckpt).")],
    data: Annotated[list[Path], typer.Option("--data", "-d", help="Prepared session files or folders.")],
    split: Annotated[str, typer.Option(help="Split to score: test, valid or train.")] = "test",
    json_path: Annotated[Optional[Path], typer.Option("--json", help="Write the results as JSON here.")] = None,
    plots: Annotated[Optional[Path], typer.Option(help="Folder for PNG plots (traces, R² per session).")] = None,
    target: Annotated[Optional[str], typer.Option(help="Behaviour to decode for sessions the model was not trained on.")] = None,
    stride: Annotated[Optional[float], typer.Option(help="Seconds between sliding windows (default: the training eval_stride, 0.5 s in the presets, at most half a window).")] = None,
) -> None:
    """Decode held-out data with overlapping windows, stitch, and report R² per session and dimension."""
    from ..evaluate.report import evaluate as run_eval, plot_results, write_json
    from ..model.embeddings import UnknownIdError
    from ..train.checkpoint import load

    model = load(checkpoint)
    ds = _dataset(data)
    try:
        results, decoded = run_eval(model, ds, split, target, stride)
    except (UnknownIdError, KeyError, ValueError, DataError) as e:
        fail(str(e))
    console.print(_results_table(results))
    if json_path:
        write_json(results, json_path)
        console.print(f"results: {json_path}")
    if plots:
        paths = plot_results(results, decoded, plots)
        console.print(f"plots: {len(paths)} PNG files in {plots}")


@app.command()
def predict(
    checkpoint: Annotated[Path, typer.Argument(help="A spiketok checkpoint.")],
    file: Annotated[Path, typer.Argument(help="An NWB file, a brainsets/temporaldata file or a prepared session file (.h5).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output file: .npz, .csv, or .nwb (a new NWB file: a "
                                                          "TimeSeries in processing module 'spiketok').")],
    rate: Annotated[float, typer.Option(help="Output rate (Hz) when the file has no matching behaviour signal.")] = 100.0,
) -> None:
    """Decode a whole recording and write the predicted behaviour with its timestamps."""
    from ..data.readers import read_recording
    from ..data.session import Intervals
    from ..data.storage import FORMAT, StoredSession
    from ..evaluate.decode import decode_times
    from ..model.embeddings import UnknownIdError
    from ..train.checkpoint import load

    if out.suffix not in (".nwb", ".npz", ".csv"):
        fail(f"{out}: the output must end in .nwb, .npz or .csv")
    if out.exists() and out.resolve() == file.resolve():
        fail(f"{out}: this is the input recording; write the predictions to a new file")
    model = load(checkpoint)
    try:
        prepared = _is_prepared(file, FORMAT)
        if prepared:
            session = StoredSession(file)
            available = list(session.behavior_info)
        else:
            session, _ = read_recording(file, behavior=[])
            available = []
        trained = model.hparams.get("targets", {})
        target = trained.get(session.id) or (model.task_names[0] if len(model.task_names) == 1 else None)
        if target is None:
            fail(f"the model has several tasks {model.task_names} and was not trained on {session.id}")
        if not available and not prepared:
            try:
                session, _ = read_recording(file, behavior=[target])
                available = [target]
            except DataError:
                pass
        if target in available:
            times = session.behavior(target).timestamps
        else:
            times = np.arange(session.start, session.end, 1.0 / rate)
        span = Intervals([session.start], [session.end + 1e-6])
        pred, covered = decode_times(model, session, target, span, times, progress=True)
    except (UnknownIdError, DataError) as e:
        fail(str(e))
    dims = [f"{target}_{k}" for k in range(pred.shape[1])]
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".nwb":
        from ..evaluate.export import write_predictions_nwb

        known = session.behavior(target) if target in available else None
        write_predictions_nwb(out, times, pred, target=target, dims=known.dims if known else dims,
                              unit=known.unit if known else "", session_id=session.id, source=file,
                              model=checkpoint, source_meta=session.meta)
    elif out.suffix == ".npz":
        np.savez(out, timestamps=times, predictions=pred, dims=np.array(dims), session=session.id, target=target)
    else:
        header = "timestamp," + ",".join(dims)
        np.savetxt(out, np.column_stack([times, pred]), delimiter=",", header=header, comments="", fmt="%.6f")
    console.print(f"wrote {len(times)} predictions of {target} ({covered.mean():.0%} of samples covered) to {out}")


def _is_prepared(path: Path, fmt: str) -> bool:
    import h5py

    try:
        with h5py.File(path, "r") as f:
            return f.attrs.get("format") == fmt
    except OSError:
        return False


@app.command()
def convert(
    old: Annotated[Path, typer.Argument(help="A pickled checkpoint: an older spiketok model.ckpt or a Lightning .ckpt.")],
    new: Annotated[Path, typer.Argument(help="The data-only model file to write.")],
) -> None:
    """Convert a pickled checkpoint into a data-only model file (safetensors + JSON metadata).

    UNSAFE FOR UNTRUSTED FILES: this command unpickles OLD (torch.load with weights_only=False), which
    can run any code the file holds; convert only files you made yourself or trust. The file it
    writes is data only: `spiketok.load` and every other command read it without unpickling.
    """
    from ..train.checkpoint import convert_checkpoint, load

    if old.resolve() == new.resolve():
        fail(f"{new}: write the converted model to a new file, not over {old}")
    convert_checkpoint(old, new)
    model = load(new)
    console.print(f"wrote {new}: {model.n_parameters(with_vocab=True):,} parameters, {len(model.unit_emb)} units, "
                  f"{len(model.session_emb)} sessions, tasks {model.task_names}")


@app.command("model-info")
def model_info(
    name: Annotated[str, typer.Argument(help="A model size (tiny, poyo-1.3M, poyo-11.8M) or a checkpoint file.")],
) -> None:
    """Print a model's settings and parameter count (without the unit and session tables)."""
    from ..model.config import SIZES, model_config
    from ..model.poyo import POYO
    from ..train.checkpoint import load

    if name in SIZES:
        model = POYO(model_config(name))
    elif Path(name).exists():
        model = load(name)
    else:
        fail(f"{name!r} is neither a model size ({', '.join(SIZES)}) nor a checkpoint file")
    table = Table(title=f"model {name}")
    table.add_column("setting")
    table.add_column("value", justify="right")
    for k, v in model.config.to_dict().items():
        table.add_row(k, str(v))
    n = model.n_parameters()
    table.add_row("parameters", f"{n:,} ({n / 1e6:.2f}M)")
    table.add_row("units / sessions in vocabulary", f"{len(model.unit_emb)} / {len(model.session_emb)}")
    table.add_row("parameters with vocabulary", f"{model.n_parameters(with_vocab=True):,}")
    console.print(table)


@app.command()
def demo(
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the demo's data, run, results and plots.")] = Path("spiketok-demo"),
    minutes: Annotated[float, typer.Option(help="Training time budget in minutes (stops earlier at --steps).")] = 4.0,
    steps: Annotated[int, typer.Option(min=10, help="Training steps.")] = 400,
    sessions: Annotated[int, typer.Option(min=1, help="Simulated sessions per animal (2 animals).")] = 2,
    duration: Annotated[float, typer.Option(min=60.0, help="Seconds of data per simulated session.")] = 240.0,
    seed: Annotated[int, typer.Option(help="Seed for simulation and training.")] = 0,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
) -> None:
    """Simulate multi-session motor cortex, train a tiny model, evaluate, plot, and print the R²."""
    from ..data.simulate import simulate_to_folder
    from ..data.storage import SessionDataset
    from ..evaluate.report import evaluate as run_eval, plot_results, write_json
    from ..train.checkpoint import load
    from ..train.config import load_config
    from ..train.run import train as run_train

    t0 = time.monotonic()
    console.rule("1/4 simulate")
    paths = simulate_to_folder(out / "data", n_animals=2, sessions_per_animal=sessions, n_units=(80, 100),
                               duration=duration, seed=seed, task="mixed")
    console.print(f"{len(paths)} simulated sessions in {out / 'data'}")
    ds = SessionDataset(paths)
    console.rule("2/4 train (tiny model)")
    run_dir, k = out / "run", 1
    while (run_dir / "checkpoints").exists():  # each demo run trains into a new folder
        k += 1
        run_dir = out / f"run-{k}"
    # the simulator's tuning is known (1 s of context is plenty), so the demo skips the recipe's window pilots
    cfg = load_config("tiny", ["target=hand_velocity", "model.window=1", f"max_steps={steps}", f"warmup_steps={min(100, steps // 4)}",
                               f"max_minutes={minutes}", f"seed={seed}"])
    result = run_train(ds, cfg, run_dir, progress=progress)
    if result.steps < steps:
        console.print(f"[yellow]the {minutes:g} min budget stopped training after {result.steps} of {steps} steps; "
                      "the R² below is lower than a full run's (raise --minutes)[/yellow]")
    console.rule("3/4 evaluate")
    model = load(result.checkpoint)
    results, decoded = run_eval(model, ds, "test", progress=progress)
    write_json(results, out / "results.json")
    console.print(_results_table(results))
    console.rule("4/4 plot")
    plot_results(results, decoded, out / "plots")
    console.print(f"checkpoint {result.checkpoint}; results {out / 'results.json'}; plots {out / 'plots'}")
    console.print(f"[bold]demo R² = {results['mean_r2']:.3f}[/bold] (test split, {len(ds)} sessions, "
                  f"{(time.monotonic() - t0) / 60:.1f} min in all)")
