"""One error policy for the CLI: a user error ends in one `error: ...` line and exit status 2.

A user error is one of spiketok's own error types (spiketok.errors.SpiketokError and what derives from it:
DataError, ConfigError, ModelFileError, ...). Any other exception, a ValueError from deep code included, is
a bug and keeps its traceback. `spiketok --debug ...` or SPIKETOK_DEBUG=1 shows the traceback of a user
error too. Nothing here imports torch, so `spiketok --help` stays fast.
"""

from __future__ import annotations

import os
from typing import NoReturn

import typer
from typer.core import TyperGroup

from ..errors import SpiketokError, UserError

EXIT_USER_ERROR = 2  # as click's own usage errors
EXIT_INTERRUPTED = 130  # as a shell reports Ctrl-C
DEBUG_ENV = "SPIKETOK_DEBUG"

__all__ = ["EXIT_USER_ERROR", "EXIT_INTERRUPTED", "DEBUG_ENV", "ErrorPolicyGroup", "UserError", "fail"]


def fail(message: str) -> NoReturn:
    """Stop the command with a user error (one `error:` line, exit status 2)."""
    raise UserError(message)


def debug_enabled(ctx: typer.Context | None = None) -> bool:
    """--debug was given, or SPIKETOK_DEBUG is set to something other than '' or '0'."""
    if ctx is not None and ctx.meta.get("spiketok.debug"):
        return True
    return os.environ.get(DEBUG_ENV, "") not in ("", "0")


def one_line(exc: BaseException) -> str:
    """The error's message on one line (a KeyError's without the quotes str() adds)."""
    text = str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)
    return " ".join(text.split()) or type(exc).__name__


class ErrorPolicyGroup(TyperGroup):
    """The `spiketok` command group: turns spiketok's errors raised by any subcommand into `error: ...`, exit 2."""

    def invoke(self, ctx: typer.Context):
        try:
            return super().invoke(ctx)
        except SpiketokError as e:
            if debug_enabled(ctx):
                raise
            typer.echo(f"error: {one_line(e)}", err=True)
            raise typer.Exit(EXIT_USER_ERROR) from None
