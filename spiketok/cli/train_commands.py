"""`spiketok train`, `evaluate`, `predict`, `demo` and `model-info`."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from . import app
from .checks import check_output, parse_devices
from .common import load_model
from .errors import EXIT_INTERRUPTED, fail
from .options import DataPaths, DecodeTarget, JsonOut, OverwriteJson, ScoreSplit

console = Console()
MAX_RATE = 10_000.0  # predict --rate (Hz): beyond it the output would be mostly copies of the same decode


def _results_table(results: dict) -> Table:
    table = Table(title=f"R² on the {results['split']} split")
    for col in ("session", "target", "R²", "R² per dimension", "samples"):
        table.add_column(col, justify="left" if col in ("session", "target") else "right")
    for sid, r in results["sessions"].items():
        per_dim = ", ".join(f"{d}={v:.3f}" for d, v in zip(r["dims"], r["r2_per_dim"]))
        table.add_row(sid, r["target"], f"{r['r2']:.3f}", per_dim, str(r["n_samples"]))
    table.add_row("[bold]mean[/bold]", "", f"[bold]{results['mean_r2']:.3f}[/bold]", "", "")
    return table


@app.command()
def train(
    data: DataPaths,
    out: Annotated[Path, typer.Option("--out", "-o", help="Run folder: checkpoints, logs, model.ckpt.")],
    config: Annotated[
        str, typer.Option("--config", "-c", help="A preset (tiny, poyo-1.3M, poyo-11.8M) or a YAML file.")
    ] = "tiny",
    overrides: Annotated[
        list[str] | None,
        typer.Argument(help="key=value config overrides, e.g. max_steps=500 model.depth=4.", show_default=False),
    ] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from OUT/checkpoints/last.ckpt.")] = False,
    devices: Annotated[
        str,
        typer.Option(
            help="Devices per node: 'auto', a count (at most the machine's GPUs, or CPU "
            "cores on a CPU), -1 (all), or GPU indices such as 0,1."
        ),
    ] = "auto",
    num_nodes: Annotated[int, typer.Option(help="Nodes for multi-node DDP (under torchrun or SLURM).")] = 1,
    accelerator: Annotated[str, typer.Option(help="auto, cpu or gpu.")] = "auto",
    strategy: Annotated[
        str, typer.Option(help="Lightning strategy: auto (DDP when several devices), ddp, ...")
    ] = "auto",
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
    init: Annotated[
        Path | None,
        typer.Option(
            "--init",
            help="Start from this pretrained model: new sessions get "
            "their unit embeddings by unit identification (from init_unit_id_restarts random starts, the lowest "
            "validation loss kept), then every weight trains at init_lr_factor times "
            "the lr (auto: 0.1 and 1 both run in OUT/lr-x<factor>, the better on validation R² is kept); "
            "the model's size and window are kept. With --resume, give the same --init.",
        ),
    ] = None,
    ensemble: Annotated[
        int,
        typer.Option(
            "--ensemble",
            min=1,
            help="Train K models: OUT, then K-1 more with the "
            "settings the recipe chose and seeds + 1 .. K-1 in OUT/ensemble/seed-S; `evaluate` with all "
            "their model.ckpt averages their predictions (what it adds: docs/benchmarks.md).",
        ),
    ] = 1,
) -> None:
    """Train one model on all given sessions together (Lightning; DDP when several devices).

    A checkpoint is written at the end of every epoch (steps_per_epoch steps) and on SIGTERM or
    Ctrl-C; `--resume` continues from the last one.
    """
    from ..adapt.pipeline import launched_as_rank_zero, train_sessions
    from ..train.run import TrainingInterrupted

    dev = parse_devices(devices, accelerator)  # more than the machine has: refused, not 99 processes started

    def announce(ds, cfg: dict) -> None:
        resuming = " (resuming)" if resume else ""
        console.print(f"training on {len(ds)} session(s), {len(ds.unit_ids())} units, config {config}{resuming}")

    trainer_kw = dict(devices=dev, num_nodes=num_nodes, accelerator=accelerator, strategy=strategy, progress=progress)
    try:
        run = train_sessions(
            data,
            out,
            config,
            overrides or [],
            init=init,
            ensemble=ensemble,
            resume=resume,
            on_start=announce,
            **trainer_kw,
        )
    except TrainingInterrupted as e:
        if launched_as_rank_zero():
            typer.echo(f"stopped: {e}", err=True)
        raise typer.Exit(EXIT_INTERRUPTED) from None
    result, members = run.first, run.members
    if result.rank != 0:
        return
    console.print(f"[green]done[/green]: {result.steps} steps in {result.seconds / 60:.1f} min")
    if result.recipe and result.recipe.settings:
        console.print("  chosen from the data (settings left at auto; pass key=value to set them yourself):")
        for line in result.recipe.summary():
            console.print(f"    {line}")
    score = "n/a" if result.best_score is None else f"{result.best_score:.3f}"
    console.print(f"  model checkpoint  : {result.checkpoint} (best validation R² {score})")
    run_dir = result.run_dir  # OUT, or with --init the fine-tuning run that was kept
    console.print(f"  all checkpoints   : {run_dir / 'checkpoints'} (last.ckpt to resume)")
    console.print(f"  logs (CSV)        : {run_dir / 'logs' / 'metrics.csv'}")
    console.print(f"  logs (TensorBoard): tensorboard --logdir {run_dir / 'tb'}")
    for m in members:
        member_score = "n/a" if m.best_score is None else f"{m.best_score:.3f}"
        console.print(f"  ensemble member   : {m.checkpoint} (best validation R² {member_score})")
    checkpoints = " ".join(str(r.checkpoint) for r in run.models)
    console.print(f"  next              : spiketok evaluate {checkpoints} --data {' --data '.join(map(str, data))}")


@app.command()
def evaluate(
    checkpoints: Annotated[
        list[Path],
        typer.Argument(
            help="A spiketok checkpoint (model.ckpt); several (e.g. the "
            "models of `train --ensemble`): their predictions are averaged."
        ),
    ],
    data: DataPaths,
    split: ScoreSplit = "test",
    json_path: JsonOut = None,
    plots: Annotated[Path | None, typer.Option(help="Folder for PNG plots (traces, R² per session).")] = None,
    target: DecodeTarget = None,
    stride: Annotated[
        float | None,
        typer.Option(
            help="Seconds between sliding windows (default: the training eval_stride, 0.5 s in the "
            "presets, at most half a window)."
        ),
    ] = None,
    overwrite: OverwriteJson = False,
) -> None:
    """Decode held-out data with overlapping windows, stitch, and report R² per session and dimension."""
    from ..evaluate.report import evaluate_files, plot_results, write_json

    if json_path is not None:
        check_output(json_path, overwrite, [*checkpoints, *data], flag="--json")
    results, decoded = evaluate_files(checkpoints, data, split, target, stride)
    console.print(_results_table(results))
    if json_path:
        write_json(results, json_path)
        console.print(f"results: {json_path}")
    if plots:
        paths = plot_results(results, decoded, plots)
        console.print(f"plots: {len(paths)} PNG files in {plots}")


@app.command()
def predict(
    paths: Annotated[
        list[Path],
        typer.Argument(
            metavar="CHECKPOINT... FILE",
            help="One spiketok checkpoint, or "
            "several (e.g. the models of `train --ensemble`: their predictions are averaged), then the "
            "recording: an NWB file, a brainsets/temporaldata file or a prepared session file (.h5).",
        ),
    ],
    out: Annotated[
        Path,
        typer.Option(
            "--out",
            "-o",
            help="Output file: .npz, .csv, or .nwb (a new NWB file: a TimeSeries in processing module 'spiketok').",
        ),
    ],
    rate: Annotated[
        float, typer.Option(help="Output rate (Hz) when the file has no matching behaviour signal.")
    ] = 100.0,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace an existing --out file (never a model file or a recording).")
    ] = False,
) -> None:
    """Decode a whole recording and write the predicted behaviour with its timestamps."""
    from ..evaluate.predict import OUTPUT_SUFFIXES, predict_file

    if len(paths) < 2:
        fail("give a checkpoint and then the recording to decode: spiketok predict CHECKPOINT [CHECKPOINT ...] FILE")
    *checkpoints, file = paths
    if out.suffix not in OUTPUT_SUFFIXES:
        fail(f"{out}: the output must end in .nwb, .npz or .csv")
    if not 0 < rate <= MAX_RATE:
        fail(f"--rate {rate:g}: give a rate in Hz above 0 and at most {MAX_RATE:g}")
    if out.exists() and out.resolve() == file.resolve():
        fail(f"{out}: this is the input recording; write the predictions to a new file")
    check_output(out, overwrite, paths)
    pred = predict_file(checkpoints, file, out, rate, progress=True)
    what = f"the average of {len(checkpoints)} models" if len(checkpoints) > 1 else "predictions"
    console.print(
        f"wrote {len(pred.times)} predictions of {pred.target} ({what}; {pred.covered.mean():.0%} of samples "
        f"covered) to {out}"
    )


@app.command()
def convert(
    old: Annotated[
        Path, typer.Argument(help="A pickled checkpoint: an older spiketok model.ckpt or a Lightning .ckpt.")
    ],
    new: Annotated[Path, typer.Argument(help="The data-only model file to write.")],
    trust: Annotated[
        bool, typer.Option("--trust", help="Proceed: you trust OLD, whose code this command may run.")
    ] = False,
) -> None:
    """Convert a pickled checkpoint into a data-only model file (safetensors + JSON metadata).

    UNSAFE FOR UNTRUSTED FILES: a checkpoint that holds more than tensors and plain data is unpickled
    (torch.load with weights_only=False), which runs any code the file holds. Every run says so first
    and refuses without --trust; convert only files you made yourself or trust. The file it writes is
    data only: `spiketok.load` and every other command read it without unpickling.
    """
    from ..train.checkpoint import convert_checkpoint

    typer.echo(
        f"warning: convert unpickles {old}, which executes any code the file holds; use it only on files "
        "you made yourself or trust",
        err=True,
    )
    if not trust:
        fail(f"{old}: not converted; give --trust to proceed if you trust where the file came from")
    if old.resolve() == new.resolve():
        fail(f"{new}: write the converted model to a new file, not over {old}")
    convert_checkpoint(old, new, trusted=True)
    model = load_model(new)
    console.print(
        f"wrote {new}: {model.n_parameters(with_vocab=True):,} parameters, {len(model.unit_emb)} units, "
        f"{len(model.session_emb)} sessions, tasks {model.task_names}"
    )


@app.command("model-info")
def model_info(
    name: Annotated[
        str, typer.Argument(help="A model size (tiny, poyo-1.3M, poyo-11.8M, possm-tiny, possm-1.3M) or a model file.")
    ],
) -> None:
    """Print a model's settings and parameter count (without the unit and session tables)."""
    from ..model.config import SIZES, model_config
    from ..model.family import new_model

    if name in SIZES:
        model = new_model(model_config(name))
    elif Path(name).exists() or name.startswith("pretrained:"):
        model = load_model(name)
    else:
        fail(f"{name!r} is neither a model size ({', '.join(SIZES)}), a checkpoint file nor pretrained:NAME")
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
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Folder for the demo's data, run, results and plots.")
    ] = Path("spiketok-demo"),
    minutes: Annotated[float, typer.Option(help="Training time budget in minutes (stops earlier at --steps).")] = 4.0,
    steps: Annotated[int, typer.Option(min=10, help="Training steps.")] = 400,
    sessions: Annotated[int, typer.Option(min=1, help="Simulated sessions per animal (2 animals).")] = 2,
    duration: Annotated[float, typer.Option(min=60.0, help="Seconds of data per simulated session.")] = 240.0,
    seed: Annotated[int, typer.Option(help="Seed for simulation and training.")] = 0,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
    adapt: Annotated[
        bool,
        typer.Option(
            "--adapt",
            help="Instead: adapt the shipped pretrained:primate-reaching model to a "
            "new simulated session, against a scratch model.",
        ),
    ] = False,
    trials: Annotated[int, typer.Option(min=1, help="With --adapt: trials of the new session to adapt on.")] = 10,
) -> None:
    """Simulate multi-session motor cortex, train a tiny model, evaluate, plot, and print the R².

    With --adapt nothing is trained from zero first: the shipped pretrained model learns a new
    simulated session's units from --trials trials, and a fresh model trains on the same trials
    (at most --steps steps) for comparison.
    """
    if adapt:
        return _demo_adapt(out, trials, steps, seed, progress)
    from ..adapt.demo import run_demo

    res = run_demo(out, minutes, steps, sessions, duration, seed, progress, on_stage=console.rule)
    console.print(f"{len(res.sessions)} simulated sessions in {out / 'data'}")
    if res.training.steps < steps:
        console.print(
            f"[yellow]the {minutes:g} min budget stopped training after {res.training.steps} of {steps} steps; "
            "the R² below is lower than a full run's (raise --minutes)[/yellow]"
        )
    console.print(_results_table(res.results))
    console.print(f"checkpoint {res.training.checkpoint}; results {res.results_json}; plots {res.plots}")
    console.print(
        f"[bold]demo R² = {res.results['mean_r2']:.3f}[/bold] (test split, {len(res.sessions)} sessions, "
        f"{res.seconds / 60:.1f} min in all)"
    )


def _demo_adapt(out: Path, trials: int, steps: int, seed: int, progress: bool) -> None:
    from ..adapt.demo import DEMO_MODEL, adapt_demo

    t0 = time.monotonic()
    console.rule(f"adapt {DEMO_MODEL} to a new simulated session with {trials} trials")
    res = adapt_demo(out, n_trials=trials, seed=seed, scratch_max_steps=steps, progress=progress)
    score = {r.mode: r for r in res.runs}
    for mode, r in score.items():
        console.print(f"  {mode:8s}: R² {r.r2:.3f} on the test split ({r.steps} steps, {r.seconds:.0f} s)")
    console.print(f"session {res.session}; table {res.table}; plot {res.plot}")
    console.print(
        f"[bold]demo --adapt: unit-id R² = {score['unit-id'].r2:.3f}, scratch R² = {score['scratch'].r2:.3f}"
        f"[/bold] ({trials} trials, {(time.monotonic() - t0) / 60:.1f} min in all)"
    )
