"""The options several commands share, declared once so their flags and help read the same everywhere."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

DataPaths = Annotated[list[Path], typer.Option("--data", "-d", help="Prepared session files or folders of them.")]
ScoreSplit = Annotated[str, typer.Option(help="Split to score: test, valid or train.")]
JsonOut = Annotated[Path | None, typer.Option("--json", help="Write the results as JSON here.")]
OverwriteJson = Annotated[bool, typer.Option("--overwrite", help="Replace an existing --json file.")]
DecodeTarget = Annotated[
    str | None,
    typer.Option(help="Behaviour to decode (default: the model's task the session has, as it was trained)."),
]
OverwriteOutput = Annotated[
    bool,
    typer.Option(
        "--overwrite", help="Replace existing output files (never a model file given as input, or a recording)."
    ),
]
