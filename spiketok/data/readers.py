"""Pick the reader by file content, not extension: NWB and temporaldata (brainsets) files are both HDF5."""

from __future__ import annotations

from pathlib import Path

import h5py

from .brainsets import read_temporaldata, temporaldata_signals
from .cleanup import ReadOptions
from .nwb import PrepareReport, behavior_signals, read_nwb
from .session import Session
from .storage import FORMAT


def file_kind(path: str | Path) -> str:
    """'prepared' (a spiketok session), 'temporaldata' (root `object` attribute 'Data'), 'nwb' (an
    `nwb_version` attribute), or 'other' (not HDF5, unreadable, or HDF5 of another kind)."""
    try:
        with h5py.File(path, "r") as f:
            attrs = f.attrs
            if attrs.get("format") == FORMAT:
                return "prepared"
            if "nwb_version" in attrs:
                return "nwb"
            obj = attrs.get("object")
            if (obj.decode() if isinstance(obj, bytes) else obj) == "Data":
                return "temporaldata"
    except (OSError, ValueError):
        pass
    return "other"


def read_recording(
    path: str | Path,
    options: ReadOptions = ReadOptions(),
) -> tuple[Session, PrepareReport]:
    """Read an NWB or a temporaldata (brainsets) file with the reader its content calls for.

    Anything that is not temporaldata goes to `read_nwb`, whose errors say what is wrong with the file.
    """
    reader = read_temporaldata if file_kind(path) == "temporaldata" else read_nwb
    return reader(path, options)


def recording_signals(path: str | Path) -> list[str]:
    """Every behaviour signal of an NWB or temporaldata file, as its reader's `behavior=` accepts them."""
    return temporaldata_signals(path) if file_kind(path) == "temporaldata" else behavior_signals(path)
