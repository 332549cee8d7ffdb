"""Which files of spiketok a process ran: benchmarks record them, so a figure goes stale only when code it ran
changes. Where $SPIKETOK_MODULE_LOG names a folder, each process writes its list there when it exits."""

from __future__ import annotations

import atexit
import os
import sys
from pathlib import Path

ENV = "SPIKETOK_MODULE_LOG"
PACKAGE = Path(__file__).resolve().parent


def loaded_files() -> list[str]:
    """The spiketok files this process has imported, as `spiketok/train/run.py` (sorted)."""
    found = set()
    for name, module in list(sys.modules.items()):
        path = getattr(module, "__file__", None)
        if (name == "spiketok" or name.startswith("spiketok.")) and path:
            try:
                found.add((Path("spiketok") / Path(path).resolve().relative_to(PACKAGE)).as_posix())
            except ValueError:  # a module of that name from elsewhere
                continue
    return sorted(found)


def _write(folder: str) -> None:
    try:
        Path(folder, f"{os.getpid()}.txt").write_text("\n".join(loaded_files()) + "\n")
    except OSError:  # the folder is gone: the benchmark that asked has finished
        pass


def record_at_exit() -> None:
    """When $SPIKETOK_MODULE_LOG is set, write this process's `loaded_files()` into it at exit."""
    folder = os.environ.get(ENV)
    if folder:
        atexit.register(_write, folder)
