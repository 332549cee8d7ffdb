"""Speed of spiketok's POYO against the reference implementation (PyPI `torch-brain`), on this CPU.

Both models get the same configuration (`tiny`, `poyo-1.3M`) and the same batches of one-second
windows (simulated: 100 units at ~20 Hz, behaviour queries at 100 Hz). Measured in one run,
alternating between the two so that other jobs on the machine slow both alike:

- training steps per second (forward, MSE loss, backward, AdamW step) on batches of `--batch-size`;
- single-window inference latency (median and p99 of `--latency-calls` forward passes);
- peak memory of one training step and of one inference, each in a fresh process;
- agreement: the reference's weights copied into spiketok's model give the same outputs;
- with `--profile`, the operators that take the time in one training step of each.

torch-brain must never become a dependency of spiketok, so this runs in its own virtual environment:

    python -m venv bench-venv                               # in the repository root (git ignores it)
    bench-venv/bin/pip install torch==2.13.0                # the CPU build (never a CUDA one)
    bench-venv/bin/pip install -e .
    bench-venv/bin/pip install --no-deps torch-brain==0.2.1
    bench-venv/bin/pip install pandas ray                   # imported by torch_brain.models; uv etc. are not needed
    bench-venv/bin/python benchmarks/bench_speed_reference.py [--quick] [--profile] [--no-doc] [--doc PATH] \
        [--allow-load]

Refuses to write the doc when the machine was loaded (see provenance.py), unless --allow-load.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from docsection import add_doc_args, page_for, write_section
from provenance import Load, footer, refuse_if_loaded, versions

from spiketok.data.session import Behavior, Window
from spiketok.model import POYO, model_config
from spiketok.model.config import ModelConfig
from spiketok.tokenize import SpikeTokenizer, collate

START, END = "<!-- speed-reference:start -->", "<!-- speed-reference:end -->"
SETUP = __doc__.split("own virtual environment:\n\n")[1].split("\n\n")[0]
N_UNITS, RATE, OUT_HZ = 100, 20.0, 100.0
PUBLISHED_DROPOUT = {"ffn_dropout": 0.2, "lin_dropout": 0.4, "atn_dropout": 0.2}  # torch_brain's POYO-1.3M config


def reference_poyo():
    try:
        from torch_brain.models import POYO as RefPOYO
    except ImportError as e:
        sys.exit(f"error: cannot import torch_brain ({e}). Set up the benchmark's own venv first:\n{SETUP}")
    return RefPOYO


# --- data ----------------------------------------------------------------------------------------


def make_windows(n: int, seed: int = 0, n_units: int = N_UNITS, rate: float = RATE) -> list[Window]:
    """`n` one-second windows of Poisson spikes (unit rates lognormal around `rate`) and 100 Hz behaviour."""
    rng = np.random.default_rng(seed)
    rates = rate * rng.lognormal(0.0, 0.5, n_units) / np.exp(0.125)
    windows = []
    for _ in range(n):
        counts = rng.poisson(rates)
        units = np.repeat(np.arange(n_units), counts)
        times = rng.uniform(0.0, 1.0, len(units))
        order = np.argsort(times)
        ts = (np.arange(int(OUT_HZ)) + 0.5) / OUT_HZ
        beh = Behavior("hand_velocity", ts, rng.normal(size=(len(ts), 2)))
        windows.append(Window(0.0, 1.0, times[order], units[order], {"hand_velocity": beh}))
    return windows


def spiketok_batch(windows: list[Window], config: ModelConfig) -> dict[str, torch.Tensor]:
    """The collated batch spiketok trains on (unit vocabulary rows 0..N_UNITS-1, session 0, task 0)."""
    tok = SpikeTokenizer(config.num_latents_per_step, config.latent_step, config.window)
    return collate([tok(w, np.arange(N_UNITS), 0, 0, "hand_velocity") for w in windows])


def reference_batch(b: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The same tokens in the reference's layout: vocabulary index 0 is its padding word, inputs padded to x8."""
    pad = (-b.input_units.shape[1]) % 8

    def p(x: torch.Tensor, value=0) -> torch.Tensor:
        return torch.nn.functional.pad(x, (0, pad), value=value)

    mask = p(b.input_mask, False)
    return {
        "input_unit_index": torch.where(mask, p(b.input_units) + 1, 0),
        "input_timestamps": p(b.input_times),
        "input_token_type": p(b.input_types),
        "input_mask": mask,
        "latent_index": b.latent_ids,
        "latent_timestamps": b.latent_times,
        "session_index": b.output_sessions[:, 0] + 1,
        "output_timestamps": b.output_times,
        "output_mask": b.output_mask,
    }


# --- models --------------------------------------------------------------------------------------


def build_models(
    size: str, reference_dropout: dict[str, float] | None = None, seed: int = 0
) -> tuple[POYO, torch.nn.Module]:
    """spiketok's POYO and the reference's at the same size; dropout matched to spiketok's unless given."""
    RefPOYO = reference_poyo()
    c = model_config(size)
    torch.manual_seed(seed)
    ours = POYO(c, [f"s0/u{i}" for i in range(N_UNITS)], ["s0"], {"hand_velocity": 2})
    drop = reference_dropout or {"ffn_dropout": c.dropout, "lin_dropout": 0.0, "atn_dropout": 0.0}
    ref = RefPOYO(
        sequence_length=float(c.window),
        latent_step=float(c.latent_step),
        num_latents_per_step=c.num_latents_per_step,
        dim_out=2,
        dim=c.dim,
        depth=c.depth,
        dim_head=c.head_dim,
        cross_heads=c.cross_heads,
        self_heads=c.self_heads,
        **drop,
    )
    ref.unit_emb.initialize_vocab([f"s0/u{i}" for i in range(N_UNITS)])
    ref.session_emb.initialize_vocab(["s0"])
    return ours, ref


def copy_reference_weights(ref: torch.nn.Module, ours: POYO) -> None:
    """Load the reference's weights (and its rotary frequencies) into spiketok's model, layer by layer.

    Where the two differ: the reference rotates only the first half of each head's feature pairs
    (its other frequencies are 0) with periods up to 2.06 s, and has no final LayerNorm; spiketok
    rotates all pairs (periods up to 4 s) and normalises the output features. For this check
    spiketok takes the reference's frequency table and its final LayerNorm is made an identity.
    """

    def lin(dst: torch.nn.Linear, src: torch.nn.Linear) -> None:
        dst.weight.copy_(src.weight)
        if dst.bias is not None:
            dst.bias.copy_(src.bias)

    def ln(dst: torch.nn.LayerNorm, src: torch.nn.LayerNorm) -> None:
        dst.weight.copy_(src.weight)
        dst.bias.copy_(src.bias)

    def ffn(
        dst, src_seq
    ) -> None:  # reference: Sequential(LayerNorm, FeedForward(net=[Linear, GEGLU, Dropout, Linear]))
        ln(dst.norm_ff, src_seq[0])
        lin(dst.ff.proj_in, src_seq[1].net[0])
        lin(dst.ff.proj_out, src_seq[1].net[3])

    def cross(dst, atn, ffn_seq) -> None:
        ln(dst.norm_q, atn.norm)
        ln(dst.norm_ctx, atn.norm_context)
        lin(dst.attn.to_q, atn.to_q)
        lin(dst.attn.to_kv, atn.to_kv)
        lin(dst.attn.to_out, atn.to_out)
        ffn(dst, ffn_seq)

    with torch.no_grad():
        ours.unit_emb.weight.copy_(ref.unit_emb.weight[1:])
        ours.session_emb.weight.copy_(ref.session_emb.weight[1:])
        ours.token_type_emb.weight.copy_(ref.token_type_emb.weight[: ours.token_type_emb.num_embeddings])
        ours.latent_emb.weight.copy_(ref.latent_emb.weight)
        cross(ours.encoder, ref.enc_atn, ref.enc_ffn)
        for block, (atn, ffn_seq) in zip(ours.processor, ref.proc_layers):
            ln(block.norm_attn, atn.norm)
            block.attn.to_qkv.weight.copy_(atn.to_qkv.weight)
            lin(block.attn.to_out, atn.to_out)
            ffn(block, ffn_seq)
        cross(ours.decoder, ref.dec_atn, ref.dec_ffn)
        lin(ours.readouts["hand_velocity"], ref.readout)
        ours.rotary.omega = ref.rotary_emb.omega.to(torch.float64).clone()
    ours.norm_out = torch.nn.Identity()


def agreement(size: str) -> dict:
    """Largest difference between the two models' outputs with the same weights, on a batch of 8 windows."""
    ours, ref = build_models(size)
    copy_reference_weights(ref, ours)
    ours.eval(), ref.eval()
    b = spiketok_batch(make_windows(8, seed=1), ours.config)
    with torch.no_grad():
        a = ours(b)
        r = ref(**reference_batch(b))
    mask = b.output_mask
    diff = (a - r)[mask].abs()
    return {
        "max_abs_diff": float(diff.max()),
        "output_std": float(r[mask].std()),
        "max_rel_diff": float(diff.max() / r[mask].abs().max()),
    }


# --- timing --------------------------------------------------------------------------------------


def step_fn(model: torch.nn.Module, kind: str, batch: dict, train: bool):
    """A closure running one training step (or one inference) of `model` on `batch`."""
    target, weights = batch["_target"], batch["_weights"]
    inputs = batch["_batch"] if kind == "spiketok" else {k: v for k, v in batch.items() if not k.startswith("_")}
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4) if train else None

    def forward() -> torch.Tensor:
        return model(inputs) if kind == "spiketok" else model(**inputs)

    def run() -> None:
        if train:
            pred = forward()
            loss = (((pred - target) ** 2).mean(-1) * weights).sum() / weights.sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        else:
            with torch.inference_mode():
                forward()

    model.train(train)
    return run


def batches(size: str, n: int, seed: int) -> tuple[dict, dict]:
    """spiketok (a Batch, under "_batch") and reference versions of one batch of `n` windows, with loss targets
    attached."""
    c = model_config(size)
    b = spiketok_batch(make_windows(n, seed=seed), c)
    extra = {"_target": b.output_values, "_weights": b.output_mask.float()}
    return {"_batch": b, **extra}, {**reference_batch(b), **extra}


def timed(run, n: int) -> tuple[float, float]:
    """Wall and CPU seconds of `n` calls."""
    w, c = time.perf_counter(), time.process_time()
    for _ in range(n):
        run()
    return time.perf_counter() - w, time.process_time() - c


def time_training(size: str, batch_size: int, steps: int, repeats: int, reference_dropout=None) -> dict:
    """Steps per second of both, measured in alternating blocks of `steps` steps, `repeats` times."""
    ours, ref = build_models(size, reference_dropout)
    b_ours, b_ref = batches(size, batch_size, seed=2)
    runs = {"spiketok": step_fn(ours, "spiketok", b_ours, True), "reference": step_fn(ref, "reference", b_ref, True)}
    for run in runs.values():
        timed(run, 2)  # warm-up
    wall = {k: [] for k in runs}
    cpu = {k: [] for k in runs}
    for _ in range(repeats):
        for k, run in runs.items():
            w, c = timed(run, steps)
            wall[k].append(steps / w)
            cpu[k].append(steps / c)
    med = {k: float(np.median(v)) for k, v in wall.items()}
    med_cpu = {k: float(np.median(v)) for k, v in cpu.items()}
    tokens = int(b_ours["_batch"].input_mask.sum())
    return {
        "steps_per_s": med,
        "steps_per_cpu_s": med_cpu,
        "ratio": med["spiketok"] / med["reference"],
        "ratio_cpu": med_cpu["spiketok"] / med_cpu["reference"],
        "runs": wall,
        "input_tokens": tokens,
    }


def time_latency(size: str, calls: int, block: int = 20) -> dict:
    """Single-window inference latency (ms) of both, alternating in blocks of `block` calls."""
    ours, ref = build_models(size)
    b_ours, b_ref = batches(size, 1, seed=3)
    runs = {"spiketok": step_fn(ours, "spiketok", b_ours, False), "reference": step_fn(ref, "reference", b_ref, False)}
    lat = {k: [] for k in runs}
    cpu = {k: [] for k in runs}
    for run in runs.values():
        timed(run, 5)
    for _ in range(max(1, calls // block)):
        for k, run in runs.items():
            for _ in range(block):
                t, c = time.perf_counter(), time.process_time()
                run()
                lat[k].append(1e3 * (time.perf_counter() - t))
                cpu[k].append(1e3 * (time.process_time() - c))
    out = {
        k: {
            "median_ms": float(np.median(v)),
            "p99_ms": float(np.percentile(v, 99)),
            "cpu_median_ms": float(np.median(cpu[k])),
            "cpu_p99_ms": float(np.percentile(cpu[k], 99)),
            "page_faults": page_faults(runs[k]),
        }
        for k, v in lat.items()
    }
    for key in ("median_ms", "p99_ms", "cpu_median_ms", "cpu_p99_ms"):
        out["ratio_" + key.removesuffix("_ms")] = out["spiketok"][key] / out["reference"][key]
    return out


def page_faults(run, calls: int = 50) -> float:
    """Minor page faults per call (fresh memory the kernel maps in: each costs microseconds in a VM)."""
    import resource

    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(calls):
        run()
    return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / calls


def shared_floor(size: str, calls: int = 100) -> dict:
    """CPU ms of the arithmetic both models share, on one window: the latent self-attention blocks and the encoder's
    attention kernel (scaled_dot_product_attention over the window's tokens), measured on spiketok's modules.
    Whatever else either model does, spiketok's latency cannot drop below this."""
    import torch.nn.functional as F

    ours, _ = build_models(size)
    ours.eval()
    b = batches(size, 1, seed=3)[0]["_batch"]
    c = ours.config
    n_lat, m = b.latent_ids.shape[1], b.input_units.shape[1]
    lat = torch.randn(1, n_lat, c.dim)
    rot = ours.processor[0].rotations(ours.rotary(b.latent_times))
    q = torch.randn(1, c.cross_heads, n_lat, c.head_dim)
    k, v = torch.randn(1, c.cross_heads, m, c.head_dim), torch.randn(1, c.cross_heads, m, c.head_dim)

    def blocks() -> None:
        x = lat
        for block in ours.processor:
            x = block(x, rot)

    out = {}
    with torch.inference_mode():
        for name, fn in (
            ("self_attention_blocks", blocks),
            ("encoder_attention", lambda: F.scaled_dot_product_attention(q, k, v)),
        ):
            timed(fn, 5)
            _, cpu = timed(fn, calls)
            out[name + "_ms"] = 1e3 * cpu / calls
    return out


def latency_fresh(size: str, calls: int, threads: int) -> dict:
    """time_latency in a fresh process that only runs inference (a deployed decoder), not after training steps."""
    cmd = [sys.executable, __file__, "--_latency", size, str(calls), "--threads", str(threads)]
    res = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def _rss_kb(field: str) -> int:
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def memory_child(kind: str, size: str, mode: str, batch_size: int) -> dict:
    """In a fresh process: resident memory added by one training step (or one single-window inference)."""
    ours, ref = build_models(size)
    model = ours if kind == "spiketok" else ref
    b_ours, b_ref = batches(size, batch_size if mode == "train" else 1, seed=2)
    run = step_fn(model, kind, b_ours if kind == "spiketok" else b_ref, mode == "train")
    base = _rss_kb("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the peak (VmHWM) to the current resident size
    run()
    return {"peak_mb": _rss_kb("VmHWM") / 1024, "added_mb": (_rss_kb("VmHWM") - base) / 1024}


def memory(size: str, batch_size: int, threads: int) -> dict:
    out: dict = {}
    for mode in ("train", "infer"):
        for kind in ("spiketok", "reference"):
            cmd = [sys.executable, __file__, "--_memory", kind, size, mode, str(batch_size), "--threads", str(threads)]
            res = subprocess.run(cmd, capture_output=True, text=True, check=True)
            out.setdefault(mode, {})[kind] = json.loads(res.stdout.strip().splitlines()[-1])
        m = out[mode]
        m["ratio"] = m["spiketok"]["added_mb"] / m["reference"]["added_mb"]
    return out


def profile(size: str, batch_size: int, top: int = 10) -> dict[str, list[tuple[str, float, float]]]:
    """Operators by self CPU time over 3 training steps of each: (name, ms per step, share of the step)."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    ours, ref = build_models(size)
    b_ours, b_ref = batches(size, batch_size, seed=2)
    out = {}
    for kind, model, b in (("spiketok", ours, b_ours), ("reference", ref, b_ref)):
        run = step_fn(model, kind, b, True)
        timed(run, 2)
        with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
            timed(run, 3)
        events = [e for e in prof.key_averages() if not e.key.startswith("ProfilerStep")]
        total = sum(e.self_cpu_time_total for e in events)
        rows = sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[:top]
        out[kind] = [(e.key, e.self_cpu_time_total / 3e3, e.self_cpu_time_total / total) for e in rows]
        out[kind + "_total_ms"] = total / 3e3
    return out


# --- report --------------------------------------------------------------------------------------

PACKAGES = ("torch", "torch-brain", "numpy", "spiketok")
TRAIN_GOAL, LATENCY_GOAL = 1.5, 0.5  # spiketok / reference: training steps/s at least 1.5x, latency at most 0.5x


def render(res: dict, args, load: Load) -> str:
    lines = ["## Speed against the reference implementation (torch-brain POYO)", ""]
    lines += [
        "spiketok's POYO and the reference `torch_brain.models.POYO` "
        f"({res['versions'].split('torch-brain ')[1].split(',')[0]}, "
        "PyPI) at the same sizes, on the same batches of one-second windows (100 units at ~20 Hz, so about "
        f"{res['tokens_per_window']:,} input tokens per window with the start/end tokens, and 100 output queries), on "
        f"this CPU with {args.threads} torch thread(s). Training: batches of {args.batch_size} windows, forward + "
        "MSE + backward + AdamW step. Latency: one window, inference mode. Ratios are spiketok / reference, "
        "both measured in the same run in alternating blocks; the CPU-time ratio (process time instead of "
        "wall time) is the one least disturbed by other jobs on the machine.",
        "",
    ]
    lines += [
        "| size | training steps/s: spiketok | reference | **ratio** | CPU-time ratio | goal |",
        "|---|---|---|---|---|---|",
    ]
    for size, r in res["sizes"].items():
        t = r["train"]
        ok = "met" if t["ratio"] >= TRAIN_GOAL else "**missed**"
        lines.append(
            f"| `{size}` | {t['steps_per_s']['spiketok']:.2f} | {t['steps_per_s']['reference']:.2f} | "
            f"**{t['ratio']:.2f}x** | {t['ratio_cpu']:.2f}x | >= {TRAIN_GOAL}x: {ok} |"
        )
    lines += [
        "",
        "Single-window inference latency, wall clock (what a caller waits, including time lost to other jobs) "
        "and CPU time of the calling process (the model's own cost), in two kinds of process: one that only "
        "runs inference (a deployed decoder: a fresh process, both models alternating) and this benchmark's own "
        "process after its training steps (whose large batches leave the memory allocator holding big free "
        "blocks, so a window's buffers need no fresh pages). Page faults: minor page faults per call.",
        "",
        "| size | process | median: spiketok | reference | **ratio** | p99 ratio | CPU median: spiketok | reference "
        "| **CPU ratio** | page faults: spiketok | reference | goal |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    verdicts = []
    for size, r in res["sizes"].items():
        for label, key in (("inference only", "latency_fresh"), ("after training", "latency")):
            if key not in r:
                continue
            lat = r[key]
            s_, r_ = lat["spiketok"], lat["reference"]
            met = lat["ratio_median"] <= LATENCY_GOAL and lat["ratio_cpu_median"] <= LATENCY_GOAL
            verdicts.append(met)
            ok = "met" if met else "**missed**"
            lines.append(
                f"| `{size}` | {label} | {s_['median_ms']:.2f} ms | {r_['median_ms']:.2f} ms | "
                f"**{lat['ratio_median']:.2f}x** | {lat['ratio_p99']:.2f}x | {s_['cpu_median_ms']:.2f} ms | "
                f"{r_['cpu_median_ms']:.2f} ms | **{lat['ratio_cpu_median']:.2f}x** | "
                f"{s_.get('page_faults', float('nan')):.0f} | {r_.get('page_faults', float('nan')):.0f} | "
                f"<= {LATENCY_GOAL}x (wall and CPU): {ok} |"
            )
    lines += [
        "",
        f"Latency goal (wall and CPU-time ratio both <= {LATENCY_GOAL}x) met in **{sum(verdicts)} of "
        f"{len(verdicts)}** rows.",
    ]
    floors = {size: r for size, r in res["sizes"].items() if "floor" in r}
    if floors:
        lines += [
            "",
            "**The arithmetic both share.** The latent self-attention blocks and the encoder's attention "
            "kernel are the same computation in both models (same sizes, same PyTorch kernels); timed alone on "
            "spiketok's modules (CPU time, one window), they set a floor under spiketok's latency whatever "
            "else is made faster:",
            "",
            "| size | self-attention blocks | encoder attention kernel | together | / reference, inference only "
            "| / reference, after training |",
            "|---|---|---|---|---|---|",
        ]
        for size, r in floors.items():
            f = r["floor"]
            both = f["self_attention_blocks_ms"] + f["encoder_attention_ms"]
            ratios = [both / r[k]["reference"]["cpu_median_ms"] for k in ("latency_fresh", "latency") if k in r]
            lines.append(
                f"| `{size}` | {f['self_attention_blocks_ms']:.2f} ms | {f['encoder_attention_ms']:.2f} ms | "
                f"{both:.2f} ms | " + " | ".join(f"{x:.2f}x" for x in ratios) + " |"
            )
    if any("train_published" in r for r in res["sizes"].values()):
        lines += [
            "",
            "With the reference's published dropout (ffn 0.2, linear 0.4, attention 0.2, as in its "
            "`poyo_1.3M` config; attention dropout sends its CPU attention to the slower math kernel):",
            "",
            "| size | spiketok steps/s | reference steps/s | ratio (CPU-time ratio) |",
            "|---|---|---|---|",
        ]
        for size, r in res["sizes"].items():
            if "train_published" in r:
                t = r["train_published"]
                lines.append(
                    f"| `{size}` | {t['steps_per_s']['spiketok']:.2f} | {t['steps_per_s']['reference']:.2f} | "
                    f"{t['ratio']:.2f}x ({t['ratio_cpu']:.2f}x) |"
                )
    if any("memory" in r for r in res["sizes"].values()):
        lines += [
            "",
            "Peak memory: resident memory added by the first training step (batch of "
            f"{args.batch_size}) or one single-window inference, each in a fresh process (peak, VmHWM, reset "
            "just before):",
            "",
            "| size | train: spiketok | reference | ratio | inference: spiketok | reference | ratio |",
            "|---|---|---|---|---|---|---|",
        ]
        for size, r in res["sizes"].items():
            if "memory" in r:
                m = r["memory"]
                lines.append(
                    f"| `{size}` | {m['train']['spiketok']['added_mb']:.0f} MB | "
                    f"{m['train']['reference']['added_mb']:.0f} MB | "
                    f"{m['train']['ratio']:.2f}x | {m['infer']['spiketok']['added_mb']:.1f} MB | "
                    f"{m['infer']['reference']['added_mb']:.1f} MB | {m['infer']['ratio']:.2f}x |"
                )
    lines += [
        "",
        "**Same weights, same outputs.** The two architectures are the same PerceiverIO (pre-norm rotary "
        "cross-attention encoder with rotated values, rotary self-attention blocks, rotary cross-attention "
        "decoder, GEGLU feed-forward blocks, per-unit and per-session embeddings, start/end tokens per unit). They "
        "differ in: (1) the reference rotates only half of each head's feature pairs (periods 0.1 ms to 2.06 s), "
        "spiketok all of them (0.1 ms to 4 s), and spiketok computes the angles in float64; (2) spiketok has a "
        "final LayerNorm before the readout; (3) spiketok has one readout per task, the reference one; (4) the "
        "reference reserves vocabulary row 0 for padding; (5) dropout: the reference drops out after each "
        "latent block (0.4) and, in its published config, on attention weights; spiketok only in the feed-forward "
        "blocks. With the reference's weights and rotary frequencies loaded into spiketok (and its final "
        "LayerNorm made an identity), outputs on the same batch agree:",
        "",
    ]
    lines += ["| size | largest difference | largest output | relative |", "|---|---|---|---|"]
    for size, r in res["sizes"].items():
        a = r["agreement"]
        lines.append(
            f"| `{size}` | {a['max_abs_diff']:.2e} | {a['max_abs_diff'] / a['max_rel_diff']:.3f} | "
            f"{a['max_rel_diff']:.1e} |"
        )
    if res.get("profile"):
        p = res["profile"]
        lines += [
            "",
            f"**Where a training step's time goes** (`{p['size']}`, batch of {args.batch_size}, torch.profiler, "
            f"self CPU time per step; spiketok {p['spiketok_total_ms']:.0f} ms, reference "
            f"{p['reference_total_ms']:.0f} ms in all):",
            "",
            "| spiketok operator | ms | share | reference operator | ms | share |",
            "|---|---|---|---|---|---|",
        ]
        for (a, am, ash), (b, bm, bsh) in zip(p["spiketok"], p["reference"]):
            lines.append(f"| `{a}` | {am:.1f} | {ash:.0%} | `{b}` | {bm:.1f} | {bsh:.0%} |")
    lines += [
        "",
        "**Why spiketok is faster.** Both spend their time on the spike tokens (the encoder's keys and "
        "values); the rest (latents, queries) is small. spiketok (1) embeds, normalises and projects each "
        "distinct (unit, token type) pair once and indexes the result per token, where the reference runs "
        "LayerNorm and the key/value projection on every token (here "
        f"{res['tokens_per_window'] / (3 * N_UNITS):.1f} tokens per pair: {res['tokens_per_window']:,} tokens, "
        f"{3 * N_UNITS} pairs); (2) rotates "
        "with one complex multiply per feature pair, where the reference builds rotated copies with "
        "`repeat_interleave`, `cat`, `stack` and `neg`"
        + (
            " (its top operators above: " + ", ".join(f"`{op[0]}`" for op in res["profile"]["reference"][:3]) + ")"
            if res.get("profile")
            else ""
        )
        + "; "
        "(3) builds its rotations once per forward from cos and sin (not `torch.polar`, not a float64 "
        "`remainder`, both unvectorised on CPU) and lays the latents' rotations out per head once for all "
        "self-attention blocks, whose queries, keys and values come from one fused projection; (4) has no "
        "attention dropout (on CPU that forces the slower math attention kernel) and passes no mask when "
        "nothing is padded; (5) in inference, rotates the tokens' keys and values in place, so a window "
        "allocates few fresh buffers: minor page faults per single-window call (the kernel mapping in fresh "
        "memory, microseconds each on this virtual machine) "
        + ", ".join(
            f"`{size}` {r['latency']['spiketok']['page_faults']:.0f} for spiketok and "
            f"{r['latency']['reference']['page_faults']:.0f} for the reference"
            for size, r in res["sizes"].items()
            if "page_faults" in r["latency"]["spiketok"]
        )
        + "; (6) in inference, keeps what a forward computes from the weights alone between calls (the keys and "
        "values of every (unit, token type) pair of the vocabulary, the latents' queries and rotations, the "
        "output queries: `spiketok.model.inference_cache`), rebuilt whenever a weight changes.",
    ]
    setup = " && ".join(line.split("#")[0].strip() for line in SETUP.splitlines()[:-1])
    lines += ["", footer(load, PACKAGES, f"{args.threads} torch thread(s)", [("setup", f"`{setup}`")])]
    return "\n".join(lines)


def write_doc(section: str, doc: Path) -> None:
    """Replace this benchmark's section of the benchmark page."""
    write_section(section, START, END, doc)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="tiny,poyo-1.3M")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--steps", type=int, default=5, help="training steps per timed block")
    ap.add_argument("--repeats", type=int, default=5, help="timed blocks per model")
    ap.add_argument("--latency-calls", type=int, default=200)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: steadiest on a shared CPU)")
    ap.add_argument(
        "--published-dropout", action="store_true", help="also time the reference with its published dropout"
    )
    ap.add_argument("--no-memory", action="store_true")
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--quick", action="store_true", help="fewer steps and calls (a smoke run)")
    ap.add_argument("--no-doc", action="store_true")
    add_doc_args(ap, timing=True)
    ap.add_argument("--json", type=Path, help="also write all figures here")
    ap.add_argument("--_memory", nargs=4, help=argparse.SUPPRESS)
    ap.add_argument("--_latency", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args._memory:
        kind, size, mode, bs = args._memory
        print(json.dumps(memory_child(kind, size, mode, int(bs))))
        return
    if args._latency:
        print(json.dumps(time_latency(args._latency[0], int(args._latency[1]))))
        return
    reference_poyo()
    if args.quick:
        args.steps, args.repeats, args.latency_calls = 2, 2, 40
    args.doc = page_for(args.doc, args.quick)  # a smoke run writes benchmarks/out/quick.md
    load = Load()
    if not args.no_doc and not refuse_if_loaded(load, args.allow_load, args.doc):
        sys.exit(3)
    res: dict = {"versions": versions(*PACKAGES), "sizes": {}}
    res["tokens_per_window"] = int(batches("tiny", 8, 1)[0]["_batch"].input_mask.sum() / 8)
    for size in args.sizes.split(","):
        r: dict = {"agreement": agreement(size)}
        print(size, "agreement", r["agreement"], flush=True)
        r["train"] = time_training(size, args.batch_size, args.steps, args.repeats)
        print(size, "train", {k: r["train"][k] for k in ("steps_per_s", "ratio", "ratio_cpu")}, flush=True)
        if args.published_dropout:
            r["train_published"] = time_training(size, args.batch_size, args.steps, args.repeats, PUBLISHED_DROPOUT)
            print(size, "train (published dropout)", r["train_published"]["ratio"], flush=True)
        r["latency"] = time_latency(size, args.latency_calls)
        print(size, "latency after training", r["latency"], flush=True)
        r["latency_fresh"] = latency_fresh(size, args.latency_calls, args.threads)
        print(size, "latency, inference-only process", r["latency_fresh"], flush=True)
        r["floor"] = shared_floor(size)
        print(size, "shared arithmetic", r["floor"], flush=True)
        if not args.no_memory:
            r["memory"] = memory(size, args.batch_size, args.threads)
            print(size, "memory", r["memory"], flush=True)
        res["sizes"][size] = r
    if args.profile:
        size = args.sizes.split(",")[-1]
        res["profile"] = {"size": size, **profile(size, args.batch_size)}
    res["load"] = load.stop().as_dict()
    if args.json:
        args.json.write_text(json.dumps(res, indent=2))
    section = render(res, args, load)
    print(section)
    if not args.no_doc and refuse_if_loaded(load, args.allow_load, args.doc):
        write_doc(section, args.doc)
        print(f"wrote section speed-reference of {args.doc}")
    elif not args.no_doc:
        sys.exit(3)


if __name__ == "__main__":
    main()
