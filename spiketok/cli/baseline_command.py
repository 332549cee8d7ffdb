"""`spiketok baseline`: ridge, GRU or MLP decoders on binned spikes, scored like `spiketok evaluate`."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from . import app
from .checks import check_output
from .options import DataPaths, JsonOut, OverwriteJson, ScoreSplit

console = Console()


def _fit_summary(fit: dict) -> str:
    """What validation chose: the window (layout, length) and the penalty or the early-stopping step."""
    window = f"{fit['lags']} {fit['history']:.2f} s"
    if "alpha" in fit:
        return f"{window}, alpha {fit['alpha']:.3g}"
    return f"{window}, step {fit['best_step']} of {fit['steps']}"


def results_table(results: dict) -> Table:
    """One row per session: R², R² per dimension, scored samples, how the model was chosen (and target)."""
    targets = {r["target"] for r in results["sessions"].values()}
    title = f"{results['model']} baseline, R² on the {results['split']} split"
    table = Table(title=title + (f" ({targets.pop()})" if len(targets) == 1 else ""))
    cols = ["session"] + (["target"] if targets else []) + ["R²", "per dim", "samples", "chosen"]
    for col in cols:
        table.add_column(
            col,
            justify="left" if col in ("session", "target", "chosen") else "right",
            no_wrap=col != "chosen",
            min_width=5 if col == "R²" else None,
        )  # numbers never cut
    for sid, r in results["sessions"].items():
        per_dim = " ".join(f"{v:.3f}" for v in r["r2_per_dim"])
        cells = (
            [sid]
            + ([r["target"]] if targets else [])
            + [f"{r['r2']:.3f}", per_dim, str(r["n_samples"]), _fit_summary(r["fit"])]
        )
        table.add_row(*cells)
    table.add_row("[bold]mean[/bold]", *([""] if targets else []), f"[bold]{results['mean_r2']:.3f}[/bold]", "", "", "")
    return table


@app.command()
def baseline(
    data: DataPaths,
    model: Annotated[str, typer.Option("--model", "-m", help="ridge (Wiener filter), gru or mlp.")] = "ridge",
    bin: Annotated[float, typer.Option("--bin", help="Bin width in seconds.")] = 0.02,
    target: Annotated[
        str | None,
        typer.Option(
            help="Behaviour to decode ('a,b': the first each session has); default: each session's only signal."
        ),
    ] = None,
    history: Annotated[
        float | None,
        typer.Option(
            help="Seconds of spikes in each input window. Default: ridge "
            "tries 0.02, 0.06, 0.1, 0.2, 0.3, 0.5 and 1 and keeps the best "
            "on the valid split; GRU/MLP train 0.5 s and the window a "
            "ridge probe prefers, and keep the better on it."
        ),
    ] = None,
    lags: Annotated[
        str,
        typer.Option(
            help="Input window around each sample: 'causal' (spikes up to the sample), "
            "'centred' (half after it, as spiketok's offline model sees) or 'auto' "
            "(both; the valid split picks)."
        ),
    ] = "auto",
    split: ScoreSplit = "test",
    max_steps: Annotated[int, typer.Option(help="GRU/MLP: most training steps (early stopping on valid).")] = 2000,
    seed: Annotated[int, typer.Option(help="Seed for sampling and initialisation.")] = 0,
    json_path: JsonOut = None,
    overwrite: OverwriteJson = False,
) -> None:
    """Train a classical decoder per session on binned spikes and score it like `spiketok evaluate`.

    The input window (causal or centred, and its length), the ridge penalty and the GRU/MLP early-stopping
    step are chosen on the valid split, never the test split; the table and the JSON (`fit` per session)
    say what was chosen.
    """
    from ..evaluate.baselines import BaselineConfig, run_baseline_files
    from ..evaluate.report import write_json

    cfg = BaselineConfig(model=model, bin=bin, history=history, lags=lags, max_steps=max_steps, seed=seed)
    if json_path is not None:
        check_output(json_path, overwrite, data, flag="--json")
    results = run_baseline_files(data, cfg, target=target, split=split)
    console.print(results_table(results))
    if json_path:
        write_json(results, json_path)
        console.print(f"results: {json_path}")
