"""`spiketok adapt`, `fewshot` and `embeddings`: a trained model on a new session."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from . import app
from .checks import check_output
from .common import load_model
from .errors import fail
from .options import DecodeTarget, OverwriteOutput

console = Console()
MODE_HELP = (
    "unit-id: only the new unit/session embeddings; finetune: unit-id, then every weight; scratch: a fresh model."
)


@app.command()
def adapt(
    checkpoint: Annotated[Path, typer.Argument(help="A trained spiketok checkpoint.")],
    session: Annotated[Path, typer.Argument(help="The new session: a prepared .h5 file (spiketok prepare).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Where to write the adapted checkpoint.")],
    mode: Annotated[str, typer.Option(help=MODE_HELP)] = "unit-id",
    train_trials: Annotated[
        int | None,
        typer.Option(help="Adapt on N trials of the session's training split (neither option: all of it)."),
    ] = None,
    train_seconds: Annotated[
        float | None, typer.Option(help="Adapt on the first S seconds of its training split.")
    ] = None,
    pick: Annotated[str, typer.Option(help="Which N trials: 'first' in time, or 'random' (by --seed).")] = "first",
    seed: Annotated[int, typer.Option(help="Seed for the trial draw, initialisation and training windows.")] = 0,
    target: DecodeTarget = None,
    evaluate: Annotated[
        bool, typer.Option("--evaluate/--no-evaluate", help="Report R² on the session's test split.")
    ] = True,
    overrides: Annotated[
        list[str] | None,
        typer.Argument(help="key=value adaptation settings, e.g. max_steps=200 lr_unit_id=0.01.", show_default=False),
    ] = None,
    overwrite: OverwriteOutput = False,
) -> None:
    """Adapt a trained model to a new session: extend its vocabularies with the session's units and id, and train.

    From 20 trials (10 s) up, the last 20% are held out for early stopping; below that, a fixed
    number of steps on all of them. The new checkpoint loads, evaluates and predicts like any other.
    """
    from ..adapt.files import adapt_file
    from ..adapt.run import MODES

    if mode not in MODES:
        fail(f"--mode must be one of {', '.join(MODES)}, not {mode!r}")
    if train_trials is not None and train_seconds is not None:
        fail("give --train-trials or --train-seconds, not both")
    check_output(out, overwrite, inputs=[checkpoint, session], model_ok=overwrite)
    res = adapt_file(
        checkpoint,
        session,
        out,
        overrides or [],
        pick=pick,
        evaluate=evaluate,
        mode=mode,
        n_trials=train_trials,
        seconds=train_seconds,
        target=target,
        seed=seed,
    )
    s, rec = res.session, res.record
    console.print(f"adapted to [bold]{s.id}[/bold] ({s.n_units} units, target {rec.target}), mode {mode}")
    console.print(f"  data: {rec.data}")
    for st in rec.stages:
        if st.name == "scratch":
            val = "trained as `spiketok train` would (the recipe's steps; best validation R² when data is held out)"
        elif st.best_val_loss is None:
            val = "no held-out part: a fixed number of steps"
        else:
            val = f"best validation loss {st.best_val_loss:.4f} at step {st.best_step}"
        console.print(f"  {st.name}: {st.steps} steps in {st.seconds:.0f} s; {val}")
    console.print(f"  checkpoint: {out}")
    if res.test_r2 is not None:
        r2 = res.test_r2
        console.print(
            f"  R² on {s.id}'s test split: [bold]{float(r2.mean()):.3f}[/bold] "
            f"({', '.join(f'{v:.3f}' for v in r2)} per dimension)"
        )


def _parse_counts(text: str) -> list[int]:
    try:
        counts = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        fail(f"--trials must be comma-separated whole numbers, e.g. 1,2,5,10; got {text!r}")
    if not counts or min(counts) < 1:
        fail(f"--trials needs at least one count, all at least 1; got {text!r}")
    return counts


def fewshot_table(summary: list[dict], session_id: str) -> Table:
    """Rows: N; columns: modes; cells: mean ± std of R² over seeds (min-max below)."""
    modes = list(dict.fromkeys(r["mode"] for r in summary))
    table = Table(title=f"R² on {session_id}'s test split after adapting with N trials (mean ± sd over seeds)")
    table.add_column("N", justify="right")
    for m in modes:
        table.add_column(m, justify="right")
    for n in sorted({r["n_trials"] for r in summary}):
        cells = []
        for m in modes:
            row = next((r for r in summary if r["mode"] == m and r["n_trials"] == n), None)
            cells.append("" if row is None else f"{row['r2_mean']:.3f} ± {row['r2_std']:.3f}")
        table.add_row(str(n), *cells)
    return table


@app.command()
def fewshot(
    checkpoint: Annotated[Path, typer.Argument(help="A trained spiketok checkpoint.")],
    session: Annotated[Path, typer.Argument(help="The new session: a prepared .h5 file with trials.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for fewshot.csv, fewshot_runs.csv and fewshot.png.")],
    trials: Annotated[str, typer.Option(help="Comma-separated numbers of adaptation trials.")] = "1,2,5,10,20,50",
    seeds: Annotated[int, typer.Option(help="Seeds per count: each draws its own trials and initialisation.")] = 3,
    modes: Annotated[str, typer.Option(help="Comma-separated modes to compare.")] = "unit-id,finetune,scratch",
    pick: Annotated[str, typer.Option(help="'random' N trials per seed, or the 'first' N every time.")] = "random",
    target: DecodeTarget = None,
    overrides: Annotated[
        list[str] | None,
        typer.Argument(help="key=value adaptation settings, e.g. max_steps=200.", show_default=False),
    ] = None,
) -> None:
    """Few-shot study: R² on the new session's test split after unit-id, finetune and scratch with N trials."""
    from ..adapt.fewshot import summarise
    from ..adapt.files import fewshot_files
    from ..adapt.run import MODES

    counts = _parse_counts(trials)
    mode_list = [m.strip() for m in modes.split(",") if m.strip()]
    bad = [m for m in mode_list if m not in MODES]
    if bad or not mode_list:
        fail(f"--modes must be a comma-separated subset of {','.join(MODES)}; got {modes!r}")
    if seeds < 1:
        fail("--seeds must be at least 1")
    study = fewshot_files(checkpoint, session, out, counts, seeds, mode_list, target, pick, overrides or [])
    runs, s = study.runs, study.session
    skipped = sorted(set(counts) - {r.n_trials for r in runs})
    if skipped:
        console.print(
            f"[yellow]left out N = {', '.join(map(str, skipped))}: more than the session's "
            f"{len(s.splits['train'])} training trials[/yellow]"
        )
    console.print(fewshot_table(summarise(runs), s.id))
    console.print(f"table: {study.tables[0]} (every run: {study.tables[1]}); plot: {study.plot}")


@app.command()
def embeddings(
    checkpoint: Annotated[Path, typer.Argument(help="A trained spiketok checkpoint.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="The PNG figure to write.")],
    method: Annotated[str, typer.Option(help="auto (UMAP when installed, else PCA), pca or umap.")] = "auto",
) -> None:
    """Plot the model's unit embeddings in 2-D (PCA, or UMAP when installed), coloured by session."""
    from ..adapt.embeddings import plot_projection, project_unit_embeddings

    model = load_model(checkpoint)
    coords, sessions, used = project_unit_embeddings(model, method)
    path = plot_projection(coords, sessions, used, out)
    console.print(f"{len(sessions)} unit embeddings of {len(set(sessions))} session(s), {used.upper()}: {path}")
