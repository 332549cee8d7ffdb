"""Where `spiketok train` starts: from scratch, from a model the user gives, or both from scratch and from the
shipped pretrained model, keeping the better on validation R² (the setting `init`).

`init: auto` (the `tiny` preset) trains the recipe's model from scratch in RUN/scratch/ and fine-tunes the
shipped `pretrained:primate-reaching` (`train --init`) in RUN/pretrained/, then keeps the run with the better
validation R² as RUN/model.ckpt; RUN/start.json and the summary say which and by how much. It falls back to
scratch alone, saying why, when the config's model settings are not the preset's (the shipped model would
replace them), for a causal model, or when no pretrained model ships. `init: null` (or `none`) trains from
scratch; a model file or `pretrained:NAME` starts from it (as `--init` does, which wins over the setting).
"""

from __future__ import annotations

import copy
import json
from dataclasses import replace
from pathlib import Path

from lightning.pytorch.utilities import rank_zero_only

from ..data.storage import SessionDataset
from ..errors import RunFolderError
from ..model.file import build_model, load_model_file, read_model_file, save_model_file
from ..model.pretrained import DEFAULT, PREFIX, available
from ..schema import TrainConfig
from ..train.config import load_config
from ..train.recipe import RecipeChoice, is_auto
from ..train.run import TrainResult, train
from .transfer import train_from_pretrained

ARMS = ("scratch", "pretrained")  # sub-folders of the run folder under init: auto
CHOICE_FILE = "start.json"


def _is_none(value) -> bool:
    return value is None or (isinstance(value, str) and value.lower() in ("none", "null", ""))


def why_not_shipped(cfg: TrainConfig, ensemble: int = 1) -> str | None:
    """Why init: auto trains from scratch alone for this config (None: it tries the shipped model too)."""
    if ensemble > 1:
        return "--ensemble trains its members from scratch"
    if DEFAULT not in available():
        return "no pretrained model ships with this installation"
    if cfg.model != load_config("tiny").model:
        return "the config's model settings are not the tiny preset's, and the shipped model would replace them"
    if cfg.causal:
        return "causal=true: the shipped model reads windows from both sides"
    return None


def train_with_start(
    data: SessionDataset,
    cfg: TrainConfig,
    run_dir: str | Path,
    init: str | Path | None = None,
    resume: bool = False,
    ensemble: int = 1,
    **trainer_kw,
) -> TrainResult:
    """Train on `data` from the start that `init` (a model file or pretrained:NAME) or cfg's `init` names."""
    run_dir = Path(run_dir)
    start = str(init) if init is not None else cfg.init
    reason = why_not_shipped(cfg, ensemble) if is_auto(start) else None
    if _is_none(start) or reason:
        result = train(data, cfg, run_dir, resume=resume, **trainer_kw)
        if reason and result.recipe is not None:
            result.recipe.settings["init"] = "none"
            result.recipe.reasons["init"] = f"from scratch: {reason}"
            if rank_zero_only.rank == 0:  # recipe.json says why, as the summary does
                result.recipe.save(run_dir / "recipe.json")
        return result
    if not is_auto(start):
        return train_from_pretrained(
            load_model_file(start), data, replace(cfg, init=start), run_dir, resume=resume, **trainer_kw
        )
    if resume and not any((run_dir / arm).is_dir() for arm in ARMS):
        raise RunFolderError(f"--resume: no {run_dir}/scratch or {run_dir}/pretrained to resume from")
    return _both_starts(data, cfg, run_dir, resume, trainer_kw)


def _arm(run_dir: Path, arm: str, resume: bool, fit) -> TrainResult:
    """One arm's result: read back when it finished before (score.json), else trained (resumed where it stopped)."""
    sub = run_dir / arm
    score = sub / "score.json"
    if resume and score.exists():
        done = json.loads(score.read_text())
        return TrainResult(
            Path(done["checkpoint"]),
            Path(done["run_dir"]),
            int(done["steps"]),
            0.0,
            0,
            done["val_r2"],
            RecipeChoice(**done["recipe"]),
        )
    result = fit(sub, resume)
    if rank_zero_only.rank == 0:
        score.write_text(
            json.dumps(
                {
                    "checkpoint": str(result.checkpoint),
                    "run_dir": str(result.run_dir),
                    "steps": result.steps,
                    "val_r2": result.best_score,
                    "recipe": (result.recipe or RecipeChoice()).to_dict(),
                }
            )
        )
    return result


def _both_starts(data: SessionDataset, cfg: TrainConfig, run_dir: Path, resume: bool, trainer_kw: dict) -> TrainResult:
    shipped = PREFIX + DEFAULT
    scratch = _arm(
        run_dir,
        "scratch",
        resume,
        lambda sub, r: train(data, cfg, sub, resume=r and (sub / "checkpoints" / "last.ckpt").exists(), **trainer_kw),
    )
    pretrained = _arm(
        run_dir,
        "pretrained",
        resume,
        lambda sub, r: train_from_pretrained(
            load_model_file(shipped), data, replace(cfg, init=shipped), sub, resume=r, **trainer_kw
        ),
    )
    scores = {"scratch": scratch.best_score, "pretrained": pretrained.best_score}
    ranked = {arm: float("-inf") if s is None else s for arm, s in scores.items()}
    kept = "pretrained" if ranked["pretrained"] > ranked["scratch"] else "scratch"
    best = pretrained if kept == "pretrained" else scratch
    shown = {arm: "n/a" if s is None else f"{s:.3f}" for arm, s in scores.items()}
    margin = ranked["pretrained"] - ranked["scratch"]
    recipe = copy.deepcopy(best.recipe or RecipeChoice())
    recipe.settings["init"] = shipped if kept == "pretrained" else "none"
    recipe.reasons["init"] = (
        f"validation R² {shown['pretrained']} starting from {shipped}, {shown['scratch']} from "
        f"scratch ({margin:+.3f}): kept {'the shipped start' if kept == 'pretrained' else 'scratch'}"
        f" (RUN/{kept}/; init=none or init=PATH to choose yourself)"
    )
    final = run_dir / "model.ckpt"
    if rank_zero_only.rank == 0:
        tensors, meta = read_model_file(best.checkpoint)
        meta.extra["recipe"] = recipe.to_dict()
        meta.train = replace(meta.train, init=recipe.settings["init"])
        save_model_file(build_model(tensors, meta, str(best.checkpoint)), final, meta)
        recipe.save(run_dir / "recipe.json")
        (run_dir / CHOICE_FILE).write_text(json.dumps({"kept": kept, "val_r2": scores, "start": shipped}, indent=2))
    return TrainResult(
        final,
        best.run_dir,
        scratch.steps + pretrained.steps,
        scratch.seconds + pretrained.seconds,
        best.rank,
        best.best_score,
        recipe,
    )
