"""Shared fixtures: real NWB files written with pynwb into tmp_path; the suite's closing line (count, time)."""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pytest

_STARTED: dict[str, float] = {}
OUTCOMES = ("passed", "failed", "error", "skipped", "xfailed", "xpassed")


def pytest_sessionstart(session: pytest.Session) -> None:
    _STARTED["time"] = time.monotonic()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, exitstatus: int, config: pytest.Config) -> None:
    """The suite's own count and time, the line the README points to: `spiketok: N tests in M minutes ...`."""
    if config.option.collectonly:
        return
    stats = terminalreporter.stats
    ran = {r.nodeid for key in OUTCOMES for r in stats.get(key, []) if hasattr(r, "nodeid")}
    deselected = len(stats.get("deselected", []))
    minutes = (time.monotonic() - _STARTED.get("time", time.monotonic())) / 60
    chosen = config.getoption("markexpr") or ""
    selection = f"marker selection -m '{chosen}'" if chosen else "no marker selection: every test"
    terminalreporter.write_line(
        f"spiketok: {len(ran)} tests in {minutes:.1f} minutes on {os.cpu_count()} CPUs "
        f"({selection}; {deselected} deselected)"
    )


def write_nwb(
    path: Path,
    units: dict[str, Any] | None,
    behavior: dict[str, dict[str, Any]] | None = None,
    trials: dict[str, Any] | None = None,
    unit_columns: dict[str, list] | None = None,
) -> Path:
    """Write an NWB file with pynwb.

    units: unit name -> spike times (names all digits: row ids, else a `unit_name` column); None: no units table.
    behavior: name -> {"data", and "timestamps" or "rate" (+ "starting_time"), "unit", "kind": "spatial"|"timeseries"};
      spatial series go in processing/behavior/Position, time series in processing/behavior.
    trials: {"start_time": [...], "stop_time": [...], other columns: [...]}.
    """
    from pynwb import NWBHDF5IO, NWBFile, TimeSeries
    from pynwb.behavior import Position, SpatialSeries
    from pynwb.file import Subject

    nwb = NWBFile(
        session_description="test session",
        identifier=path.stem,
        session_start_time=datetime(2024, 1, 1, tzinfo=timezone.utc),
        lab="test lab",
        subject=Subject(subject_id="rat1", species="Rattus norvegicus"),
    )
    if units is not None:
        named = not all(n.isdigit() for n in units)
        if named:
            nwb.add_unit_column("unit_name", "unit name")
        for col in unit_columns or {}:
            nwb.add_unit_column(col, col)
        for i, (name, times) in enumerate(units.items()):
            extra = {col: vals[i] for col, vals in (unit_columns or {}).items()}
            if named:
                extra["unit_name"] = name
            nwb.add_unit(spike_times=np.asarray(times, dtype=float), id=int(name) if not named else i, **extra)
    if behavior:
        module = nwb.create_processing_module("behavior", "behaviour")
        position = None
        for name, spec in behavior.items():
            timing = (
                {"timestamps": np.asarray(spec["timestamps"], dtype=float)}
                if "timestamps" in spec
                else {"rate": float(spec["rate"]), "starting_time": float(spec.get("starting_time", 0.0))}
            )
            data = np.asarray(spec["data"], dtype=float)
            if spec.get("kind", "spatial") == "spatial":
                if position is None:
                    position = Position(name="Position")
                    module.add(position)
                position.add_spatial_series(
                    SpatialSeries(
                        name=name, data=data, unit=spec.get("unit", "px"), reference_frame="origin top-left", **timing
                    )
                )
            else:
                module.add(TimeSeries(name=name, data=data, unit=spec.get("unit", "cm/s"), **timing))
    if trials:
        for col in trials:
            if col not in ("start_time", "stop_time"):
                nwb.add_trial_column(col, col)
        for i in range(len(trials["start_time"])):
            nwb.add_trial(
                **{
                    col: (float(vals[i]) if col in ("start_time", "stop_time") else vals[i])
                    for col, vals in trials.items()
                }
            )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with NWBHDF5IO(str(path), "w") as io:
            io.write(nwb)
    return path


@pytest.fixture
def make_nwb(tmp_path: Path) -> Callable[..., Path]:
    """Factory: make_nwb(name="x.nwb", units=..., behavior=..., trials=..., unit_columns=...) -> path in tmp_path."""

    def make(name: str = "session.nwb", **kwargs: Any) -> Path:
        return write_nwb(tmp_path / name, **kwargs)

    return make


def whole_span_copy(stored, path: Path) -> Path:
    """A copy of a prepared session whose only split, `test`, is the whole recording, as `predict` decodes it.

    `evaluate` on the copy then decodes exactly the windows `predict` decodes, so their numbers must agree.
    """
    from spiketok.data.session import Behavior, Intervals, Session
    from spiketok.data.storage import write_session

    w = stored.slice(stored.start, stored.end + 1.0)
    whole = Intervals(np.array([stored.start]), np.array([stored.end + 1e-6]))
    beh = {
        n: Behavior(n, b.timestamps + stored.start, b.values, b.unit, b.dims, b.weights) for n, b in w.behavior.items()
    }
    copy = Session(
        stored.id,
        w.spike_times + stored.start,
        w.spike_units,
        stored.unit_names,
        behaviors=beh,
        splits={"test": whole},
        start=stored.start,
        end=stored.end,
    )
    return write_session(copy, path)


def write_track_1d(path: Path, seed: int = 0, duration: float = 40.0, n_units: int = 12, rate: float = 40.0) -> Path:
    """A rat-like linear track written with pynwb: place cells and a 1-D position `TimeSeries` of shape (N,).

    Position sweeps 10-90 cm (a sine of period 8 s); unit u fires 2 Hz plus a 30 Hz Gaussian place field
    (12 cm wide) at a random centre, so position is decodable from the spikes.
    """
    rng = np.random.default_rng(seed)
    ts = np.arange(0.0, duration, 1.0 / rate)
    pos = 50.0 + 40.0 * np.sin(2 * np.pi * ts / 8.0)
    grid = np.arange(0.0, duration, 0.002)
    pos_fine = np.interp(grid, ts, pos)
    units = {}
    for u in range(n_units):
        lam = 2.0 + 30.0 * np.exp(-(((pos_fine - rng.uniform(10, 90)) / 12.0) ** 2))
        units[str(u)] = grid[rng.random(len(grid)) < lam * 0.002]
    return write_nwb(path, units, {"pos": {"data": pos, "rate": rate, "kind": "timeseries", "unit": "cm"}})


@pytest.fixture(scope="session")
def track_1d(tmp_path_factory) -> dict[str, Path]:
    """Two 1-D linear-track NWB files (40 s, 12 units; different place fields): `a` and `b`."""
    root = tmp_path_factory.mktemp("track_1d")
    return {"a": write_track_1d(root / "track_a.nwb", seed=0), "b": write_track_1d(root / "track_b.nwb", seed=1)}


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for a module: tiny models train faster so, far faster when other jobs share the cores,
    and real-time decoding runs so (several threads on a busy machine make small ops crawl)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def cli(*args) -> tuple[int, str]:
    """Run `spiketok ARGS` in this process: exit code and everything printed; a bug (not a user error) raises."""
    from typer.testing import CliRunner

    from spiketok.cli import _register, app

    _register()
    result = CliRunner().invoke(app, [str(a) for a in args])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.output


def with_scrambled_test_split(src: Path, dst: Path) -> Path:
    """A copy of a session whose test split holds other spikes (same count) and shifted behaviour: whatever reads
    only the train and valid splits gives the same results on it as on the original."""
    from dataclasses import replace

    from spiketok.data.session import Behavior
    from spiketok.data.storage import read_session, write_session

    s = read_session(next(src.glob("*.h5")))
    rng = np.random.default_rng(0)
    test = s.splits["test"]
    assert test.duration > 3
    spikes, units = s.spike_times.copy(), s.spike_units.copy()
    inside = test.contains(spikes)
    spikes[inside] = rng.uniform(test.start[0], test.end[0], inside.sum())  # all in the first test interval
    units[inside] = rng.integers(0, s.n_units, inside.sum())
    order = np.argsort(spikes, kind="stable")
    b = s.behavior("hand_velocity")
    values = b.values.copy()
    in_test = test.contains(b.timestamps)
    values[in_test] += 20 * values.std(0)  # decoded as before, scored against targets far off
    behavior = dict(s.behaviors, hand_velocity=Behavior(b.name, b.timestamps, values, b.unit, b.dims, b.weights))
    write_session(
        replace(s, spike_times=spikes[order], spike_units=units[order], behaviors=behavior), dst / f"{s.id}.h5"
    )
    return dst


def rewrite_meta(src: Path, dst: Path, change) -> Path:
    """A copy of a model file with its JSON metadata changed by `change(meta)` (weights untouched)."""
    import json
    import struct

    raw = src.read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8 : 8 + n])
    meta = json.loads(header["__metadata__"]["spiketok"])
    change(meta)
    header["__metadata__"]["spiketok"] = json.dumps(meta)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    dst.write_bytes(struct.pack("<Q", len(text)) + text + raw[8 + n :])
    return dst
