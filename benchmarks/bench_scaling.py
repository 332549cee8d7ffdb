"""How spiketok's cost grows: with spikes per window, and with the number of sessions in the dataset.

(a) Spikes: forward + backward time of a batch of 32 one-second windows as spikes per window grow from
    1,000 to 50,000 (units at 20 Hz, so 50 to 2,500 units), and time and peak memory of one window
    up to 100,000 spikes. A line is fitted to time against tokens (R² of the fit, and the log-log slope:
    1 means linear).
(b) Sessions: time per training step (read windows, tokenize, collate, forward, backward, AdamW) as the
    dataset grows from 1 to 1,000 simulated sessions (10 units x 30 s each): the unit vocabulary grows,
    the per-step cost should not.

Writes PNG plots to img/ beside the page and its section of docs/benchmarks.md; refuses to when the
machine was loaded (see provenance.py), unless --allow-load. Verdicts are computed from the fits
(see `linearity`).

    python benchmarks/bench_scaling.py [--quick] [--part spikes|sessions|both] [--threads 1] [--no-doc]
        [--doc PATH] [--allow-load]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from docsection import add_doc_args, page_for, write_section
from provenance import Load, footer, refuse_if_loaded

from spiketok.data.session import Behavior, Window
from spiketok.model import POYO, model_config
from spiketok.tokenize import SpikeTokenizer, collate

START, END = "<!-- scaling:start -->", "<!-- scaling:end -->"
RATE = 20.0  # Hz per unit: spikes per window = 20 x units


def _rss_kb(field: str) -> int:
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _reset_peak() -> None:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # the peak resident size (VmHWM) restarts from the current size


def window_batch(model: POYO, n_windows: int, n_spikes: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """`n_windows` one-second windows of exactly `n_spikes` spikes from n_spikes/20 units, 100 Hz queries."""
    rng = np.random.default_rng(seed)
    n_units = max(1, n_spikes // int(RATE))
    c = model.config
    tok = SpikeTokenizer(c.num_latents_per_step, c.latent_step, c.window)
    ts = (np.arange(100) + 0.5) / 100
    samples = []
    for _ in range(n_windows):
        times = np.sort(rng.uniform(0, 1, n_spikes))
        w = Window(
            0.0, 1.0, times, rng.integers(0, n_units, n_spikes), {"v": Behavior("v", ts, rng.normal(size=(100, 2)))}
        )
        samples.append(tok(w, np.arange(n_units), 0, 0, "v"))
    return collate(samples)


def spiking_model(size: str, n_units: int) -> POYO:
    torch.manual_seed(0)
    return POYO(model_config(size), [f"s/u{i}" for i in range(n_units)], ["s"], {"v": 2})


def fwd_bwd(model: POYO, batch: dict[str, torch.Tensor]) -> None:
    pred = model(batch)
    loss = ((pred - batch.output_values) ** 2).mean()
    model.zero_grad(set_to_none=True)
    loss.backward()


def time_calls(fn, repeats: int) -> float:
    """Median seconds of `repeats` calls, after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def line_fit(x: np.ndarray, y: np.ndarray) -> dict:
    """Least-squares line y = a + b x (its R²) and the log-log slope."""
    b, a = np.polyfit(x, y, 1)
    r2 = 1 - np.sum((y - (a + b * x)) ** 2) / np.sum((y - y.mean()) ** 2)
    slope = float(np.polyfit(np.log(x), np.log(np.maximum(y, 1e-12)), 1)[0])
    return {"intercept": float(a), "per_unit": float(b), "r2": float(r2), "loglog_slope": slope}


SLOPE_LINEAR, R2_LINEAR = (0.85, 1.15), 0.99  # the rule for calling a cost "linear"
FLAT_RATIO = 1.25  # the rule for calling the step time flat in the number of sessions: last / first <= 1.25


def linearity(fit: dict, what: str = "the cost") -> str:
    """A verdict from a fit: linear when the log-log slope is in [0.85, 1.15] and the line fit's R² >= 0.99;
    otherwise sub-linear (slope below, fixed costs weigh) or super-linear (slope above)."""
    lo, hi = SLOPE_LINEAR
    s, r2 = fit["loglog_slope"], fit["r2"]
    rule = f"(rule: linear when the log-log slope is in [{lo}, {hi}] and R² >= {R2_LINEAR})"
    if lo <= s <= hi and r2 >= R2_LINEAR:
        return f"{what} is linear in spikes {rule}"
    if s < lo:
        return f"{what} grows less than linearly over these sizes: fixed costs weigh {rule}"
    if s > hi:
        return f"{what} grows faster than linearly {rule}"
    return f"{what} is not shown linear: the line fit's R² is below {R2_LINEAR} {rule}"


def spikes_point(size: str, kind: str, n: int, repeats: int) -> dict:
    """One point, meant for a fresh process (so that its peak memory is its own): a batch of 32
    windows (forward + backward) or one window (inference, then forward + backward)."""
    model = spiking_model(size, max(1, n // int(RATE)))
    batch = window_batch(model, 32 if kind == "batch" else 1, n)
    row: dict = {"spikes": n, "tokens": int(batch.input_mask.sum())}
    if kind == "single":
        model.eval()
        base = _rss_kb("VmRSS")
        _reset_peak()
        with torch.inference_mode():
            row["infer_s"] = time_calls(lambda: model(batch), repeats)
        row["infer_peak_added_mb"] = (_rss_kb("VmHWM") - base) / 1024
    model.train()
    base = _rss_kb("VmRSS")
    _reset_peak()
    row["train_s"] = time_calls(lambda: fwd_bwd(model, batch), repeats)
    row["train_peak_added_mb"] = (_rss_kb("VmHWM") - base) / 1024
    return row


def spikes_part(size: str, batch_points: list[int], single_points: list[int], repeats: int, threads: int) -> dict:
    """Batch fwd+bwd times, single-window fwd+bwd and inference times and peak memory, a process per point."""
    out: dict = {"batch": [], "single": []}
    for kind, points in (("batch", batch_points), ("single", single_points)):
        for n in points:
            cmd = [
                sys.executable,
                __file__,
                "--_point",
                kind,
                str(n),
                "--size",
                size,
                "--repeats",
                str(repeats),
                "--threads",
                str(threads),
            ]
            res = subprocess.run(cmd, capture_output=True, text=True)
            if res.returncode != 0:
                raise RuntimeError(f"point {kind} {n} failed:\n{res.stderr[-2000:]}")
            row = json.loads(res.stdout.strip().splitlines()[-1])
            out[kind].append(row)
            print(kind, row, flush=True)
    b, s = out["batch"], out["single"]
    out["fit_batch"] = line_fit(np.array([r["tokens"] for r in b], float), np.array([r["train_s"] for r in b]))
    for key in ("infer_s", "train_s", "train_peak_added_mb", "infer_peak_added_mb"):
        out[f"fit_single_{key}"] = line_fit(np.array([r["tokens"] for r in s], float), np.array([r[key] for r in s]))
    out["fit_batch_memory"] = line_fit(
        np.array([r["tokens"] for r in b], float), np.array([r["train_peak_added_mb"] for r in b])
    )
    return out


def make_sessions(folder: Path, n: int, seed: int = 0) -> None:
    """`n` tiny simulated sessions (10 units x 30 s), written as prepared files."""
    from spiketok.data.simulate import simulate_to_folder

    per_animal = min(n, 50)
    simulate_to_folder(
        folder,
        n_animals=int(np.ceil(n / per_animal)),
        sessions_per_animal=per_animal,
        n_units=10,
        duration=30.0,
        seed=seed,
    )
    for extra in sorted(folder.glob("*.h5"))[n:]:
        extra.unlink()


def sessions_part(size: str, counts: list[int], steps: int, work: Path) -> list[dict]:
    """Time per training step (data and model parts) for datasets of `counts` sessions."""
    from spiketok.data.storage import SessionDataset
    from spiketok.train.config import load_config
    from spiketok.train.data import WindowDataset, train_sampler
    from spiketok.train.module import normalised_targets, weighted_mse
    from spiketok.train.run import build_model

    folder = work / "sessions"
    have = len(list(folder.glob("*.h5"))) if folder.exists() else 0
    if have < max(counts):
        t = time.perf_counter()
        make_sessions(folder, max(counts))
        print(f"simulated {max(counts)} sessions in {time.perf_counter() - t:.0f} s", flush=True)
    files = sorted(folder.glob("*.h5"))
    rows = []
    for n in counts:
        cfg = load_config(
            size if size in ("tiny", "poyo-1.3M", "poyo-11.8M") else "tiny",
            [
                "target=hand_velocity",
                f"steps_per_epoch={steps + 3}",
                "unit_dropout=true",
                "model.window=1",
                "batch_size=32",
            ],
        )  # `auto` needs pilot runs; this times steps
        t = time.perf_counter()
        data = SessionDataset(files[:n])
        torch.manual_seed(0)
        model, targets = build_model(cfg, data)
        train_set = WindowDataset.for_model(model, data, targets, unit_dropout=True, min_units=cfg.min_units)
        sampler = train_sampler(data, model.config.window, cfg)
        setup = time.perf_counter() - t
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        model.train()
        data_s, model_s, tokens = [], [], []
        it = iter(sampler)
        for k in range(steps + 3):
            t0 = time.perf_counter()
            batch = collate([train_set[spec] for spec in next(it)])
            t1 = time.perf_counter()
            pred = model(batch)
            target, dim_mask = normalised_targets(model, batch)
            loss = weighted_mse(pred, target, batch.output_weights, dim_mask)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            t2 = time.perf_counter()
            if k >= 3:  # the first steps allocate optimizer state and open files
                data_s.append(t1 - t0)
                model_s.append(t2 - t1)
                tokens.append(int(batch.input_mask.sum()))
        row = {
            "sessions": n,
            "units": len(model.unit_emb),
            "setup_s": setup,
            "data_ms": 1e3 * float(np.median(data_s)),
            "model_ms": 1e3 * float(np.median(model_s)),
            "step_ms": 1e3 * float(np.median(np.array(data_s) + np.array(model_s))),
            "vocab_params": int(model.unit_emb.weight.numel()),
            "tokens_per_batch": float(np.mean(tokens)),
            "model_us_per_token": 1e6 * float(np.median(np.array(model_s) / np.array(tokens))),
        }
        rows.append(row)
        print("sessions", row, flush=True)
        for s in data:
            s.close()
    return rows


def plot(res: dict, img: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    img.mkdir(parents=True, exist_ok=True)
    paths = []
    if "spikes" in res:
        sp = res["spikes"]
        fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
        b = sp["batch"]
        x = np.array([r["tokens"] for r in b], float)
        f = sp["fit_batch"]
        axes[0].plot(x / 1e3, [r["train_s"] for r in b], "o", label="measured")
        xs = np.linspace(0, x.max(), 100)
        axes[0].plot(
            xs / 1e3, f["intercept"] + f["per_unit"] * xs, "-", color="0.5", label=f"line fit, R² {f['r2']:.3f}"
        )
        axes[0].set(
            xlabel="input tokens per batch (thousands)", ylabel="seconds", title="forward + backward, 32 windows"
        )
        axes[0].legend(fontsize=8)
        s = sp["single"]
        n = [r["spikes"] for r in s]
        axes[1].loglog(n, [1e3 * r["train_s"] for r in s], "o-", label="forward + backward")
        axes[1].loglog(n, [1e3 * r["infer_s"] for r in s], "s-", label="inference")
        axes[1].set(xlabel="spikes in the window", ylabel="ms", title="one window: time")
        axes[1].legend(fontsize=8)
        axes[2].loglog(n, [max(r["train_peak_added_mb"], 0.1) for r in s], "o-", label="forward + backward")
        axes[2].loglog(n, [max(r["infer_peak_added_mb"], 0.1) for r in s], "s-", label="inference")
        axes[2].set(xlabel="spikes in the window", ylabel="MB added at peak", title="one window: peak memory")
        axes[2].legend(fontsize=8)
        fig.tight_layout()
        path = img / "scaling_spikes.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    if "sessions" in res:
        rows = res["sessions"]
        fig, ax = plt.subplots(figsize=(5.5, 3.8))
        n = [r["sessions"] for r in rows]
        ax.semilogx(n, [r["step_ms"] for r in rows], "o-", label="whole step")
        ax.semilogx(n, [r["model_ms"] for r in rows], "s-", label="model (forward, backward, AdamW)")
        ax.semilogx(n, [r["data_ms"] for r in rows], "^-", label="data (read, tokenize, collate)")
        ax.set(
            xlabel="sessions in the dataset",
            ylabel="ms per training step",
            ylim=(0, None),
            title="time per training step, batch of 32",
        )
        ax.legend(fontsize=8)
        fig.tight_layout()
        path = img / "scaling_sessions.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths


def render(res: dict, load: Load) -> str:
    lines = ["## Scaling: spikes per window and sessions per dataset", ""]
    if "spikes" in res:
        sp = res["spikes"]
        f = sp["fit_batch"]
        lines += [
            f"**Spikes per window** (`{res['size']}` model, {res['threads']} torch thread(s); units fire at 20 Hz, so "
            "a window of N spikes has N/20 units and N + N/10 input tokens with the start/end tokens; 100 output "
            "queries). Forward + backward of a batch of 32 one-second windows:",
            "",
            "| spikes per window | tokens per batch | seconds | ms per 1,000 tokens | memory added at peak |",
            "|---|---|---|---|---|",
        ]
        for r in sp["batch"]:
            lines.append(
                f"| {r['spikes']:,} | {r['tokens']:,} | {r['train_s']:.3f} | {1e6 * r['train_s'] / r['tokens']:.2f} | "
                f"{r['train_peak_added_mb']:,.0f} MB |"
            )
        lines += [
            "",
            f"Line fit of time against tokens: R² = **{f['r2']:.4f}**, {1e6 * f['per_unit']:.2f} ms per "
            f"1,000 tokens plus {1e3 * f['intercept']:.0f} ms; log-log slope **{f['loglog_slope']:.2f}** "
            "(1 = linear). "
            + linearity(f, "Forward + backward time").capitalize()
            + "."
            + (
                " That is what the design predicts: every spike is one key/value token of the encoder's "
                "cross-attention to a fixed number of latents, and nothing else sees the spikes."
                if "is linear" in linearity(f)
                else ""
            ),
            "",
            "One window, up to 100,000 spikes:",
            "",
            "| spikes | tokens | inference | forward + backward | memory added (inference) | memory "
            "added (fwd + bwd) |",
            "|---|---|---|---|---|---|",
        ]
        for r in sp["single"]:
            lines.append(
                f"| {r['spikes']:,} | {r['tokens']:,} | {1e3 * r['infer_s']:.1f} ms | {1e3 * r['train_s']:.1f} ms | "
                f"{r['infer_peak_added_mb']:.1f} MB | {r['train_peak_added_mb']:.1f} MB |"
            )
        fi, ft, fm = sp["fit_single_infer_s"], sp["fit_single_train_s"], sp["fit_single_train_peak_added_mb"]
        lines += [
            "",
            f"Line fits against tokens: inference time R² {fi['r2']:.4f} (log-log slope {fi['loglog_slope']:.2f}), "
            f"forward + backward R² {ft['r2']:.4f} (slope {ft['loglog_slope']:.2f}), peak memory of forward + "
            f"backward R² {fm['r2']:.4f} ({1e3 * fm['per_unit']:.1f} KB per token; slope {fm['loglog_slope']:.2f}). "
            f"One window: inference {linearity(fi, 'time')}; forward + backward {linearity(ft, 'time')}.",
            "",
            "![time and memory against spikes per window](img/scaling_spikes.png)",
            "",
        ]
    if "sessions" in res:
        rows = res["sessions"]
        lines += [
            f"**Sessions per dataset** (`{res['size']}` model, batch of 32 random one-second windows from the "
            "training split of all sessions, unit dropout on; each session 10 simulated units x 30 s; median of "
            f"{res['session_steps']} steps after 3 warm-up steps):",
            "",
            "| sessions | units in vocabulary | ms per step | data | model | tokens per batch | model µs per token | "
            "setup (open, index, statistics) |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for r in rows:
            lines.append(
                f"| {r['sessions']:,} | {r['units']:,} | **{r['step_ms']:.0f}** | {r['data_ms']:.0f} | "
                f"{r['model_ms']:.0f} | {r['tokens_per_batch']:,.0f} | {r['model_us_per_token']:.1f} | "
                f"{r['setup_s']:.1f} s |"
            )
        first, last = rows[0], rows[-1]
        ratio = last["step_ms"] / first["step_ms"]
        flat = ratio <= FLAT_RATIO
        per_unit = last["vocab_params"] / max(last["units"], 1)
        setup = (
            line_fit(np.array([r["sessions"] for r in rows], float), np.array([r["setup_s"] for r in rows]))
            if len(rows) >= 3
            else None
        )
        lines += [
            "",
            f"From {first['sessions']} to {last['sessions']:,} sessions the step time goes from "
            f"{first['step_ms']:.0f} to {last['step_ms']:.0f} ms ({ratio:.2f}x) while the vocabulary grows "
            f"{last['units'] / first['units']:.0f}x: "
            + (f"**flat** (rule: within {FLAT_RATIO}x). " if flat else f"**it grows** (more than {FLAT_RATIO}x). ")
            + f"What grows with the vocabulary per step is the dense gradient and AdamW update of the "
            f"unit-embedding table ({per_unit:.0f} floats per unit)"
            + (
                f"; setup (reading each session's index and target statistics) happens once, with a log-log "
                f"slope of {setup['loglog_slope']:.2f} against sessions (1 = linear)."
                if setup
                else "."
            ),
            "",
            "![time per training step against sessions](img/scaling_sessions.png)",
            "",
        ]
    lines += [footer(load, ("torch", "numpy", "spiketok"), f"{res['threads']} torch thread(s)")]
    return "\n".join(lines)


def write_doc(section: str, doc: Path) -> None:
    """Replace this benchmark's section of the benchmark page."""
    write_section(section, START, END, doc)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", default="tiny", help="model size")
    ap.add_argument("--part", choices=("spikes", "sessions", "both"), default="both")
    ap.add_argument("--batch-spikes", default="1000,2000,5000,10000,20000,50000")
    ap.add_argument("--single-spikes", default="1000,2000,5000,10000,20000,50000,100000")
    ap.add_argument("--sessions", default="1,10,100,1000")
    ap.add_argument("--repeats", type=int, default=3, help="timed calls per point (median)")
    ap.add_argument("--session-steps", type=int, default=20)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: steadiest on a shared CPU)")
    ap.add_argument(
        "--work",
        type=Path,
        default=Path(tempfile.gettempdir()) / "spiketok-bench-scaling",
        help="folder for the simulated sessions (kept between runs)",
    )
    ap.add_argument("--quick", action="store_true", help="small points only (a smoke run)")
    ap.add_argument("--no-doc", action="store_true", help="print only; plots go to WORK instead of the page's img/")
    add_doc_args(ap, timing=True)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--_point", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args._point:
        print(json.dumps(spikes_point(args.size, args._point[0], int(args._point[1]), args.repeats)))
        return
    if args.quick:
        args.batch_spikes, args.single_spikes, args.sessions = "500,1000,2000", "500,1000,2000", "1,3,5"
        args.repeats, args.session_steps = 1, 2
    args.doc = page_for(args.doc, args.quick)  # a smoke run writes benchmarks/out/quick.md, its plots beside it
    load = Load()
    if not args.no_doc and not refuse_if_loaded(load, args.allow_load, args.doc):
        sys.exit(3)
    res: dict = {"size": args.size, "threads": args.threads, "session_steps": args.session_steps}
    ints = lambda s: [int(v) for v in s.split(",")]  # noqa: E731
    if args.part in ("spikes", "both"):
        res["spikes"] = spikes_part(
            args.size, ints(args.batch_spikes), ints(args.single_spikes), args.repeats, args.threads
        )
    if args.part in ("sessions", "both"):
        res["sessions"] = sessions_part(args.size, ints(args.sessions), args.session_steps, args.work)
    res["load"] = load.stop().as_dict()
    if args.json:
        args.json.write_text(json.dumps(res, indent=2))
    section = render(res, load)
    print(section)
    if args.no_doc:
        print("plots:", ", ".join(map(str, plot(res, args.work / "img"))))
        return
    if not refuse_if_loaded(load, args.allow_load, args.doc):
        sys.exit(3)
    print("plots:", ", ".join(map(str, plot(res, args.doc.parent / "img"))))
    write_doc(section, args.doc)
    print(f"wrote section scaling of {args.doc}")


if __name__ == "__main__":
    main()
