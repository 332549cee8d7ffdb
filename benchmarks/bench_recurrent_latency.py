"""Latency of streaming with a recurrent model (model.backbone=recurrent): PyTorch and onnxruntime, one thread.

Simulates bench_streaming's session (200 units at about 20 Hz), builds possm-tiny and possm-1.3M with random
weights registered with it (latency does not depend on the weights), and replays 60 s of it: a 20 ms packet of
spikes then a decode every 20 ms (3,000 decodes), `torch.set_num_threads(1)`, onnxruntime on one thread. Prints
the latency per decode (push + decode: median, p99, max, in ms) and the load average; writes no docs.

    python benchmarks/bench_recurrent_latency.py [--sizes possm-tiny possm-1.3M] [--stream 60] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from bench_streaming import simulate

from spiketok.data.session import Intervals
from spiketok.data.storage import SessionDataset
from spiketok.model import model_config
from spiketok.model.export import export_model
from spiketok.model.family import new_model
from spiketok.stream import replay
from spiketok.stream.exported import ExportedModel
from spiketok.train.data import register_sessions


def latency(result) -> dict[str, float]:
    """Median, p90, p99 and max of push + decode (ms) of a replay, and the p99 of the decodes that ran a chunk
    (2 in 5 at 20 ms decodes and 50 ms chunks: the slower ones)."""
    lat = result.latency_ms
    chunked = np.sort(lat)[-int(0.4 * len(lat)) :]
    return {
        "median": float(np.median(lat)),
        "p90": float(np.percentile(lat, 90)),
        "p99": float(np.percentile(lat, 99)),
        "max": float(lat.max()),
        "chunk_median": float(np.median(chunked)),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", nargs="+", default=["possm-tiny", "possm-1.3M"])
    ap.add_argument("--stream", type=float, default=60.0, help="seconds of stream replayed")
    ap.add_argument("--out", type=Path, default=None, help="folder for the session and exports (default: temp)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    out = args.out or Path(tempfile.mkdtemp(prefix="bench_recurrent_"))
    out.mkdir(parents=True, exist_ok=True)
    path = out / "sim" / "bench_stream.h5"
    if not path.exists():
        path.parent.mkdir(exist_ok=True)
        simulate(path, duration=args.stream + 30.0)
    data = SessionDataset(path.parent)
    session = next(iter(data))
    rate = session.n_spikes / session.duration / session.n_units
    span = Intervals([session.start + 5.0], [session.start + 5.0 + args.stream])
    rows = []
    load_before = os.getloadavg()
    for size in args.sizes:
        torch.manual_seed(0)
        model = new_model(model_config({"size": size, "window": 1.0}))
        register_sessions(model, data, "hand_velocity")
        model.eval()
        onnx = export_model(model, out / f"{size}.onnx", "onnx")[0]
        for runtime, decoder_model in (("pytorch", model), ("onnxruntime", ExportedModel(onnx, threads=1))):
            replay(decoder_model, session, span, every=0.02, limit=2.0, progress=False)  # warm-up
            tic = time.perf_counter()
            result = replay(decoder_model, session, span, every=0.02, progress=False)
            row = {
                "size": size,
                "parameters": model.n_parameters(),
                "runtime": runtime,
                "decodes": len(result.times),
                "wall_s": round(time.perf_counter() - tic, 2),
                **{k: round(v, 4) for k, v in latency(result).items()},
            }
            rows.append(row)
            print(json.dumps(row))
    print(
        json.dumps(
            {
                "units": session.n_units,
                "rate_hz": round(rate, 1),
                "cpus": os.cpu_count(),
                "load_before": load_before,
                "load_after": os.getloadavg(),
            }
        )
    )


if __name__ == "__main__":
    main()
