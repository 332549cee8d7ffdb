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
    from . import data_commands  # noqa: F401
    from . import simulate_command  # noqa: F401
    from . import train_commands  # noqa: F401
    from . import baseline_command  # noqa: F401
    from . import stream_commands  # noqa: F401
    from . import adapt_commands  # noqa: F401
    from . import tune_command  # noqa: F401
    from . import pretrained_command  # noqa: F401
    from . import export_command  # noqa: F401


def main() -> None:
    _register()
    app()
