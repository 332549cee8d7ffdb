"""`spiketok pretrained`: the pretrained models shipped with spiketok and their model cards."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console

from . import app

console = Console()


@app.command()
def pretrained(
    name: Annotated[
        str | None, typer.Argument(help="A pretrained model's name: print its model card.", show_default=False)
    ] = None,
) -> None:
    """List the pretrained models shipped with spiketok, or print one's model card.

    Use one wherever a model file is expected: `spiketok adapt pretrained:primate-reaching new.h5 --out a.ckpt`.
    """
    from rich.markdown import Markdown

    from ..model.pretrained import ALIASES, PREFIX, available, model_card

    if name is None:
        for n in available():
            console.print(f"{PREFIX}{n}")
        for old, new in ALIASES.items():
            console.print(f"{PREFIX}{old} (now {PREFIX}{new})")
        return
    console.print(Markdown(model_card(name)))  # an unknown name: ModelFileError, one `error:` line
