"""Transfer: train on new sessions starting from a pretrained multi-session model (`spiketok train --init`).

Each session the model does not know first gets its unit and session embeddings by unit
identification (every other weight frozen); then every weight is trained on all the given sessions by
`train` (the recipe's batch, steps and early stopping). The fine-tuning learning rate is a fraction of
cfg's lr (`init_lr_factor`); left at auto, a run at each of LR_FACTORS is made and the one with the best
validation R² (its starting model included) is kept. Measured (docs/benchmarks.md, transfer, which
counts the choices): on chewie 2013-10-03 with 50 trials (draw 0) a tenth of the lr never beat its start
(validation R² 0.696, test 0.726) and the full lr did (0.738, test 0.774).

Unit identification from a handful of trials depends on where the new embeddings start: on chewie
2013-10-03 with 10 trials, three random starts of the same draw scored test R² 0.219, 0.402 and 0.136.
So it runs `init_unit_id_restarts` times (starts drawn with seeds 0, 1, ...) and keeps, per session, the
start with the lowest validation loss (the stage's own early-stopping criterion).
"""

from __future__ import annotations

import copy
import json
import shutil
from dataclasses import replace
from pathlib import Path

from lightning.pytorch.utilities import rank_zero_only

from ..data.atomic import atomic_write
from ..data.storage import SessionDataset
from ..model.file import build_model, load_model_file, read_model_file, save_model, save_model_file
from ..model.poyo import POYO
from ..schema import AdaptConfig, ModelSettings, TrainConfig
from ..train.recipe import RecipeChoice, is_auto
from ..train.run import TrainResult, train
from .run import adapt

LR_FACTORS = (0.1, 1.0)  # fine-tuning lr / cfg lr compared when init_lr_factor is auto
CHOICE_FILE = "finetune.json"  # in the run folder: each factor's best validation R² and the one kept
UNIT_ID_RESTARTS = 3  # unit identification starts compared when init_unit_id_restarts is not set
UNIT_ID_MODEL = "unit-id.ckpt"  # in the run folder: the model after unit identification (a resumed run reads it)
UNIT_ID_RECORD = "unit-id.json"  # beside it: each new session's starts and the one kept


def run_name(factor: float) -> str:
    """The sub-folder of the run folder that holds the fine-tuning run at `factor` times the lr."""
    return f"lr-x{factor:g}"


def lr_factors(cfg: TrainConfig) -> tuple[float, ...]:
    """The factors to run: cfg's init_lr_factor when set (a positive number), else LR_FACTORS."""
    return LR_FACTORS if is_auto(cfg.init_lr_factor) else (float(cfg.init_lr_factor),)


def unit_id_restarts(cfg: TrainConfig) -> int:
    """How many unit-identification starts to compare: cfg's init_unit_id_restarts (a positive integer)."""
    return cfg.init_unit_id_restarts


def _val_loss(model: POYO) -> float:
    """The best validation loss of a unit-id model's last stage (inf when nothing was held out)."""
    loss = model.meta.adaptations[-1].stages[-1].best_val_loss
    return float("inf") if loss is None else float(loss)


def identify_units(
    pretrained: POYO, session, target: str | None, restarts: int, config: AdaptConfig, progress: bool
) -> tuple[POYO, dict]:
    """Unit identification of one new session from `restarts` random starts (adapt seeds 0..restarts-1);
    the model with the lowest validation loss, and a record {"val_loss": [...], "kept": seed}."""
    runs = [
        adapt(pretrained, session, mode="unit-id", target=target, seed=seed, config=config, progress=progress)
        for seed in range(restarts)
    ]
    losses = [_val_loss(m) for m in runs]
    kept = min(range(restarts), key=lambda i: (losses[i], i))
    return runs[kept], {"val_loss": [None if v == float("inf") else v for v in losses], "kept": kept}


def train_from_pretrained(
    pretrained: POYO,
    data: SessionDataset,
    cfg: TrainConfig,
    run_dir: str | Path,
    unit_id: AdaptConfig | None = None,
    progress: bool = True,
    resume: bool = False,
    **trainer_kw,
) -> TrainResult:
    """Unit identification of every new session of `data`, then full training from the result.

    The model's size and context window are the pretrained model's (any `model.*` setting in cfg is
    replaced by them). Each learning-rate factor trains in run_dir/lr-x<factor>/; run_dir/model.ckpt is
    the best of them on validation R², and run_dir/finetune.json says which and why (and which
    unit-identification start each new session kept). The identified model is kept in run_dir/unit-id.ckpt,
    so a resumed run (`resume=True`) does not identify the units again.
    """
    run_dir = Path(run_dir)
    factors, restarts = lr_factors(cfg), unit_id_restarts(cfg)
    saved, record = run_dir / UNIT_ID_MODEL, run_dir / UNIT_ID_RECORD
    if resume and saved.exists() and record.exists():  # identified before the interruption: not repeated
        model, identified = load_model_file(saved), json.loads(record.read_text())
    else:
        model, identified = copy.deepcopy(pretrained), {}  # the caller's model is left as it was
    new = [s for s in data if s.id not in model.session_emb.index]
    for session in new:
        model, identified[session.id] = identify_units(
            model, session, cfg.target, restarts, unit_id or AdaptConfig(), progress
        )
    if new and rank_zero_only.rank == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
        save_model(model, saved)
        with atomic_write(record) as tmp:  # written last: a resumed run needs both
            Path(tmp).write_text(json.dumps(identified, indent=2))
    cfg = replace(cfg, model=ModelSettings.of(model.config))
    base_lr = float(cfg.lr)
    results: dict[float, TrainResult] = {}
    for factor in factors:
        sub = run_dir / run_name(factor)
        if not resume and rank_zero_only.rank == 0 and sub.exists() and not list((sub / "checkpoints").glob("*.ckpt")):
            shutil.rmtree(sub)  # a folder left by a run that stopped before its first checkpoint
        start = copy.deepcopy(model)
        start.train()
        run_cfg = replace(cfg, lr=base_lr * factor)
        done = resume and (sub / "model.ckpt").exists() and (sub / "score.json").exists()
        if done:  # finished before the interruption: read back, do not repeat
            score = json.loads((sub / "score.json").read_text())
            results[factor] = TrainResult(
                sub / "model.ckpt",
                sub,
                int(score["steps"]),
                0.0,
                0,
                score["val_r2"],
                RecipeChoice.load(sub / "recipe.json"),
            )
            continue
        sub_resume = resume and (sub / "checkpoints" / "last.ckpt").exists()
        results[factor] = train(data, run_cfg, sub, init=start, progress=progress, resume=sub_resume, **trainer_kw)
        if rank_zero_only.rank == 0:
            (sub / "score.json").write_text(
                json.dumps({"val_r2": results[factor].best_score, "steps": results[factor].steps})
            )
    scored = {f: r.best_score for f, r in results.items()}
    chosen = max(factors, key=lambda f: (-float("inf") if scored[f] is None else scored[f], -f))
    best = results[chosen]
    recipe = copy.deepcopy(best.recipe)
    if len(factors) > 1:  # chosen from the data, not given: the summary lists it with the recipe's choices
        recipe.settings["init_lr_factor"] = chosen
        recipe.reasons["init_lr_factor"] = "best validation R² of fine-tuning at " + ", ".join(
            f"{f:g} x lr {'-' if scored[f] is None else f'{scored[f]:.3f}'}" for f in factors
        )
    if restarts > 1 and identified:
        recipe.settings["init_unit_id_restarts"] = restarts
        recipe.reasons["init_unit_id_restarts"] = (
            "unit identification kept, per new session, the start with the "
            "lowest validation loss: "
            + "; ".join(f"{sid} start {r['kept']} of {restarts}" for sid, r in identified.items())
        )
    final = run_dir / "model.ckpt"
    if rank_zero_only.rank == 0:
        tensors, meta = read_model_file(best.checkpoint)  # the kept run's model, with the choice in its metadata
        meta.extra["recipe"] = recipe.to_dict()
        meta.train = replace(meta.train, init_lr_factor=chosen)
        save_model_file(build_model(tensors, meta, str(best.checkpoint)), final, meta)
        recipe.save(run_dir / "recipe.json")
        (run_dir / CHOICE_FILE).write_text(
            json.dumps(
                {
                    "chosen": run_name(chosen),
                    "lr": base_lr * chosen,
                    "val_r2": {run_name(f): scored[f] for f in factors},
                    "unit_id": identified,
                },
                indent=2,
            )
        )
    return TrainResult(
        final,
        best.run_dir,
        sum(r.steps for r in results.values()),
        sum(r.seconds for r in results.values()),
        best.rank,
        best.best_score,
        recipe,
    )
