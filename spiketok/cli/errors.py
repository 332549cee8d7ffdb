"""One error policy for the CLI: a user error ends in one `error: ...` line and exit status 2.

`spiketok --debug ...` or SPIKETOK_DEBUG=1 shows the traceback instead. Any other exception is a bug
and keeps its traceback.
"""

from __future__ import annotations

import os
from typing import NoReturn

import typer
from typer.core import TyperGroup

from ..data.session import DataError
from ..model.embeddings import UnknownIdError
from ..model.file import ModelFileError
from ..schema import ConfigError

EXIT_USER_ERROR = 2  # as click's own usage errors
DEBUG_ENV = "SPIKETOK_DEBUG"


class UserError(Exception):
    """Wrong input from the user; the message says what is wrong and what to do."""


# library errors that describe the user's input (files, data, ids), not a bug
USER_ERRORS: tuple[type[BaseException], ...] = (UserError, DataError, ModelFileError, UnknownIdError, ConfigError)


def fail(message: str) -> NoReturn:
    """Stop the command with a user error (one `error:` line, exit status 2)."""
    raise UserError(message)


def debug_enabled(ctx: typer.Context | None = None) -> bool:
    """--debug was given, or SPIKETOK_DEBUG is set to something other than '' or '0'."""
    if ctx is not None and ctx.meta.get("spiketok.debug"):
        return True
    return os.environ.get(DEBUG_ENV, "") not in ("", "0")


def one_line(exc: BaseException) -> str:
    text = str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)
    return " ".join(text.split()) or type(exc).__name__


class ErrorPolicyGroup(TyperGroup):
    """The `spiketok` command group: turns user errors raised by any subcommand into `error: ...`, exit 2."""

    def invoke(self, ctx: typer.Context):
        try:
            return super().invoke(ctx)
        except USER_ERRORS as e:
            if debug_enabled(ctx):
                raise
            typer.echo(f"error: {one_line(e)}", err=True)
            raise typer.Exit(EXIT_USER_ERROR) from None
