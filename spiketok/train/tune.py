"""`tune`: an Optuna search over the few training settings that matter, scored on the valid split only.

Each trial trains in this process with `train.run.train` on the base config plus the trial's values,
reports `val_r2` (R² of the valid split, logged by `POYOModule` every validation) to Optuna after every
validation, and stops early when the median pruner says so. The study lives in RUN_DIR/optuna.db, so
running the same command again adds trials to it. The test split is never read. The search space is in
`tune_space`, what a run writes (summaries, plot, best.yaml) in `tune_report`.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import optuna
from lightning.pytorch.callbacks import Callback
from optuna.trial import FrozenTrial, TrialState

from ..data.storage import SessionDataset
from ..errors import SpiketokError
from ..schema import TrainConfig
from .config import load_config
from .loop import quiet
from .recipe import MAX_CHECK_STEPS, is_auto
from .run import TrainingInterrupted, train
from .tune_report import TrialRow, format_values, plot_search, root_preset, write_best_yaml, write_summary
from .tune_space import METRIC, base_params, current_values, suggest, with_values

STUDY = "spiketok-tune"
DEFAULT_SHARES = 10  # without --trials, each trial gets 1/10 of the budget (more trials run if they end early)
__all__ = [
    "STUDY",
    "TuneError",
    "TuneResult",
    "TrialRow",
    "base_params",
    "format_values",
    "open_study",
    "tune",
    "with_values",
]


class TuneError(SpiketokError, RuntimeError):
    """A tuning run that cannot start or produced no usable trial (message says what to do)."""


class ReportValR2(Callback):
    """Reports val_r2 to an Optuna trial after every validation (at the global step) and stops training
    when the trial's pruner says so; `pruned_at` is then that step. Needs no optuna-integration."""

    def __init__(self, trial: optuna.Trial):
        self.trial = trial
        self.history: dict[int, float] = {}  # global step -> val_r2
        self.pruned_at: int | None = None

    def on_validation_end(self, trainer, pl_module) -> None:
        value = trainer.callback_metrics.get(METRIC)
        step = int(trainer.global_step)
        if trainer.sanity_checking or value is None or step in self.history:
            return
        self.history[step] = float(value)
        self.trial.report(float(value), step)
        if self.pruned_at is None and self.trial.should_prune():
            self.pruned_at = step
            trainer.should_stop = True


# --- the search -----------------------------------------------------------------------------------------


@dataclass
class TuneResult:
    run_dir: Path
    study_db: Path
    best_yaml: Path | None
    plot: Path
    summary: tuple[Path, Path]
    best: TrialRow | None
    base_values: dict[str, Any]
    rows: list[TrialRow]  # every trial of the study, this run's and earlier runs'
    new_trials: int  # trials this run added
    seconds: float


def _spec(data: SessionDataset, base: TrainConfig) -> dict:
    """What a study is of: the sessions and the base config (max_minutes aside: each trial sets its own)."""
    cfg = {k: v for k, v in base.to_dict().items() if k != "max_minutes"}
    return {"sessions": sorted(data.ids), "base_config": json.loads(json.dumps(cfg))}


def open_study(
    run_dir: Path, data: SessionDataset, base: TrainConfig, startup_trials: int, warmup_steps: int
) -> optuna.Study:
    """The study in run_dir/optuna.db (created, or loaded when it exists for the same data and config).

    Trials left RUNNING by a killed run are marked failed. The sampler's seed moves on with the number of
    trials so far, so a resumed run does not propose the first run's settings again.
    """
    db = run_dir / "optuna.db"
    storage = f"sqlite:///{db.resolve()}"
    probe = None
    if db.exists():
        try:
            probe = optuna.load_study(study_name=STUDY, storage=storage)
        except KeyError:  # a database without the study (a run killed while creating it)
            probe = None
    spec = _spec(data, base)
    if probe is not None:
        before = probe.user_attrs.get("spec")
        if before is not None and before != spec:
            what = "sessions" if before["sessions"] != spec["sessions"] else "base config (--config and key=value)"
            raise TuneError(
                f"{run_dir} holds a study of other {what}; resume with the same --data, --config and "
                "overrides, or tune into a new folder"
            )
    n_before = len(probe.trials) if probe is not None else 0
    sampler = optuna.samplers.TPESampler(seed=base.seed + n_before, multivariate=True, n_startup_trials=5)
    pruner = optuna.pruners.MedianPruner(n_startup_trials=startup_trials, n_warmup_steps=warmup_steps)
    study = optuna.create_study(
        storage=storage, study_name=STUDY, direction="maximize", sampler=sampler, pruner=pruner, load_if_exists=True
    )
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        study.tell(t.number, state=TrialState.FAIL)  # one tune process per folder: these were killed
    if probe is None:
        study.set_user_attr("spec", spec)
    ran = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.WAITING)
    if not any(t.user_attrs.get("source") == "base config" and t.state in ran for t in study.trials):
        study.enqueue_trial(base_params(base), user_attrs={"source": "base config"})  # again, if it was killed
    return study


def _rows(study: optuna.Study) -> list[TrialRow]:
    """Every trial that ran or runs (not the enqueued ones still waiting)."""
    return [TrialRow.of(t) for t in study.get_trials(deepcopy=False) if t.state != TrialState.WAITING]


def _best(rows: list[TrialRow]) -> TrialRow | None:
    done = [r for r in rows if r.state == "complete" and r.val_r2 is not None and math.isfinite(r.val_r2)]
    return max(done, key=lambda r: r.val_r2) if done else None


def tune(
    data: SessionDataset,
    run_dir: str | Path,
    budget_minutes: float,
    config: str | Path = "tiny",
    overrides: list[str] | None = None,
    trials: int | None = None,
    accelerator: str = "auto",
    startup_trials: int = 3,
    enqueue: list[dict[str, Any]] | None = None,
    on_trial: Callable[[TrialRow, TrialRow | None], None] | None = None,
) -> TuneResult:
    """Search lr, weight decay, dropout, window, latent step, width and depth for the best val_r2.

    Each trial gets budget/trials minutes (budget/10 without `trials`) as its max_minutes and the base
    config's max_steps; no trial starts once the budget is spent, and at most `trials` run. The median
    pruner stops a trial whose val_r2 falls below the median of earlier trials at the same step (after
    `startup_trials` finished trials, from the second validation and a fifth of max_steps on). `enqueue`:
    Optuna parameters to try first (names of `search_space`). Writes optuna.db, best.yaml, search.png,
    trials.csv and trials.json into run_dir; trials/NNNN/ hold each trial's logs (and the best trial's model).
    """
    if budget_minutes <= 0:
        raise TuneError(f"--budget-minutes must be > 0, got {budget_minutes}")
    if trials is not None and trials < 1:
        raise TuneError(f"--trials must be >= 1, got {trials}")
    t0 = time.monotonic()
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    base = load_config(config, overrides or [])
    preset = root_preset(config)
    share = budget_minutes * 60 / (trials or DEFAULT_SHARES)
    deadline = t0 + budget_minutes * 60
    with quiet({"optuna": logging.ERROR}):  # one progress line per trial replaces the logs
        # never at the first validation ("auto": every 10-100 steps, chosen per trial by the recipe)
        warmup = (MAX_CHECK_STEPS if is_auto(base.steps_per_epoch) else int(base.steps_per_epoch)) + 1
        if not is_auto(base.max_steps):  # nor before a fifth of the run ("auto": chosen per trial by the recipe)
            warmup = max(warmup, int(base.max_steps) // 5)
        study = open_study(run_dir, data, base, startup_trials, warmup)
        for params in enqueue or []:
            study.enqueue_trial(params)
        failures: list[str] = []

        def objective(trial: optuna.Trial) -> float:
            values = suggest(trial, base)
            cfg = replace(with_values(base, values), max_minutes=clock["limit"] / 60)
            trial.set_user_attr("values", values)
            trial_dir = run_dir / "trials" / f"{trial.number:04d}"
            shutil.rmtree(trial_dir, ignore_errors=True)  # a trial number is never reused; leftovers are stale
            reporter = ReportValR2(trial)
            try:
                result = train(
                    data, cfg, trial_dir, devices=1, accelerator=accelerator, progress=False, callbacks=[reporter]
                )
            except TrainingInterrupted:  # Ctrl-C or SIGTERM: the trial fails, the search stops
                raise KeyboardInterrupt from None
            except RuntimeError as e:
                failures.append(f"trial {trial.number}: {e}")
                trial.set_user_attr("error", f"{type(e).__name__}: {e}"[:300])
                raise
            finally:
                shutil.rmtree(trial_dir / "checkpoints", ignore_errors=True)
            trial.set_user_attr("steps", result.steps)
            trial.set_user_attr("seconds", round(result.seconds, 2))
            trial.set_user_attr("model", str(result.checkpoint))
            if reporter.pruned_at is not None:
                raise optuna.TrialPruned(f"val_r2 below the median at step {reporter.pruned_at}")
            finite = [v for v in reporter.history.values() if math.isfinite(v)]
            if not finite:
                failures.append(f"trial {trial.number}: no finite val_r2 (no validation ran, or it diverged)")
                trial.set_user_attr("error", "no finite val_r2 (no validation ran, or training diverged)")
                return float("nan")  # Optuna records the trial as failed
            return max(finite)

        def after(study: optuna.Study, frozen: FrozenTrial) -> None:
            rows = _rows(study)
            best = _best(rows)
            _keep_best_model(study, best)
            _write_outputs(run_dir, rows, best, base, preset)
            if on_trial is not None:
                on_trial(TrialRow.of(frozen), best)

        # a trial's limit counts training; setup, the last validation and saving come on top ("overhead",
        # the most any trial ran past its limit), so the next limit leaves room for them
        clock = {"limit": share, "overhead": 0.0}
        new = 0
        while trials is None or new < trials:
            left = deadline - time.monotonic() - clock["overhead"]
            if left < 0.25 * share or left < 1.0:
                break
            clock["limit"] = max(1.0, min(share - clock["overhead"], left))
            start = time.monotonic()
            study.optimize(objective, n_trials=1, catch=(RuntimeError,), callbacks=[after])
            clock["overhead"] = max(clock["overhead"], time.monotonic() - start - clock["limit"])
            new += 1
    rows = _rows(study)
    best = _best(rows)
    if best is None:
        detail = "; ".join(failures[-3:]) or "every trial was pruned or ran out of time before a validation"
        raise TuneError(
            f"no trial finished with a val_r2 ({detail}); raise --budget-minutes or lower "
            "steps_per_epoch so a trial reaches a validation"
        )
    csv_path, json_path, plot, best_yaml = _write_outputs(run_dir, rows, best, base, preset)
    return TuneResult(
        run_dir,
        run_dir / "optuna.db",
        best_yaml,
        plot,
        (csv_path, json_path),
        best,
        current_values(base),
        rows,
        new,
        time.monotonic() - t0,
    )


def _keep_best_model(study: optuna.Study, best: TrialRow | None) -> None:
    """Only the best trial keeps its model file (each trial's logs stay)."""
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)):
        model = t.user_attrs.get("model")
        if model and (best is None or t.number != best.number):
            Path(model).unlink(missing_ok=True)


def _write_outputs(
    run_dir: Path, rows: list[TrialRow], best: TrialRow | None, base: TrainConfig, preset: str
) -> tuple[Path, Path, Path, Path | None]:
    csv_path, json_path = write_summary(rows, best, run_dir)
    plot = plot_search(rows, run_dir / "search.png")
    best_yaml = None
    if best is not None:
        best_yaml = run_dir / "best.yaml"
        n = sum(r.state in ("complete", "pruned") for r in rows)
        write_best_yaml(
            best_yaml,
            with_values(base, best.values),
            preset,
            f"spiketok tune: trial {best.number}, val R² {best.val_r2:.4f} (valid split), best of {n} trials\n"
            f"train with: spiketok train --config {best_yaml} --data ... --out ...",
        )
    return csv_path, json_path, plot, best_yaml
