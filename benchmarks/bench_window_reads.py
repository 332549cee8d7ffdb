"""Benchmark random one-second window reads (StoredSession.slice) from a 1-hour, 500-unit session file.

Builds the file once into a cache folder (in a child process, so this process's peak memory is the
reader's alone), times random windows on one core, and writes its section of docs/benchmarks.md.

    python benchmarks/bench_window_reads.py [--windows 5000] [--repeats 3] [--chunk N] [--rebuild] [--quick]
        [--doc PATH] [--allow-load] [--no-doc]

Refuses to write the doc when the machine was loaded (see provenance.py), unless --allow-load.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np
from docsection import add_doc_args, page_for, write_section
from provenance import Load, footer, refuse_if_loaded

from spiketok.data import storage
from spiketok.data.session import Behavior, Session
from spiketok.data.storage import StoredSession, write_session

DURATION = 3600.0
N_UNITS = 500
RATE = 20.0
START, END = "<!-- window-reads:start -->", "<!-- window-reads:end -->"


def build(path: Path, chunk: int, seed: int = 0, duration: float = DURATION, n_units: int = N_UNITS) -> None:
    """Write a session (1 hour, 500 units unless told): homogeneous Poisson units at 20 Hz, 2-D behaviour at 100 Hz."""
    storage.CHUNK = chunk
    rng = np.random.default_rng(seed)
    n = rng.poisson(n_units * RATE * duration)  # superposition of n_units Poisson processes
    times = np.sort(rng.uniform(0.0, duration, n))
    units = rng.integers(0, n_units, n, dtype=np.int32)
    ts = np.arange(int(duration * 100)) / 100.0
    vel = Behavior("hand_velocity", ts, rng.normal(0, 10, (len(ts), 2)), unit="cm/s", dims=["vx", "vy"])
    s = Session(
        f"bench_{duration:g}s_{n_units}u",
        times,
        units,
        [f"n{i:04d}" for i in range(n_units)],
        behaviors={"hand_velocity": vel},
        start=0.0,
        end=duration,
    )
    write_session(s, path)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def time_reads(path: Path, n_windows: int, repeats: int) -> list[float]:
    """Windows per second for `repeats` runs of `n_windows` random one-second slices."""
    s = StoredSession(path)
    s.slice(0.0, 1.0)  # open and warm the handle
    rates = []
    for r in range(repeats):
        t0s = np.random.default_rng(100 + r).uniform(s.start, s.end - 1.0, n_windows)
        tic = time.perf_counter()
        for t0 in t0s:
            s.slice(t0, t0 + 1.0)
        rates.append(n_windows / (time.perf_counter() - tic))
    s.close()
    return rates


def write_doc(section: str, doc: Path) -> None:
    """Replace this benchmark's section of the benchmark page."""
    write_section(section, START, END, doc)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--windows", type=int, default=5000)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--chunk", type=int, default=storage.CHUNK, help="rows per HDF5 chunk of the built file")
    p.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "spiketok-bench")
    p.add_argument("--rebuild", action="store_true")
    p.add_argument("--minutes", type=float, default=DURATION / 60, help="length of the built session")
    p.add_argument("--units", type=int, default=N_UNITS, help="units of the built session")
    p.add_argument("--quick", action="store_true", help="a 5-minute, 50-unit file, 200 windows x 2 (a smoke run)")
    p.add_argument("--no-doc", action="store_true", help="print only; leave the page alone")
    add_doc_args(p, timing=True)
    args = p.parse_args()
    if args.quick:
        args.minutes, args.units, args.windows, args.repeats = 5.0, 50, 200, 2
    args.doc = page_for(args.doc, args.quick)  # a smoke run writes benchmarks/out/quick.md
    duration, n_units = 60.0 * args.minutes, args.units
    load = Load()
    if not args.no_doc and not refuse_if_loaded(load, args.allow_load, args.doc):
        sys.exit(3)
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})  # one core
    path = args.cache / f"session_{duration:g}s_{n_units}u_chunk{args.chunk}.h5"
    if args.rebuild or not path.exists():
        args.cache.mkdir(parents=True, exist_ok=True)
        print(f"building {path} ...", flush=True)
        proc = mp.get_context("spawn").Process(target=build, args=(path, args.chunk, 0, duration, n_units))
        proc.start()
        proc.join()
        if proc.exitcode:
            sys.exit(f"building the benchmark file failed (exit {proc.exitcode})")
    rss_before = peak_rss_mb()
    rates = time_reads(path, args.windows, args.repeats)
    median = float(np.median(rates))
    rss = peak_rss_mb()
    size_mb = path.stat().st_size / 2**20
    with h5py.File(path, "r") as f:
        n_spikes, chunks = f["spikes/times"].shape[0], f["spikes/times"].chunks
    print(
        f"{median:,.0f} windows/s (runs: {', '.join(f'{r:,.0f}' for r in rates)}); "
        f"peak RSS {rss:.0f} MB (before reads {rss_before:.0f} MB); file {size_mb:.0f} MB, chunks {chunks}"
    )
    load.stop()
    if args.no_doc:
        print(load.sentence())
        return
    if not refuse_if_loaded(load, args.allow_load, args.doc):
        sys.exit(3)
    runs = ", ".join(f"{r:,.0f}" for r in rates)
    layout = f"`CHUNK={storage.CHUNK}` rows (file built with chunks {chunks}), `INDEX_STEP={storage.INDEX_STEP}` s"
    layout += f", HDF5 {h5py.version.hdf5_version}"
    section = f"""
## Window reads (storage)

Random one-second windows read with `StoredSession.slice` (spikes and a 100 Hz, 2-D behaviour signal)
from one prepared session file, on one core.

| | |
|---|---|
| **windows/s (median of {args.repeats} x {args.windows:,})** | **{median:,.0f}** (runs: {runs}) |
| peak resident memory of the reader | {rss:.0f} MB (file: {size_mb:.0f} MB) |
| session | {duration / 60:g} min, {n_units} units at ~{RATE:.0f} Hz, {n_spikes:,} spikes, `hand_velocity` at 100 Hz |
| storage | {layout} |

The reader keeps only the time index in memory and reads the rows of each window; the file stays on disk
(after the first pass it is in the OS page cache, so this measures HDF5 and Python overhead, not the disk).

{footer(load, ("h5py", "numpy", "spiketok"), "1 used")}
"""
    write_doc(section, args.doc)
    print(f"wrote the 'Window reads (storage)' section of {args.doc}")


if __name__ == "__main__":
    main()
