"""The `spiketok` command: one Typer app, one module per group of subcommands."""

from __future__ import annotations

import typer

app = typer.Typer(
    name="spiketok",
    help="Decode behaviour from spiking neurons with POYO-style spike-token transformers.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)


def _register() -> None:
    # Each module adds its commands to `app` when imported.
    from . import data_commands  # noqa: F401
    from . import simulate_command  # noqa: F401
    from . import train_commands  # noqa: F401
    from . import baseline_command  # noqa: F401
    from . import stream_commands  # noqa: F401
    from . import adapt_commands  # noqa: F401
    from . import tune_command  # noqa: F401


def main() -> None:
    _register()
    app()
