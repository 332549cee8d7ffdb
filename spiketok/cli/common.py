"""What the commands share: loading a model, prepared sessions and recordings, under the one error policy.

A missing, damaged or pickled model file raises ModelFileError and bad data DataError; both are user
errors (cli/errors.py), so each command gets one `error: ...` line without guarding the call itself.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ..data.session import DataError
from .errors import fail

if TYPE_CHECKING:
    from ..data.storage import SessionDataset, StoredSession
    from ..model.poyo import POYO


def load_model(path: str | Path) -> POYO:
    """A trained model (eval mode) from a spiketok model file; never unpickles."""
    from ..model.file import load_model_file

    return load_model_file(path)


def load_dataset(paths: list[Path]) -> SessionDataset:
    """Prepared session files, or folders of them."""
    from ..data.storage import SessionDataset

    return SessionDataset(paths)


def load_session(path: Path) -> StoredSession:
    """One prepared session file (`spiketok prepare` writes them)."""
    from ..data.storage import StoredSession

    if not path.is_file():
        fail(f"{path}: no such file")
    try:
        return StoredSession(path)
    except (DataError, OSError) as e:
        fail(f"{path}: not a prepared session ({e}); run `spiketok prepare` on the NWB file first")
