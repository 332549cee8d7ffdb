"""Kill a real `spiketok train`, resume it, stop it with SIGTERM mid-epoch, resume to the end.

Checks that nothing is lost or repeated: the final step is max_steps, the learning-rate schedule
continued, every checkpoint loads, and every batch drawn after a resume is the batch an
uninterrupted run draws at that (epoch, position).
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import spiketok
from spiketok.data.simulate import simulate_to_folder
from spiketok.data.storage import SessionDataset
from spiketok.train.config import load_config
from spiketok.train.data import train_sampler
from spiketok.train.module import warmup_cosine
from spiketok.train.run import DEBUG_ENV

SPIKETOK = str(Path(sys.executable).parent / "spiketok")
STEPS, PER_EPOCH, WARMUP, LR = 18, 6, 3, 0.002
OVERRIDES = [
    "target=hand_velocity",
    "model.window=1",
    f"max_steps={STEPS}",
    f"steps_per_epoch={PER_EPOCH}",
    "batch_size=4",
    f"warmup_steps={WARMUP}",
    f"lr={LR}",
    "eval_stride=1.0",
    "seed=4",
]
WAIT = 300.0  # seconds to wait for a subprocess event before failing


def _start(data: Path, run: Path, debug: Path, resume: bool) -> subprocess.Popen:
    cmd = [
        SPIKETOK,
        "train",
        "--data",
        str(data),
        "--out",
        str(run),
        "--accelerator",
        "cpu",
        "--no-progress",
        *OVERRIDES,
    ] + (["--resume"] if resume else [])
    env = {**os.environ, DEBUG_ENV: str(debug)}
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _wait_for(proc: subprocess.Popen, ready) -> None:
    """Poll until ready() is true; fail with the process output if it exits first or takes too long."""
    deadline = time.monotonic() + WAIT
    while not ready():
        if proc.poll() is not None:
            pytest.fail(
                f"spiketok train exited ({proc.returncode}) before the test could interrupt it:\n"
                + proc.stdout.read()[-3000:]
            )
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("spiketok train made no progress in time:\n" + proc.communicate()[0][-3000:])
        time.sleep(0.05)


def _records(debug: Path) -> list[dict]:
    path = debug / "windows_rank0.jsonl"
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


def _ckpt(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=False)


def _position(step: int) -> tuple[int, int]:
    return divmod(step, PER_EPOCH)


def test_kill_sigterm_and_resume_lose_and_repeat_nothing(tmp_path: Path) -> None:
    data, run = tmp_path / "sim", tmp_path / "run"
    simulate_to_folder(
        data, n_animals=2, sessions_per_animal=1, n_units=(16, 24), duration=40.0, seed=2, task="center_out"
    )
    last = run / "checkpoints" / "last.ckpt"

    # 1. SIGKILL once the first epoch's checkpoint is on disk: at most that epoch's later steps are lost
    proc = _start(data, run, tmp_path / "a", resume=False)
    _wait_for(proc, last.exists)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    step_a = _ckpt(last)["global_step"]
    assert step_a > 0 and step_a % PER_EPOCH == 0

    # 2. resume, then SIGTERM in the middle of an epoch: a checkpoint of that exact step is written
    proc = _start(data, run, tmp_path / "b", resume=True)
    _wait_for(proc, lambda: any(r["index"] >= 1 for r in _records(tmp_path / "b")))
    os.kill(proc.pid, signal.SIGTERM)
    out_b = proc.communicate(timeout=WAIT)[0]
    assert proc.returncode == 130, out_b[-3000:]
    assert "interrupted at step" in out_b and "--resume" in out_b
    state_b = _ckpt(last)
    step_b = state_b["global_step"]
    assert step_a < step_b < STEPS and step_b % PER_EPOCH != 0, f"SIGTERM checkpoint at step {step_b}"
    epoch_b, done_b = _position(step_b)
    assert state_b["loops"]["fit_loop"]["state_dict"]["combined_loader"] == [{"epoch": epoch_b, "batches_done": done_b}]
    assert state_b["lr_schedulers"][0]["last_epoch"] == step_b

    # 3. resume to the end
    proc = _start(data, run, tmp_path / "c", resume=True)
    out_c = proc.communicate(timeout=WAIT)[0]
    assert proc.returncode == 0, out_c[-3000:]
    assert f"done: {STEPS} steps" in out_c
    final = _ckpt(last)
    assert final["global_step"] == STEPS
    assert final["lr_schedulers"][0]["last_epoch"] == STEPS  # the schedule went on from where it stopped
    lr = final["optimizer_states"][0]["param_groups"][0]["lr"]
    assert lr == pytest.approx(LR * warmup_cosine(STEPS, WARMUP, STEPS))

    # every batch any run drew is the batch of an uninterrupted run at that (epoch, position) ...
    sampler = train_sampler(SessionDataset(data), 1.0, load_config("tiny", OVERRIDES))
    runs = {name: _records(tmp_path / name) for name in "abc"}
    for name, records in runs.items():
        for r in records:
            expected = sampler.epoch_batches(r["epoch"])[r["index"]]
            assert r["windows"] == [[w.session, w.t0, w.t1] for w in expected], (
                f"run {name} batch {r['epoch'], r['index']}"
            )
    # ... and each resumed run starts exactly at its checkpoint's position and goes on without gaps
    positions = {name: [(r["epoch"], r["index"]) for r in records] for name, records in runs.items()}
    assert positions["a"][:step_a] == [_position(s) for s in range(step_a)]
    assert positions["b"][: step_b - step_a] == [_position(s) for s in range(step_a, step_b)]
    assert positions["c"] == [_position(s) for s in range(step_b, STEPS)]

    # the CSV log holds every epoch's validation once, across the three processes
    with open(run / "logs" / "metrics.csv", newline="") as f:
        val_steps = [int(r["step"]) for r in csv.DictReader(f) if r["val_loss"]]
    # (Lightning logs validation one step later after a mid-epoch resume: step 12, not 11)
    assert len(val_steps) == STEPS // PER_EPOCH
    for epoch, step in enumerate(val_steps):
        assert PER_EPOCH * (epoch + 1) - 1 <= step <= PER_EPOCH * (epoch + 1)
    assert not (run / "logs" / "metrics-earlier.csv").exists()
    assert len(list((run / "tb").glob("events.out.tfevents.*"))) == 3  # one TensorBoard file per process

    # every checkpoint on disk is whole: the resume files load as Lightning checkpoints, model.ckpt as a model file
    from spiketok.train.checkpoint import model_from_checkpoint, read_pickled_checkpoint

    files = sorted(run.glob("checkpoints/*.ckpt"))
    assert last in files and (run / "model.ckpt").exists()
    for path in files:
        model, _ = model_from_checkpoint(read_pickled_checkpoint(path))
        assert set(model.meta.targets.values()) == {"hand_velocity"}
    assert set(spiketok.load(run / "model.ckpt").meta.targets.values()) == {"hand_velocity"}
    assert not list(run.glob("**/*.tmp"))
