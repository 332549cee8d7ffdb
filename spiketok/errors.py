"""spiketok's own error types: wrong input from the user (a file, a setting, data), never a bug.

Every error the library raises for bad input derives from SpiketokError, so the CLI shows those as one
`error: ...` line and any other exception as the bug it is. This module imports nothing, so the CLI can
catch the base class without loading torch.
"""

from __future__ import annotations


class SpiketokError(Exception):
    """Wrong input from the user; the message says what is wrong and what to do."""


class UserError(SpiketokError):
    """Wrong input that no more specific type names: an option, a combination of options."""


class RunFolderError(UserError):
    """A run folder that does not fit the request: nothing to resume there, or a run there already."""
