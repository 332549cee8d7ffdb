"""Two-process DDP on the CPU (gloo) through `spiketok train --devices 2`: disjoint windows, identical weights."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import spiketok
from spiketok.data.simulate import simulate_to_folder
from spiketok.data.storage import SessionDataset
from spiketok.train.config import load_config
from spiketok.train.data import train_sampler
from spiketok.train.run import DEBUG_ENV

SPIKETOK = str(Path(sys.executable).parent / "spiketok")
OVERRIDES = [
    "target=hand_velocity",
    "model.window=1",
    "max_steps=6",
    "steps_per_epoch=3",
    "batch_size=4",
    "warmup_steps=2",
    "eval_stride=1.0",
    "seed=11",
]


def test_two_process_ddp_draws_disjoint_windows_and_ends_with_identical_weights(tmp_path: Path) -> None:
    if not torch.distributed.is_available() or not torch.distributed.is_gloo_available():
        pytest.skip("torch.distributed with the gloo backend is not available in this torch build")
    data = tmp_path / "sim"
    simulate_to_folder(
        data, n_animals=2, sessions_per_animal=1, n_units=(16, 24), duration=40.0, seed=1, task="center_out"
    )
    debug, run = tmp_path / "debug", tmp_path / "run"
    env = {**os.environ, DEBUG_ENV: str(debug)}
    cmd = [
        SPIKETOK,
        "train",
        "--data",
        str(data),
        "--out",
        str(run),
        "--accelerator",
        "cpu",
        "--devices",
        "2",
        "--no-progress",
        *OVERRIDES,
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stdout.count("done: 6 steps") == 1, "only rank 0 prints the summary"
    assert "distributed_backend=gloo" in proc.stdout + proc.stderr

    # (a) each rank drew its own share of every epoch's batches, and no window twice
    sampler = train_sampler(SessionDataset(data), 1.0, load_config("tiny", OVERRIDES))
    drawn: dict[int, dict[tuple[int, int], list]] = {}
    for rank in (0, 1):
        lines = [json.loads(x) for x in (debug / f"windows_rank{rank}.jsonl").read_text().splitlines()]
        assert {x["world"] for x in lines} == {2} and {x["rank"] for x in lines} == {rank}
        drawn[rank] = {(x["epoch"], x["index"]): x["windows"] for x in lines}
        assert sorted(drawn[rank]) == [(e, i) for e in (0, 1) for i in range(3)]
        sampler._rank, sampler._world = rank, 2
        for (epoch, index), windows in drawn[rank].items():
            expected = sampler.epoch_batches(epoch)[index]
            assert windows == [[w.session, w.t0, w.t1] for w in expected]
    for epoch in (0, 1):
        per_rank = [{(s, t0) for (e, _), ws in drawn[r].items() if e == epoch for s, t0, _ in ws} for r in (0, 1)]
        assert len(per_rank[0]) == len(per_rank[1]) == 3 * 4
        assert not per_rank[0] & per_rank[1], f"ranks share windows in epoch {epoch}"

    # (b) both ranks end with the same weights, and they are the weights of the final checkpoint
    finals = [torch.load(debug / f"final_weights_rank{r}.pt", weights_only=False) for r in (0, 1)]
    assert finals[0]["world_size"] == 2 and finals[0]["global_step"] == finals[1]["global_step"] == 6
    w0, w1 = finals[0]["state_dict"], finals[1]["state_dict"]
    assert w0.keys() == w1.keys()
    for name in w0:
        assert torch.equal(w0[name], w1[name]), f"{name} differs between ranks"
    last = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)
    assert last["global_step"] == 6
    for name, value in w0.items():
        assert torch.equal(last["state_dict"][f"model.{name}"], value)

    # only rank 0 wrote files: one model.ckpt, logs with synced validation metrics
    model = spiketok.load(run / "model.ckpt")
    assert set(model.meta.targets) == {s.id for s in SessionDataset(data)}
    metrics = (run / "logs" / "metrics.csv").read_text()
    assert "val_loss" in metrics.splitlines()[0]
    assert not list(run.glob("**/*.tmp"))
