"""`train`: one model on all given sessions, with Lightning (CPU, GPU, DDP over GPUs and nodes)."""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from dataclasses import dataclass, replace
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, EarlyStopping, ModelCheckpoint, TQDMProgressBar
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_info, rank_zero_only, rank_zero_warn
from lightning.pytorch.utilities.exceptions import SIGTERMException

from ..data.session import DataError
from ..data.storage import SessionDataset
from ..errors import RunFolderError
from ..model.family import new_model
from ..model.poyo import POYO
from ..schema import TrainConfig
from .callbacks import (
    DebugRecord,
    EMAWeights,
    FinalLast,
    SaveOnInterrupt,
    SetSamplerEpoch,
    StopAfterMinutes,
    ValidationCurve,
)
from .checkpoint import AtomicCheckpointIO, convert_checkpoint, read_pickled_checkpoint
from .csvlog import merge_csv_log, stash_csv_log
from .data import WindowDataModule, choose_target, register_sessions, unscored_validation
from .loop import lightning_trainer
from .module import POYOModule
from .recipe import (
    PILOT_FRACTION,
    PilotScore,
    RecipeChoice,
    choose_window,
    is_auto,
    longest_train_interval,
    resolve_schedule,
    window_candidates,
    window_settings,
)
from .stage import Stage

DEBUG_ENV = "SPIKETOK_DEBUG_DIR"  # folder: windows each rank draws, each rank's final weights (for tests)


@dataclass
class TrainResult:
    checkpoint: Path
    run_dir: Path
    steps: int
    seconds: float
    rank: int = 0  # global rank of this process (0 unless DDP)
    best_score: float | None = None  # best validation R² (of the checkpoint kept as the model)
    recipe: RecipeChoice | None = None  # settings chosen from the data for "auto" values


class TrainingInterrupted(RuntimeError):
    """Training stopped on SIGTERM or Ctrl-C after saving `checkpoint`; continue with resume=True."""

    def __init__(self, checkpoint: Path, step: int):
        super().__init__(f"training interrupted at step {step}; state saved to {checkpoint}; continue with --resume")
        self.checkpoint, self.step = checkpoint, step


def _n_processes(devices: int | str | list, num_nodes: int, accelerator: str) -> int:
    """How many training processes Lightning will run (a best guess for devices='auto')."""
    if isinstance(devices, (list, tuple)):
        n = len(devices)
    elif isinstance(devices, int) and devices > 0:
        n = devices
    elif str(devices).isdigit():
        n = int(devices)
    else:  # "auto" or -1: every GPU when training on GPUs, else one process
        gpu = accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())
        n = torch.cuda.device_count() if gpu else 1
    return max(1, n) * max(1, num_nodes)


def _strategy(strategy: str, n_tasks: int, n_processes: int) -> str:
    """'auto' unless DDP meets several readouts: a batch may leave a readout unused, which plain DDP rejects."""
    if strategy == "auto" and n_tasks > 1 and n_processes > 1:
        return "ddp_find_unused_parameters_true"
    return strategy


def _check_resume(ckpt_path: Path, ckpt: dict, targets: dict[str, str]) -> int:
    """A resumed run must see the sessions (and targets) it was started with; returns the checkpoint's step."""
    hp = ckpt.get("hyper_parameters", {})
    before = hp.get("targets")
    if before is not None and dict(before) != targets:
        raise DataError(
            f"--resume: {ckpt_path} was trained on sessions {sorted(before)} with targets "
            f"{sorted(set(before.values()))}; the data given now are {sorted(targets)} with targets "
            f"{sorted(set(targets.values()))}. Resume with the same --data and target, or start a new run folder."
        )
    return int(ckpt.get("global_step", 0))


def _split_spec(data: SessionDataset) -> dict:
    return {
        s.id: {name: [[float(a), float(b)] for a, b in zip(iv.start, iv.end)] for name, iv in s.splits.items()}
        for s in data
    }


def _last_checkpoint(run_dir: Path) -> Path | None:
    last = run_dir / "checkpoints" / "last.ckpt"
    return last if last.exists() else None


START_CHECKPOINT = "start.ckpt"  # a run from a given model (--init): that model, scored before training


def _score_start(module: POYOModule, dm: WindowDataModule, run_dir: Path, accelerator: str) -> None:
    """Validate the starting model as training validates, and keep it (checkpoints/start.ckpt, its val_r2 in
    start.json) so that model.ckpt is never worse on validation than where training began."""
    scorer = L.Trainer(
        accelerator=accelerator,
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=run_dir,
    )
    metrics = scorer.validate(module, datamodule=dm, verbose=False)[0]
    score = float(metrics.get("val_r2", float("nan")))
    if rank_zero_only.rank == 0:
        scorer.save_checkpoint(run_dir / "checkpoints" / START_CHECKPOINT)
        (run_dir / "start.json").write_text(json.dumps({"val_r2": score if math.isfinite(score) else None}))


def _start_score(run_dir: Path) -> float | None:
    path = run_dir / "start.json"
    return json.loads(path.read_text())["val_r2"] if path.exists() else None


def build_model(cfg: TrainConfig, data: SessionDataset, init: POYO | None = None) -> tuple[POYO, dict[str, str]]:
    """A fresh model for the config (or `init`), registered with every session of `data`."""
    model = init if init is not None else new_model(cfg.model.config())
    targets = register_sessions(model, data, cfg.target)
    return model, targets


def train(
    data: SessionDataset,
    cfg: TrainConfig,
    run_dir: str | Path,
    resume: bool = False,
    devices: int | str = "auto",
    num_nodes: int = 1,
    accelerator: str = "auto",
    progress: bool = True,
    strategy: str = "auto",
    init: POYO | None = None,
    callbacks: list[Callback] | None = None,
) -> TrainResult:
    """Train on every session of `data`; checkpoints, CSV and TensorBoard logs go into `run_dir`.

    resume=True continues from run_dir/checkpoints/last.ckpt (written at every epoch end and on
    SIGTERM / Ctrl-C, which raise TrainingInterrupted after saving). Several devices or nodes run DDP.
    `init`: start from this model (its size and window; see spiketok.adapt.transfer) instead of a fresh one.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    ckpt_path = _last_checkpoint(run_dir) if resume else None
    if resume and ckpt_path is None:
        raise RunFolderError(f"--resume: no {run_dir}/checkpoints/last.ckpt to resume from")
    if not resume and rank_zero_only.rank == 0 and list((run_dir / "checkpoints").glob("*.ckpt")):
        raise RunFolderError(
            f"{run_dir} already holds a run (checkpoints/); continue it with --resume or train into a new folder"
        )
    # read before anything is written: tensors and plain data only (weights_only), damaged or crafted: ModelFileError
    resume_state = read_pickled_checkpoint(ckpt_path) if ckpt_path is not None else None
    trainer_kw = dict(
        devices=devices, num_nodes=num_nodes, accelerator=accelerator, progress=progress, strategy=strategy
    )
    cfg, recipe = resolve_recipe(data, cfg, run_dir, trainer_kw)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    model, targets = build_model(cfg, data, init)
    if ckpt_path is not None and resume_state is not None:
        step = _check_resume(ckpt_path, resume_state, targets)
        if rank_zero_only.rank == 0:
            stash_csv_log(run_dir, step)
            for partial in (run_dir / "checkpoints").glob(".*.tmp"):  # from a process killed while saving
                partial.unlink(missing_ok=True)
    gpu = accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())
    stage = Stage.of(cfg, gpu)
    extra = {"targets": targets, "splits": _split_spec(data), "recipe": recipe.to_dict()}
    module = POYOModule(model, stage, cfg, extra)
    dm = WindowDataModule.for_model(model, data, targets, stage)
    window = model.config.window
    spikes_per_window = sum(s.n_spikes for s in data) / max(sum(s.duration for s in data), 1e-9) * window
    if spikes_per_window < 30 and "model.window" not in recipe.settings:  # a window the user set
        rank_zero_warn(
            f"only {spikes_per_window:.0f} spikes per {window:g} s window on average: too few to decode "
            "from; a longer context often helps (leave model.window at auto to let short pilot runs "
            "choose it on validation R²)"
        )
    for sid in unscored_validation(data, targets):
        rank_zero_warn(
            f"session {sid}: its valid split holds no {targets[sid]!r} sample with weight > 0 (all left "
            "out, e.g. by prepare --keep-moving), so it adds nothing to val_loss and cannot guide the "
            "choice of the best checkpoint; prepare it again with another --split-seed"
        )
    # best by validation R² (becomes model.ckpt), and last.ckpt rewritten every epoch (for --resume)
    checkpoint = ModelCheckpoint(
        dirpath=run_dir / "checkpoints",
        filename="best-epoch{epoch:03d}-step{step}",
        auto_insert_metric_name=False,
        save_top_k=1,
        monitor="val_r2",
        mode="max",
        every_n_epochs=1,
    )
    last = ModelCheckpoint(
        dirpath=run_dir / "checkpoints",
        filename="last",
        monitor=None,
        save_top_k=1,
        every_n_epochs=1,
        enable_version_counter=False,
    )
    interrupt = SaveOnInterrupt(run_dir / "checkpoints" / "last.ckpt")
    callbacks = [checkpoint, last, interrupt, FinalLast(interrupt.path), SetSamplerEpoch(), *(callbacks or [])]
    if os.environ.get(DEBUG_ENV):
        Path(os.environ[DEBUG_ENV]).mkdir(parents=True, exist_ok=True)
        callbacks.append(DebugRecord(Path(os.environ[DEBUG_ENV])))
    if cfg.max_minutes:
        callbacks.append(StopAfterMinutes(cfg.max_minutes))
    n_processes = max(_n_processes(devices, num_nodes, accelerator), int(os.environ.get("WORLD_SIZE", "1")))
    if cfg.ema and n_processes > 1:  # measured: ranks' weights drifted apart by 1e-4 (2-process gloo test)
        rank_zero_warn(
            "ema: weight averaging is not used with several training processes (DDP); set ema=null to silence this"
        )
    elif cfg.ema:
        callbacks.append(EMAWeights(cfg.ema, int(cfg.warmup_steps)))
    if cfg.patience:  # stop when validation R² has not improved for `patience` checks
        callbacks.append(
            EarlyStopping(
                monitor="val_r2",
                mode="max",
                patience=int(cfg.patience),
                check_finite=False,
                strict=False,
                check_on_train_epoch_end=False,
            )
        )
    if progress:
        callbacks.append(TQDMProgressBar(refresh_rate=10))
    strategy = _strategy(strategy, len(model.task_names), n_processes)
    trainer = lightning_trainer(
        stage,
        callbacks,
        progress,
        accelerator=accelerator,
        devices=devices,
        num_nodes=num_nodes,
        strategy=strategy,
        logger=[CSVLogger(run_dir, name="logs", version=""), TensorBoardLogger(run_dir, name="tb", version="")],
        plugins=[AtomicCheckpointIO()],
        default_root_dir=run_dir,
    )
    t0 = time.monotonic()
    single = _n_processes(devices, num_nodes, accelerator) == 1 and int(os.environ.get("WORLD_SIZE", "1")) == 1
    if init is not None and ckpt_path is None and single:  # (under DDP the start is not scored: no start.json)
        _score_start(module, dm, run_dir, accelerator)
    try:
        trainer.fit(module, datamodule=dm, ckpt_path=ckpt_path, weights_only=True)  # never unpickles
    except SIGTERMException:
        if interrupt.saved_step is None:
            raise
        raise TrainingInterrupted(interrupt.path, interrupt.saved_step) from None
    # the best checkpoint by validation loss is the product; keep "last" for resuming
    best = Path(checkpoint.best_model_path) if checkpoint.best_model_path else run_dir / "checkpoints" / "last.ckpt"
    score = checkpoint.best_model_score
    best_score = float(score) if score is not None and torch.isfinite(score) else None
    start = _start_score(run_dir)
    if start is not None and (best_score is None or start > best_score):  # training never beat its start
        rank_zero_info(
            f"validation R² {start:.3f} of the starting model is better than any training step's "
            f"({'n/a' if best_score is None else f'{best_score:.3f}'}): model.ckpt is the starting model"
        )
        best, best_score = run_dir / "checkpoints" / START_CHECKPOINT, start
    final = run_dir / "model.ckpt"
    if trainer.is_global_zero:
        merge_csv_log(run_dir)
        convert_checkpoint(best, final)  # the shareable product: a data-only model file (spiketok.model.file)
    return TrainResult(
        final, run_dir, int(trainer.global_step), time.monotonic() - t0, int(trainer.global_rank), best_score, recipe
    )


def resolve_recipe(
    data: SessionDataset, cfg: TrainConfig, run_dir: Path, trainer_kw: dict
) -> tuple[TrainConfig, RecipeChoice]:
    """cfg with every "auto" setting chosen from the data (see recipe.py), and what was chosen.

    A resumed run reads its choices back from run_dir/recipe.json, so it continues with the same settings.
    """
    saved = run_dir / "recipe.json"
    if saved.exists() and _last_checkpoint(run_dir) is not None:
        choice = RecipeChoice.load(saved)
        return choice.apply(cfg), choice
    choice = RecipeChoice()
    candidates = window_candidates(data)
    if is_auto(cfg.model.window) and len(candidates) == 1:  # nothing to compare: no pilot
        only = (
            f"the only candidate: every training interval is at most {longest_train_interval(data):.3g} s long, "
            "so a longer window adds nothing"
        )
        for key, value in window_settings(candidates[0], cfg.model.resolved_backbone).items():
            why = only if key == "model.window" else f"follows the {candidates[0]:g} s window"
            cfg = choice.set(cfg, key, value, why)
    elif is_auto(cfg.model.window):
        pilots = pilot_windows(data, cfg, run_dir / "pilots", trainer_kw)
        choice.pilots = {w: p.best for w, p in pilots.items()}
        choice.pilot_spreads = {w: p.spread for w, p in pilots.items()}
        window, why = choose_window(pilots)
        for key, value in window_settings(window, cfg.model.resolved_backbone).items():
            cfg = choice.set(cfg, key, value, why if key == "model.window" else f"follows the {window:g} s window")
    cfg = resolve_schedule(cfg, data, _targets(data, cfg), choice)
    if rank_zero_only.rank == 0:
        choice.save(saved)
    return cfg, choice


def _targets(data: SessionDataset, cfg: TrainConfig) -> dict[str, str]:
    return {s.id: choose_target(s, cfg.target) for s in data}


def pilot_windows(data: SessionDataset, cfg: TrainConfig, folder: Path, trainer_kw: dict) -> dict[str, PilotScore]:
    """Validation R² curve of a short run (PILOT_FRACTION of the steps) per candidate window; finished
    pilots are read back from folder/<window>/score.json (a re-run after a crash does not repeat them)."""
    scores: dict[str, PilotScore] = {}
    for window in window_candidates(data):
        run = folder / f"window-{window:g}"
        done = run / "score.json"
        if done.exists():
            scores[f"{window:g}"] = PilotScore(tuple(json.loads(done.read_text()).get("val_r2_curve", [])))
            continue
        shutil.rmtree(run, ignore_errors=True)
        pilot = RecipeChoice(settings=window_settings(window, cfg.model.resolved_backbone)).apply(cfg)
        pilot = resolve_schedule(pilot, data, _targets(data, cfg), RecipeChoice())
        steps = max(1, int(int(pilot.max_steps) * PILOT_FRACTION))
        pilot = replace(
            pilot,
            max_steps=steps,
            warmup_steps=min(int(pilot.warmup_steps), max(1, steps // 10)),
            steps_per_epoch=min(int(pilot.steps_per_epoch), max(1, steps // 4)),
            patience=None,
            ema=None,
        )  # a moving average lags too far behind in a run this short
        rank_zero_info(f"pilot: {window:g} s window, {steps} steps")
        curve = ValidationCurve()
        result = train(data, pilot, run, callbacks=[curve], **trainer_kw)
        scores[f"{window:g}"] = score = PilotScore(tuple(curve.curve))
        if rank_zero_only.rank == 0:
            done.write_text(
                json.dumps({"val_r2": score.best, "val_r2_curve": list(score.curve), "steps": result.steps})
            )
    return scores
