"""`spiketok tune`: an Optuna search of the training settings within a time budget (spiketok.train.tune)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from . import app
from .common import load_dataset
from .errors import EXIT_INTERRUPTED
from .options import DataPaths

console = Console()


@app.command()
def tune(
    data: DataPaths,
    out: Annotated[
        Path,
        typer.Option("--out", "-o", help="Run folder: optuna.db, best.yaml, search.png, trials.csv/json, trials/."),
    ],
    budget_minutes: Annotated[
        float,
        typer.Option("--budget-minutes", "-m", help="Total time for the search; no trial starts once it is spent."),
    ],
    trials: Annotated[
        int | None,
        typer.Option(
            "--trials",
            "-n",
            min=1,
            help="At most this many trials in this run (each gets budget/N minutes; default: "
            "budget/10 each until the budget is spent).",
        ),
    ] = None,
    config: Annotated[
        str, typer.Option("--config", "-c", help="Base config: a preset (tiny, poyo-1.3M, poyo-11.8M) or a YAML file.")
    ] = "tiny",
    overrides: Annotated[
        list[str] | None,
        typer.Argument(
            help="key=value overrides of the base config, e.g. max_steps=500 target=hand_velocity.", show_default=False
        ),
    ] = None,
    accelerator: Annotated[str, typer.Option(help="auto, cpu or gpu (one device per trial).")] = "auto",
) -> None:
    """Search learning rate, weight decay, dropout, window, latent step, width and depth with Optuna.

    Trials are scored by R² on the valid split only (never the test split); Optuna's median pruner
    stops poor trials early. Running the same command again resumes the study in OUT/optuna.db.
    Train the winner with `spiketok train --config OUT/best.yaml`.
    """
    from ..train.config import load_config
    from ..train.tune import format_values
    from ..train.tune import tune as run_tune

    base = load_config(config, overrides or [])  # ConfigError: one `error:` line before the data is read
    ds = load_dataset(data)
    share = budget_minutes / (trials or 10)
    console.print(
        f"tuning on {len(ds)} session(s), config {config}: {budget_minutes:g} min budget, "
        + (f"up to {trials} trials" if trials else "trials")
        + f" of at most {share:.2g} min and "
        f"{base.max_steps} steps each, scored by val R² (valid split)"
    )
    count = {"n": 0}

    def progress(row, best) -> None:
        count["n"] += 1
        colour = {"complete": "green", "pruned": "yellow", "fail": "red"}.get(row.state, "white")
        console.print(f"[{colour}]{count['n']}{'/' + str(trials) if trials else ''}[/{colour}] {row.line(best)}")

    try:
        result = run_tune(
            ds,
            out,
            budget_minutes,
            config=config,
            overrides=overrides or [],
            trials=trials,
            accelerator=accelerator,
            on_trial=progress,
        )
    except KeyboardInterrupt:
        typer.echo(
            f"stopped: the trials so far are in {out / 'optuna.db'}; run the same command again to continue", err=True
        )
        raise typer.Exit(EXIT_INTERRUPTED) from None
    states = [r.state for r in result.rows]
    best = result.best
    console.print(
        f"[green]done[/green]: {result.new_trials} trial(s) in {result.seconds / 60:.1f} min; the study holds "
        f"{len(states)} ({states.count('complete')} complete, {states.count('pruned')} pruned, "
        f"{states.count('fail')} failed)"
    )
    short = [r for r in result.rows if r.state == "complete" and r.steps is not None and r.steps < base.max_steps]
    if short:
        console.print(
            f"[yellow]{len(short)} trial(s) stopped before max_steps={base.max_steps} (their time share or "
            "early stopping); the learning-rate schedule assumes max_steps, so lower max_steps or raise "
            "--budget-minutes if most trials are cut by time[/yellow]"
        )
    table = Table(title=f"best: trial {best.number}, val R² {best.val_r2:.3f}")
    table.add_column("setting")
    table.add_column("base", justify="right")
    table.add_column("chosen", justify="right")
    for key, chosen in best.values.items():
        before = result.base_values.get(key)
        same = before == chosen
        shown = f"{chosen:.3g}" if isinstance(chosen, float) else str(chosen)
        table.add_row(
            key,
            f"{before:.3g}" if isinstance(before, float) else str(before),
            shown if same else f"[bold]{shown}[/bold]",
        )
    console.print(table)
    console.print(f"  chosen      : {format_values(best.values)}")
    console.print(f"  best config : {result.best_yaml}")
    console.print(f"  search plot : {result.plot}")
    console.print(f"  trials      : {result.summary[0]}, {result.summary[1]}")
    console.print(f"  study       : {result.study_db} (run the same command again to add trials)")
    console.print(
        f"  next        : spiketok train --config {result.best_yaml} --data {' --data '.join(map(str, data))} "
        f"--out RUN_DIR"
    )
