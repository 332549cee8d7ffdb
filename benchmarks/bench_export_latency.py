"""Runtimes and precision: latency of one window and of streaming decodes, and the accuracy each one costs.

Runtimes: the PyTorch model in float32, bfloat16 and int8 (`spiketok.model.precision.with_precision`), its
ONNX export in onnxruntime in float32 and int8 (`spiketok export [--int8]`), and its TorchScript export.

- Latency (both sizes, random weights: latency does not depend on them): one streaming-shaped window (the spikes
  of one window at RATE Hz for each of N_UNITS units, START/END tokens per unit, one output at the window end),
  tokenize + forward + denormalise, one thread; and a stream (`StreamingDecoder` for PyTorch,
  `ExportedStreamingDecoder` on the exports' streaming graphs): 20 ms packets of Poisson spikes, a decode after
  each, p99 of push + decode.
- Accuracy (real data): the shipped model `pretrained:m1-reaching` on the test trials of each macaque recording in
  ../shared/data (a 1 s window centred on each trial, outputs at the trial's behaviour samples): R² per runtime,
  and its change from PyTorch float32. Skipped, with a note, when the recordings are absent.

Writes its section of docs/benchmarks.md; refuses when the machine was loaded (provenance.py) unless --allow-load.

    python benchmarks/bench_export_latency.py [--sizes tiny,poyo-1.3M] [--repeats 300] [--stream-seconds 20]
        [--quick] [--no-doc] [--doc PATH] [--allow-load] [--json PATH]
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
from docsection import add_doc_args, page_for, write_section
from provenance import Load, cpu_flags, footer, refuse_if_loaded

from spiketok.data.readers import ReadOptions

START, END = "<!-- runtimes:start -->", "<!-- runtimes:end -->"
N_UNITS, RATE, EVERY, TARGET_MS = 200, 20.0, 0.02, 5.0
DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
MACAQUE = ["m1_chewie_2013-10-03", "m1_chewie_2013-12-19", "m1_mihi_2014-03-03"]
TORCH_PRECISIONS = ("float32", "bfloat16", "int8")
ONNX_PRECISIONS = ("float32", "int8")


def build(size: str, n_units: int):
    """A model of `size` with random weights over one session of n_units units, normalisation set."""
    from spiketok.model import POYO, model_config

    cfg = model_config(size)
    cfg.dropout = 0.0
    model = POYO(cfg, [f"bench/{u}" for u in range(n_units)], ["bench"], {"hand_velocity": 2}).eval()
    model.normalizer.set("bench", "hand_velocity", [0.0, 0.0], [10.0, 10.0])
    return model


class Runtimes:
    """One model in every runtime: run(window, unit_rows, session_row, output_times) -> (n_out, D) behaviour,
    and a streaming decoder of each."""

    def __init__(self, model, tmp: Path, threads: int):
        from spiketok.model.export import export_model
        from spiketok.model.precision import with_precision
        from spiketok.stream.exported import ExportedModel

        self.model = model
        self.torch = {p: with_precision(model, p) for p in TORCH_PRECISIONS}
        self.exported = {}
        for p in ONNX_PRECISIONS:
            export_model(model, tmp / f"m-{p}.onnx", "onnx", "hand_velocity", int8=p == "int8")
            self.exported[f"onnxruntime {p}"] = ExportedModel(tmp / f"m-{p}.onnx", threads=threads)
        export_model(model, tmp / "m.pt", "torchscript", "hand_velocity")
        self.exported["TorchScript float32"] = ExportedModel(tmp / "m.pt", threads=threads)

    @property
    def names(self) -> list[str]:
        return [f"PyTorch {p}" for p in TORCH_PRECISIONS] + list(self.exported)

    def runner(self, name: str, window, unit_rows: np.ndarray, session_row: int, output_times: np.ndarray):
        """A closure computing the behaviour (n_out, D) of one window in runtime `name`."""
        from spiketok.model.normalize import denormalise
        from spiketok.tokenize import collate

        if name.startswith("PyTorch"):
            model = self.torch[name.split()[1]]
            tok = self.model.tokenizer()

            def run() -> np.ndarray:
                batch = collate([tok(window, unit_rows, session_row, 0, None, output_times=output_times)])
                with torch.inference_mode():
                    return denormalise(model, model(batch), batch.output_sessions, batch.output_tasks)[0].numpy()

            return run
        exported = self.exported[name]

        def run_exported() -> np.ndarray:
            tokens = exported.tokenize(unit_rows[window.spike_units], window.spike_times, unit_rows)
            return exported.run(*tokens, output_times, session_row)

        return run_exported

    def streaming(self, name: str, session_id: str):
        from spiketok.stream import StreamingDecoder
        from spiketok.stream.exported import ExportedStreamingDecoder

        if name.startswith("PyTorch"):
            return StreamingDecoder(self.torch[name.split()[1]], session_id)
        return ExportedStreamingDecoder(self.exported[name], session_id)


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


def stream_latency(decoder, n_units: int, rate: float, seconds: float, seed: int = 0) -> np.ndarray:
    """Wall ms of push(packet) + decode after each 20 ms packet of Poisson spikes, after 1 s of warm-up."""
    rng = np.random.default_rng(seed)
    out = []
    for k in range(int(round((seconds + 1.0) / EVERY))):
        t0, t1 = k * EVERY, (k + 1) * EVERY
        n = rng.poisson(rate * n_units * EVERY)
        times, units = np.sort(rng.uniform(t0, t1, n)), rng.integers(0, n_units, n)
        w = time.perf_counter()
        decoder.push(units, times)
        decoder.decode(t1)
        if t1 > 1.0:
            out.append(1e3 * (time.perf_counter() - w))
    return np.array(out)


def latency(size: str, repeats: int, stream_s: float, threads: int, n_units: int, rate: float, tmp: Path) -> list[dict]:
    from spiketok.data.session import Window

    model = build(size, n_units)
    rt = Runtimes(model, tmp / size, threads)
    rng = np.random.default_rng(0)
    w_len = model.config.window
    n = rng.poisson(rate * n_units * w_len)
    window = Window(0.0, w_len, np.sort(rng.uniform(0, w_len, n)), rng.integers(0, n_units, n), {})
    rows_, out_t = np.arange(n_units), np.array([w_len])
    ref = rt.runner("PyTorch float32", window, rows_, 0, out_t)()
    rows = []
    for name in rt.names:
        fn = rt.runner(name, window, rows_, 0, out_t)
        wall, cpu = timed(fn, repeats)
        stream = stream_latency(rt.streaming(name, "bench"), n_units, rate, stream_s)
        rows.append(
            {
                "size": size,
                "runtime": name,
                "n_tokens": int(n + 2 * n_units),
                "wall_median_ms": float(np.median(wall)),
                "wall_p99_ms": float(np.percentile(wall, 99)),
                "cpu_median_ms": float(np.median(cpu)),
                "max_abs_diff": float(np.abs(fn() - ref).max()),
                "stream_median_ms": float(np.median(stream)),
                "stream_p99_ms": float(np.percentile(stream, 99)),
                "n_decodes": len(stream),
            }
        )
        print(
            f"{size:<10} {name:<22} window {rows[-1]['wall_median_ms']:6.2f} ms (p99 {rows[-1]['wall_p99_ms']:6.2f})  "
            f"stream p99 {rows[-1]['stream_p99_ms']:6.2f} ms",
            flush=True,
        )
    return rows


def accuracy(tmp: Path, threads: int, limit: int | None = None) -> dict:
    """R² of each runtime on the test trials of each macaque recording present, with the shipped model."""
    import spiketok
    from spiketok.data.nwb import read_nwb
    from spiketok.evaluate.metrics import r2_per_dim

    model = spiketok.load("pretrained:m1-reaching").eval()
    rt = Runtimes(model, tmp / "pretrained", threads)
    out: dict = {}
    for sid in MACAQUE:
        path = DATA / f"{sid}.nwb"
        if not path.exists():
            continue
        session, _ = read_nwb(path, ReadOptions(behavior=["hand_velocity"]))
        rows_ = model.unit_emb.lookup(session.unit_ids).numpy()
        srow = int(model.session_emb.lookup([session.id])[0])
        trials = np.asarray(model.meta.splits[session.id]["test"])[:limit]
        preds: dict[str, list] = {name: [] for name in rt.names}
        truth = []
        for a, b in trials:
            mid = 0.5 * (a + b)
            w = session.slice(
                mid - 0.5 * model.config.window, mid + 0.5 * model.config.window, behavior=["hand_velocity"]
            )
            beh = w.behavior["hand_velocity"]
            t_rel = beh.timestamps
            inside = (t_rel >= a - w.t0) & (t_rel <= b - w.t0) & np.isfinite(beh.values).all(1)
            if not inside.any():
                continue
            truth.append(beh.values[inside])
            for name in rt.names:
                preds[name].append(rt.runner(name, w, rows_, srow, t_rel[inside])())
        y = np.concatenate(truth)
        out[sid] = {name: float(np.mean(r2_per_dim(y, np.concatenate(p)))) for name, p in preds.items()}
        out[sid]["n_trials"], out[sid]["n_samples"] = len(truth), len(y)
        print(sid, {k: round(v, 4) for k, v in out[sid].items()}, flush=True)
    return out


def section(rows: list[dict], acc: dict, args, load: Load, flags: list[str]) -> str:
    from spiketok.model.precision import best_precision

    names = list(dict.fromkeys(r["runtime"] for r in rows))
    sizes = list(dict.fromkeys(r["size"] for r in rows))
    base = {s: next(r for r in rows if r["size"] == s and r["runtime"] == "PyTorch float32") for s in sizes}
    lines = [
        "| size | runtime | window: median | p99 | CPU median | vs PyTorch float32 | max abs diff | "
        f"stream p99 (decode every {1e3 * EVERY:.0f} ms) | under {TARGET_MS:g} ms |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        ratio = r["wall_median_ms"] / base[r["size"]]["wall_median_ms"]
        lines.append(
            f"| `{r['size']}` | {r['runtime']} | {r['wall_median_ms']:.2f} ms | {r['wall_p99_ms']:.2f} ms | "
            f"{r['cpu_median_ms']:.2f} ms | {ratio:.2f}x | {r['max_abs_diff']:.1e} | "
            f"**{r['stream_p99_ms']:.2f} ms** | {'yes' if r['stream_p99_ms'] < TARGET_MS else 'no'} |"
        )
    if acc:
        files = [f for f in acc]
        acc_lines = [
            "| runtime | " + " | ".join(f"{f}" for f in files) + " | mean R² | change from PyTorch float32 |",
            "|---|" + "---|" * (len(files) + 2),
        ]
        ref = np.mean([acc[f]["PyTorch float32"] for f in files])
        for name in names:
            m = np.mean([acc[f][name] for f in files])
            acc_lines.append(
                f"| {name} | " + " | ".join(f"{acc[f][name]:.4f}" for f in files) + f" | {m:.4f} | {m - ref:+.4f} |"
            )
        n_tr = ", ".join(f"{acc[f]['n_trials']} trials" for f in files)
        acc_text = (
            f"Accuracy on real recordings: the shipped `pretrained:m1-reaching` (`tiny`) decoding hand velocity on the "
            f"test trials of each file ({n_tr}; one {1:g} s window centred on each trial, outputs at its behaviour "
            "samples: not `spiketok evaluate`'s overlapping windows, so below the model card's figures; what "
            "matters here is the change between runtimes), R² averaged over x and y:\n\n" + "\n".join(acc_lines)
        )
    else:
        acc_text = f"Accuracy on real recordings: not measured (the recordings in {DATA.name}/ were absent)."
    best = {s: min((r for r in rows if r["size"] == s), key=lambda r: r["stream_p99_ms"]) for s in sizes}
    verdict = "; ".join(
        f"`{s}`: {'met' if best[s]['stream_p99_ms'] < TARGET_MS else 'missed'} "
        f"(lowest p99 {best[s]['stream_p99_ms']:.2f} ms, {best[s]['runtime']})"
        for s in sizes
    )
    has = [f for f in ("avx512_bf16", "amx_bf16", "avx512_vnni", "amx_int8") if f in flags]
    return f"""
## Runtimes and precision (PyTorch, onnxruntime, TorchScript; float32, bfloat16, int8)

One thread each. Window: one {1:g} s window of {N_UNITS} units at {RATE:g} Hz
(~{int(RATE * N_UNITS) + 2 * N_UNITS:,} tokens with the START/END tokens), tokenize + forward + denormalise,
{args.repeats} calls. Stream: the same spike rates in 20 ms
packets, `push` + `decode` after each for {args.stream_seconds:g} s
({rows[0]["n_decodes"]:,} decodes): `StreamingDecoder` for PyTorch, `ExportedStreamingDecoder` on the exports'
streaming graphs (each spike keyed once as it arrives, one
graph per decode; docs/export.md). Random weights (latency does not depend on them).
bfloat16 and int8 change only the matrix products of the linear layers (`spiketok.model.precision`; onnxruntime:
`spiketok export --int8`, weights only).

{chr(10).join(lines)}

- Streaming p99 under {TARGET_MS:g} ms: {verdict}.
- This CPU offers {", ".join(has) or "no bfloat16/int8 instructions"}; `with_precision(model, "auto")` picks
  **{best_precision()}** here.

{acc_text}

{footer(load, ("torch", "onnxruntime", "numpy", "spiketok"), "1 used")}
"""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="tiny,poyo-1.3M")
    ap.add_argument("--repeats", type=int, default=300)
    ap.add_argument("--stream-seconds", type=float, default=20.0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--units", type=int, default=N_UNITS)
    ap.add_argument("--rate", type=float, default=RATE)
    ap.add_argument("--json", type=Path, default=None, help="also write the rows and the machine's state here")
    ap.add_argument("--quick", action="store_true", help="a smoke run: tiny only, 20 repeats, 2 s streamed, 5 trials")
    ap.add_argument("--no-doc", action="store_true", help="print the section instead of writing the page")
    add_doc_args(ap, timing=True)
    args = ap.parse_args(argv)
    if args.quick:
        args.sizes, args.repeats, args.stream_seconds = "tiny", 20, 2.0
    args.doc = page_for(args.doc, args.quick)  # a smoke run writes benchmarks/out/quick.md
    torch.set_num_threads(args.threads)
    load = Load()
    if not args.no_doc and not refuse_if_loaded(load, args.allow_load, args.doc):
        return 3
    with tempfile.TemporaryDirectory() as tmp:
        rows = []
        for size in args.sizes.split(","):
            rows += latency(size, args.repeats, args.stream_seconds, args.threads, args.units, args.rate, Path(tmp))
        acc = accuracy(Path(tmp), args.threads, limit=5 if args.quick else None)
    load.stop()
    flags = cpu_flags()
    text = section(rows, acc, args, load, flags)
    print(text)
    if args.json:
        args.json.write_text(
            json.dumps({"rows": rows, "accuracy": acc, "load": load.as_dict(), "cpu_flags": flags}, indent=1)
        )
    if args.no_doc:
        return 0
    if not refuse_if_loaded(load, args.allow_load, args.doc):
        return 3
    write_section(text, START, END, args.doc)
    print(f"wrote {args.doc}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
