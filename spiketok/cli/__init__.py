"""The `spiketok` command: one Typer app, one module per group of subcommands."""

from __future__ import annotations

import typer

from .errors import DEBUG_ENV, ErrorPolicyGroup

app = typer.Typer(
    name="spiketok",
    cls=ErrorPolicyGroup,
    help="Decode behaviour from spiking neurons with POYO-style spike-token transformers.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)


@app.callback()
def _root(
    ctx: typer.Context,
    debug: bool = typer.Option(False, "--debug", help=f"Show the full traceback of an error (or set {DEBUG_ENV}=1)."),
) -> None:
    """Decode behaviour from spiking neurons with POYO-style spike-token transformers.

    A wrong input ends in one `error: ...` line and exit status 2.
    """
    ctx.meta["spiketok.debug"] = debug


def _register() -> None:
    # Each module adds its commands to `app` when imported.
    from . import (
        adapt_commands,  # noqa: F401
        baseline_command,  # noqa: F401
        data_commands,  # noqa: F401
        export_command,  # noqa: F401
        pretrained_command,  # noqa: F401
        simulate_command,  # noqa: F401
        stream_commands,  # noqa: F401
        train_commands,  # noqa: F401
        tune_command,  # noqa: F401
    )


def main() -> None:
    _register()
    app()
