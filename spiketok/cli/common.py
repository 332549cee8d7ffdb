"""What the commands share: loading a model and prepared sessions, under the one error policy.

A missing, damaged or pickled model file raises ModelFileError and bad data DataError; both are user
errors (cli/errors.py), so each command gets one `error: ...` line without guarding the call itself.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..data.storage import SessionDataset
    from ..model.poyo import POYO


def load_model(path: str | Path) -> POYO:
    """A trained model (eval mode) from a spiketok model file; never unpickles."""
    from ..model.file import load_model_file

    return load_model_file(path)


def load_dataset(paths: list[Path]) -> SessionDataset:
    """Prepared session files, or folders of them."""
    from ..data.storage import SessionDataset

    return SessionDataset(paths)
