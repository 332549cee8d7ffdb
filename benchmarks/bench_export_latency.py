"""Single-window latency of an exported model: onnxruntime and TorchScript against the PyTorch model.

Builds a model of each size with random weights (latency does not depend on the weights) over N_UNITS units,
exports it (`spiketok.model.export.export_model`), and times one streaming-shaped window (the spikes of
`window` seconds at RATE Hz per unit, START/END tokens per unit, one output query at the window end):
the PyTorch model (tokenize + collate + forward + denormalise), the exported graph in onnxruntime, and in
TorchScript, one thread each. Prints a table and the max abs difference of each against PyTorch; records the
load average before and after (provenance.Load). Writes no docs: a timing belongs on an idle machine.

    python benchmarks/bench_export_latency.py [--sizes tiny,poyo-1.3M] [--repeats 300] [--threads 1] [--json PATH]
        [--quick]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from provenance import Load, cpu_flags

N_UNITS, RATE = 200, 20.0


def build(size: str, n_units: int):
    """A model of `size` with random weights over one session of n_units units, normalisation set."""
    from spiketok.model import POYO, model_config

    cfg = model_config(size)
    cfg.dropout = 0.0
    model = POYO(cfg, [f"bench/{u}" for u in range(n_units)], ["bench"], {"hand_velocity": 2}).eval()
    model.normalizer.set("bench", "hand_velocity", [0.0, 0.0], [10.0, 10.0])
    return model


def window_inputs(model, n_units: int, rate: float, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """One tokenized window [0, window) of Poisson spikes at `rate` Hz per unit, output at the window end."""
    from spiketok.data.session import Window
    from spiketok.tokenize import SpikeTokenizer

    c = model.config
    n = rng.poisson(rate * n_units * c.window)
    w = Window(0.0, c.window, np.sort(rng.uniform(0, c.window, n)), rng.integers(0, n_units, n), {})
    tok = SpikeTokenizer(c.num_latents_per_step, c.latent_step, c.window)
    return tok(w, np.arange(n_units), 0, 0, None, output_times=np.array([c.window]))


def timed(fn, repeats: int) -> tuple[np.ndarray, np.ndarray]:
    """Wall and CPU milliseconds of `repeats` calls (after 10 untimed warm-up calls)."""
    for _ in range(10):
        fn()
    wall, cpu = [], []
    for _ in range(repeats):
        w0, c0 = time.perf_counter(), time.process_time()
        fn()
        wall.append(1e3 * (time.perf_counter() - w0))
        cpu.append(1e3 * (time.process_time() - c0))
    return np.array(wall), np.array(cpu)


def bench(size: str, repeats: int, threads: int, n_units: int, rate: float, tmp: Path) -> list[dict]:
    from spiketok.model.export import export_model
    from spiketok.stream.exported import ExportedModel
    from spiketok.tokenize import collate
    from spiketok.train.module import denormalise

    model = build(size, n_units)
    sample = window_inputs(model, n_units, rate, np.random.default_rng(0))
    batch = collate([sample])

    def pytorch() -> np.ndarray:
        with torch.inference_mode():
            return denormalise(model, model(batch), batch.output_sessions, batch.output_tasks)[0].numpy()

    feeds = (sample.input_units, sample.input_times, sample.input_types, sample.output_times, 0)
    rows, ref = [], pytorch()
    runners = {"pytorch": pytorch}
    for fmt, name in (("onnx", "m.onnx"), ("torchscript", "m.pt")):
        export_model(model, tmp / f"{size}-{name}", fmt)
        exported = ExportedModel(tmp / f"{size}-{name}", threads=threads)
        runners[f"{fmt} ({'onnxruntime' if fmt == 'onnx' else 'libtorch'})"] = \
            (lambda e=exported: e.run(*feeds[:4], feeds[4]))
    for label, fn in runners.items():
        wall, cpu = timed(fn, repeats)
        rows.append({"size": size, "runtime": label, "n_tokens": int(len(sample.input_units)),
                     "wall_median_ms": float(np.median(wall)), "wall_p99_ms": float(np.percentile(wall, 99)),
                     "cpu_median_ms": float(np.median(cpu)), "max_abs_diff": float(np.abs(fn() - ref).max())})
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="tiny,poyo-1.3M")
    ap.add_argument("--repeats", type=int, default=300)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--units", type=int, default=N_UNITS)
    ap.add_argument("--rate", type=float, default=RATE)
    ap.add_argument("--json", type=Path, default=None, help="write the rows and the machine's state here")
    ap.add_argument("--quick", action="store_true", help="a smoke run: tiny only, 20 units, 5 repeats")
    args = ap.parse_args(argv)
    sizes = ["tiny"] if args.quick else args.sizes.split(",")
    repeats, units = (5, 20) if args.quick else (args.repeats, args.units)
    torch.set_num_threads(args.threads)
    load = Load()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in sizes:
            rows += bench(size, repeats, args.threads, units, args.rate, Path(tmp))
    load.stop()
    print(f"{'size':<10} {'runtime':<26} {'tokens':>6} {'wall med':>9} {'wall p99':>9} {'cpu med':>8} {'max |diff|':>10}")
    for r in rows:
        print(f"{r['size']:<10} {r['runtime']:<26} {r['n_tokens']:>6} {r['wall_median_ms']:>8.2f}ms "
              f"{r['wall_p99_ms']:>8.2f}ms {r['cpu_median_ms']:>6.2f}ms {r['max_abs_diff']:>10.1e}")
    print(load.sentence())
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "load": load.as_dict(), "threads": args.threads,
                                         "units": units, "rate": args.rate, "cpu_flags": cpu_flags()}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
