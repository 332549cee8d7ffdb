"""Checks the commands make on what they are given before any work: device counts, and the files they write.

Nothing is overwritten without consent: an existing output needs `--overwrite`; an output that is one of
the command's inputs, a model file or a recording is refused even then; outputs are written to temporary
files and renamed (spiketok.data.atomic), so a failed or killed command leaves no new or half-written file.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from .errors import fail


def _gpu(accelerator: str) -> bool:
    import torch

    return accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())


def parse_devices(devices: str, accelerator: str = "auto") -> int | str | list[int]:
    """`--devices` as Lightning takes it ('auto', -1, a count, or GPU indices "0,1"), refused when it is not one
    of those or asks for more than the machine has (CPU: os.cpu_count() processes; GPU: torch.cuda.device_count())."""
    import torch

    text = devices.strip()
    if text == "auto":
        return "auto"
    gpu = _gpu(accelerator)
    have = torch.cuda.device_count() if gpu else (os.cpu_count() or 1)
    kind = "GPU" if gpu else "CPU core"
    if gpu and have == 0:
        fail(f"--devices {devices} --accelerator {accelerator}: this machine has no GPU; use --accelerator cpu")
    if text == "-1" and gpu:
        return -1
    if text.isdigit():
        n = int(text)
        if n < 1:
            fail(f"--devices {devices}: give at least 1 device, or 'auto'")
        if n > have:
            fail(
                f"--devices {devices}: this machine has {have} {kind}{'s' if have != 1 else ''}; give at most {have} "
                "(one training process per device)"
            )
        return n
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if gpu and parts and "," in text and all(p.isdigit() for p in parts):
        bad = [int(p) for p in parts if int(p) >= have]
        if bad:
            fail(f"--devices {devices}: no GPU {bad[0]} on this machine (it has GPUs 0 to {have - 1})")
        return [int(p) for p in parts]
    fail(
        f"--devices {devices!r} is not allowed: give 'auto' or a count from 1 to {have}"
        + (", -1 (all), or GPU indices such as 0,1" if gpu else "")
    )


def _same(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def _is_model_file(path: Path) -> bool:
    """A spiketok model file or a torch checkpoint (a zip holding data.pkl, or a bare pickle); not an .npz."""
    import zipfile

    from ..model.file import FORMAT, _is_pickle

    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as z:
                return any(name.endswith("data.pkl") for name in z.namelist())
        with open(path, "rb") as f:
            head = f.read(9)
            if _is_pickle(head):
                return True
            n = int.from_bytes(head[:8], "little")
            if len(head) < 9 or head[8:9] != b"{" or n > 100_000_000:
                return False
            f.seek(8)
            header = json.loads(f.read(n))
    except (OSError, ValueError, zipfile.BadZipFile):
        return False
    return isinstance(header, dict) and (header.get("__metadata__") or {}).get("format") == FORMAT


def _is_recording(path: Path) -> bool:
    """A recording or prepared session (spikes in it), not a file of predictions spiketok wrote."""
    import h5py

    from ..data.readers import file_kind

    kind = file_kind(path)
    if kind in ("prepared", "temporaldata"):
        return True
    if kind != "nwb":
        return False
    try:
        with h5py.File(path, "r") as f:
            return "units" in f or "acquisition" in f and len(f["acquisition"]) > 0
    except (OSError, ValueError):
        return False


def check_output(
    out: Path, overwrite: bool, inputs: Sequence[Path] = (), flag: str = "--out", model_ok: bool = False
) -> None:
    """Refuse `out` when it is a folder, one of `inputs`, a recording, a model file (unless `model_ok`: a command
    whose output is a model file, replacing one with --overwrite), or exists without --overwrite."""
    for given in inputs:
        if _same(out, Path(given)) or Path(out).resolve() == Path(given).resolve():
            fail(f"{flag} {out}: this is one of the command's inputs ({given}); write to a new file")
    if out.is_dir():
        fail(f"{flag} {out} is a folder: give a file name")
    if not out.exists():
        return
    if _is_model_file(out) and not model_ok:
        fail(
            f"{flag} {out}: a model file is there; spiketok does not write over a model file, even with "
            "--overwrite (move or delete it yourself, or write to a new file)"
        )
    if _is_recording(out):
        fail(
            f"{flag} {out}: a recording is there; spiketok does not write over a recording, even with "
            "--overwrite (write to a new file)"
        )
    if not overwrite:
        fail(f"{flag} {out} exists; give --overwrite to replace it, or write to a new file")


@contextmanager
def staged_files(outs: Sequence[Path]) -> Iterator[Path]:
    """A temporary folder beside the first output: write every output there under its own name; on success
    each is renamed into place (the last one last, so a reader that waits for it finds the others), on any
    error or interrupt the folder is removed, so nothing is left half-written. A file system error (no space, no
    permission) is the user's to fix: one `error:` line that names the output."""
    parent = Path(outs[0]).parent
    stage = None
    try:
        parent.mkdir(parents=True, exist_ok=True)
        stage = Path(tempfile.mkdtemp(prefix=f".{Path(outs[0]).name}.", suffix=".tmp", dir=parent))
        yield stage
        for out in outs:
            os.replace(stage / Path(out).name, out)
    except OSError as e:
        fail(f"cannot write {outs[0]}: {e.strerror or e}")
    finally:
        if stage is not None:
            shutil.rmtree(stage, ignore_errors=True)
