"""Seed ensembles: more models like a trained one (the same settings the recipe chose, other seeds).

Their predictions are averaged by `spiketok evaluate A.ckpt B.ckpt ...` (spiketok.evaluate.report.evaluate).
benchmarks/bench_ensemble.py measures what averaging 3 seeds adds on the five shared recordings.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from ..data.storage import SessionDataset
from ..schema import TrainConfig
from .run import TrainResult, train


def member_dir(out: Path, seed: int) -> Path:
    """Where the ensemble member with `seed` trains: OUT/ensemble/seed-S (the first member is OUT itself)."""
    return Path(out) / "ensemble" / f"seed-{seed}"


def train_members(
    data: SessionDataset, cfg: TrainConfig, first: TrainResult, n_models: int, **trainer_kw
) -> list[TrainResult]:
    """Train members 2..n_models after `first`: cfg with every setting first's recipe chose (no pilots again) and
    seed = cfg's seed + 1, + 2, ...; each in member_dir(first.run_dir, seed). Returns their results, in order.
    resume=True continues the members that have a last checkpoint and starts the others."""
    if n_models < 1:
        raise ValueError(f"an ensemble needs at least 1 model, got {n_models}")
    chosen = first.recipe.apply(cfg) if first.recipe else cfg
    resume = bool(trainer_kw.pop("resume", False))
    results = []
    for i in range(1, n_models):
        member = replace(chosen, seed=cfg.seed + i)
        folder = member_dir(first.run_dir, member.seed)
        # resuming an ensemble: members that started continue, the others start
        results.append(
            train(data, member, folder, resume=resume and (folder / "checkpoints" / "last.ckpt").exists(), **trainer_kw)
        )
    return results
