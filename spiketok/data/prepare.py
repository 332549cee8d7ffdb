"""What `spiketok prepare` runs: recordings read and cleaned (data.readers), each written as a prepared session.

A file with bad data is left out with its DataError's message and the others go on; a prepared session is never
written over another recording's session (same id) without consent, nor over its own input file.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .cleanup import ReadOptions
from .nwb import PrepareReport
from .readers import file_kind, read_recording
from .session import DataError, Session
from .storage import StoredSession, write_session


@dataclass
class Prepared:
    """One recording prepared: the source file, its session, what cleaning dropped, and the file written."""

    source: Path
    session: Session
    report: PrepareReport
    written: Path


@dataclass
class PrepareOutcome:
    """The files prepared, and one message per file left out."""

    done: list[Prepared] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def other_source(target: Path, session: Session) -> str | None:
    """What `target` holds when writing `session` there would replace something else: a file that is not a prepared
    session, or a session prepared from another source file (None: nothing there, or the same source again)."""
    if not target.exists():
        return None
    if file_kind(target) != "prepared":
        return "a file that is not a prepared session"
    try:
        old = StoredSession(target)
        same = (
            all(old.meta.get(k) == session.meta.get(k) for k in ("source_file", "identifier"))
            and list(old.unit_names) == list(session.unit_names)
            and old.n_spikes == len(session.spike_times)
        )
    except (DataError, OSError, KeyError):  # whatever a damaged file raises: it is replaced only with consent
        return "a damaged prepared session"
    if same:  # the same recording again (e.g. other --behavior): replaced as asked
        return None
    source = old.meta.get("source_file")
    return f"a session prepared from another recording{f' (also named {source})' if source else ''}"


def prepare_one(path: Path, out: Path, written: dict[str, Path], overwrite: bool, options: ReadOptions) -> Prepared:
    """Read, clean and write one recording into `out` (DataError when it cannot be); `written`: session id ->
    source of the sessions this run wrote, updated."""
    session, report = read_recording(path, options)
    if session.id in written:
        raise DataError(
            f"{path}: session id {session.id!r} was already written from {written[session.id]}; rename one of the files"
        )
    target = out / f"{session.id}.h5"
    if target.exists() and target.resolve() == path.resolve():
        raise DataError(f"{path}: writing {target} would replace this input file; choose another --out")
    other = other_source(target, session)
    if other and not overwrite:
        raise DataError(f"{path}: {target} already holds {other}; give --overwrite to replace it, or another --out")
    target = write_session(session, target)
    written[session.id] = path
    return Prepared(path, session, report, target)


def prepare_files(
    files: Sequence[Path],
    out: Path,
    overwrite: bool = False,
    stop_on_error: bool = False,
    on_file: Callable[[Path, int], None] | None = None,
    options: ReadOptions = ReadOptions(),
) -> PrepareOutcome:
    """Prepare each recording in `files` into the folder `out`; `options` go to read_recording. A file with bad
    data is an error message in the outcome and the others go on (`stop_on_error`: its DataError is raised);
    `on_file(path, i)` is called as the i-th file starts."""
    outcome, written = PrepareOutcome(), {}
    for i, path in enumerate(files):
        if on_file is not None:
            on_file(Path(path), i)
        try:
            outcome.done.append(prepare_one(Path(path), Path(out), written, overwrite, options))
        except DataError as e:
            if stop_on_error:
                raise
            outcome.errors.append(str(e))
    return outcome
