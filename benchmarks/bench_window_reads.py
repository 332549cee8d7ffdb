"""Benchmark random one-second window reads (StoredSession.slice) from a 1-hour, 500-unit session file.

Builds the file once into a cache folder (in a child process, so this process's peak memory is the
reader's alone), times random windows on one core, and writes its section of docs/benchmarks.md.

    python benchmarks/bench_window_reads.py [--windows 5000] [--repeats 3] [--chunk N] [--rebuild]
"""

from __future__ import annotations

import argparse
import datetime as dt
import multiprocessing as mp
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np

from spiketok.data import storage
from spiketok.data.session import Behavior, Session
from spiketok.data.storage import StoredSession, write_session
from docsection import write_section

DURATION = 3600.0
N_UNITS = 500
RATE = 20.0
DOC = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"
START, END = "<!-- window-reads:start -->", "<!-- window-reads:end -->"


def build(path: Path, chunk: int, seed: int = 0) -> None:
    """Write a 1-hour session: 500 homogeneous Poisson units at 20 Hz, 2-D behaviour at 100 Hz."""
    storage.CHUNK = chunk
    rng = np.random.default_rng(seed)
    n = rng.poisson(N_UNITS * RATE * DURATION)  # superposition of N_UNITS Poisson processes
    times = np.sort(rng.uniform(0.0, DURATION, n))
    units = rng.integers(0, N_UNITS, n, dtype=np.int32)
    ts = np.arange(int(DURATION * 100)) / 100.0
    vel = Behavior("hand_velocity", ts, rng.normal(0, 10, (len(ts), 2)), unit="cm/s", dims=["vx", "vy"])
    s = Session("bench_1h_500u", times, units, [f"n{i:04d}" for i in range(N_UNITS)],
                behavior={"hand_velocity": vel}, start=0.0, end=DURATION)
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


def write_doc(section: str, doc: Path = DOC) -> None:
    """Replace this benchmark's section of docs/benchmarks.md."""
    write_section(section, START, END, doc)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--windows", type=int, default=5000)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--chunk", type=int, default=storage.CHUNK, help="rows per HDF5 chunk of the built file")
    p.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "spiketok-bench")
    p.add_argument("--rebuild", action="store_true")
    p.add_argument("--no-doc", action="store_true", help="print only; leave docs/benchmarks.md alone")
    args = p.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})  # one core
    path = args.cache / f"session_1h_{N_UNITS}u_chunk{args.chunk}.h5"
    if args.rebuild or not path.exists():
        args.cache.mkdir(parents=True, exist_ok=True)
        print(f"building {path} ...", flush=True)
        proc = mp.get_context("spawn").Process(target=build, args=(path, args.chunk))
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
    print(f"{median:,.0f} windows/s (runs: {', '.join(f'{r:,.0f}' for r in rates)}); "
          f"peak RSS {rss:.0f} MB (before reads {rss_before:.0f} MB); file {size_mb:.0f} MB, chunks {chunks}")
    if args.no_doc:
        return
    section = f"""
## Window reads (storage)

Random one-second windows read with `StoredSession.slice` (spikes and a 100 Hz, 2-D behaviour signal)
from one prepared session file, on one core.

| | |
|---|---|
| **windows/s (median of {args.repeats} x {args.windows:,})** | **{median:,.0f}** (runs: {', '.join(f'{r:,.0f}' for r in rates)}) |
| peak resident memory of the reader | {rss:.0f} MB (file: {size_mb:.0f} MB) |
| session | {DURATION / 3600:.0f} h, {N_UNITS} units at ~{RATE:.0f} Hz, {n_spikes:,} spikes, `hand_velocity` at 100 Hz |
| storage | `CHUNK={storage.CHUNK}` rows (file built with chunks {chunks}), `INDEX_STEP={storage.INDEX_STEP}` s |
| date | {dt.date.today().isoformat()} |
| machine | `{platform.platform()}`, {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs (1 used) |
| versions | Python {platform.python_version()}, h5py {h5py.__version__} (HDF5 {h5py.version.hdf5_version}), numpy {np.__version__} |
| command | `python benchmarks/bench_window_reads.py` |

The reader keeps only the time index in memory and reads the rows of each window; the file stays on disk
(after the first pass it is in the OS page cache, so this measures HDF5 and Python overhead, not the disk).
"""
    write_doc(section)
    print(f"wrote the 'Window reads (storage)' section of {DOC}")


if __name__ == "__main__":
    main()
