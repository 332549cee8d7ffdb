"""`spiketok simulate`: write simulated multi-session motor cortex recordings as prepared session files."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from . import app

TASKS = ("center_out", "random_target", "mixed")  # spiketok.data.simulate.TASKS (tests/test_cli_help.py checks)


@app.command("simulate")
def simulate(
    out: Path = typer.Option(..., "--out", help="Folder to write <session_id>.h5 files into."),
    animals: int = typer.Option(2, "--animals", min=1, help="Number of simulated animals."),
    sessions: int = typer.Option(3, "--sessions", min=1, help="Sessions per animal."),
    units: int = typer.Option(100, "--units", min=1, help="Units recorded per session."),
    duration: float = typer.Option(300.0, "--duration", min=10.0, help="Seconds per session."),
    task: str = typer.Option("mixed", "--task", help=f"One of: {', '.join(TASKS)}."),
    seed: int = typer.Option(0, "--seed", help="Random seed; same seed gives identical files."),
) -> None:
    """Simulate reaching sessions with cosine-tuned Poisson neurons and write them to OUT."""
    from ..data.simulate import simulate_sessions
    from ..data.storage import write_session

    console = Console()
    result = simulate_sessions(animals, sessions, units, duration, seed, task)  # DataError: one `error:` line
    table = Table(title=f"simulated sessions in {out}")
    for col in ("session", "units", "spikes", "duration (s)", "trials"):
        table.add_column(col, justify="left" if col == "session" else "right")
    for s in result:
        write_session(s, out / f"{s.id}.h5")
        table.add_row(s.id, str(s.n_units), f"{s.n_spikes:,}", f"{s.duration:.0f}", str(len(s.trials or [])))
    console.print(table)
