"""`tune`: an Optuna search over the few training settings that matter, scored on the valid split only.

Each trial trains in this process with `train.run.train` on the base config plus the trial's values,
reports `val_r2` (R² of the valid split, logged by `POYOModule` every validation) to Optuna after every
validation, and stops early when the median pruner says so. The study lives in RUN_DIR/optuna.db, so
running the same command again adds trials to it. The test split is never read.
"""

from __future__ import annotations

import copy
import csv
import json
import logging
import math
import shutil
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import yaml
from lightning.pytorch.callbacks import Callback
from optuna.trial import FrozenTrial, TrialState

from ..data.storage import SessionDataset
from ..model.config import model_config
from .config import PRESETS, load_config
from .recipe import is_auto, window_settings
from .run import TrainingInterrupted, train

STUDY = "spiketok-tune"
DEFAULT_SHARES = 10  # without --trials, each trial gets 1/10 of the budget (more trials run if they end early)
METRIC = "val_r2"
SEARCHED = ("lr", "weight_decay", "model.dropout", "model.window", "model.latent_step", "model.t_max",
            "model.dim", "model.depth")


class TuneError(RuntimeError):
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


# --- the search space -------------------------------------------------------------------------------

def _choices(values: list[float | int], base: float | int) -> list:
    return sorted(set(values) | {base})


def base_model(base: dict):
    """The base config's model settings; an "auto" window (the recipe's) counts as 1 s, where the search starts."""
    settings = dict(base["model"])
    if is_auto(settings.get("window")):
        settings.update({k.removeprefix("model."): v for k, v in window_settings(1.0).items()})
    return model_config(settings)


def search_space(base: dict) -> dict[str, Any]:
    """The ranges searched around the base config: log-uniform lr (base/10 .. 5 x base) and weight decay,
    dropout 0-0.4, window 0.5-4 s, 4/8/16 latent steps per window, width and depth from half to twice the
    base size's (width in multiples of 8)."""
    m = base_model(base)
    lr, wd = float(base["lr"]), float(base["weight_decay"])
    steps = max(1, round(m.window / m.latent_step))
    return {
        "lr": (min(lr / 10, 1e-4), lr * 5),
        "weight_decay": (min(1e-5, wd) if wd > 0 else 1e-5, max(0.3, wd)),
        "dropout": (0.0, max(0.4, m.dropout)),
        "window": _choices([0.5, 1.0, 2.0, 4.0], float(m.window)),
        "latent_steps": _choices([4, 8, 16], steps),
        "dim": _choices([max(16, 8 * round(m.dim * f / 8)) for f in (0.5, 1.0, 1.5, 2.0)], m.dim),
        "depth": _choices([max(1, m.depth // 2), m.depth + max(1, m.depth // 2), 2 * m.depth], m.depth),
    }


def base_params(base: dict) -> dict[str, Any]:
    """The Optuna parameters that reproduce the base config (tried first in a new study)."""
    m = base_model(base)
    return {"lr": float(base["lr"]), "weight_decay": max(float(base["weight_decay"]), 1e-5),
            "dropout": float(m.dropout), "window": float(m.window),
            "latent_steps": max(1, round(m.window / m.latent_step)), "dim": m.dim, "depth": m.depth}


def current_values(cfg: dict) -> dict[str, Any]:
    """The searched settings as a config has them (dotted keys)."""
    m = model_config(cfg["model"])
    return {"lr": float(cfg["lr"]), "weight_decay": float(cfg["weight_decay"]), "model.dropout": m.dropout,
            "model.window": m.window, "model.latent_step": m.latent_step, "model.t_max": m.t_max,
            "model.dim": m.dim, "model.depth": m.depth}


def values_of(params: dict[str, Any], base: dict) -> dict[str, Any]:
    """Optuna parameters -> config values (dotted keys). t_max >= 2 x window (rotary time range);
    latent_step = window / latent_steps, so the latent count stays latent_steps x num_latents_per_step."""
    m = model_config(base["model"])
    window = float(params["window"])
    return {"lr": float(params["lr"]), "weight_decay": float(params["weight_decay"]),
            "model.dropout": float(params["dropout"]), "model.window": window,
            "model.latent_step": window / int(params["latent_steps"]), "model.t_max": max(float(m.t_max), 2 * window),
            "model.dim": int(params["dim"]), "model.depth": int(params["depth"])}


def suggest(trial: optuna.Trial, base: dict) -> dict[str, Any]:
    """The config values (dotted keys) of one trial."""
    space = search_space(base)
    params = {
        "lr": trial.suggest_float("lr", *space["lr"], log=True),
        "weight_decay": trial.suggest_float("weight_decay", *space["weight_decay"], log=True),
        "dropout": trial.suggest_float("dropout", *space["dropout"]),
        "window": trial.suggest_categorical("window", space["window"]),
        "latent_steps": trial.suggest_categorical("latent_steps", space["latent_steps"]),
        "dim": trial.suggest_categorical("dim", space["dim"]),
        "depth": trial.suggest_categorical("depth", space["depth"]),
    }
    return values_of(params, base)


def with_values(cfg: dict, values: dict[str, Any]) -> dict:
    """A copy of `cfg` with dotted keys set."""
    out = copy.deepcopy(cfg)
    for key, value in values.items():
        node = out
        *parents, leaf = key.split(".")
        for k in parents:
            node = node.setdefault(k, {})
        node[leaf] = value
    return out


# --- best.yaml ----------------------------------------------------------------------------------------

def root_preset(source: str | Path) -> str:
    """The preset a config source rests on: itself, or the `base:` chain of a YAML file (default tiny)."""
    if str(source) in PRESETS:
        return str(source)
    user = yaml.safe_load(Path(source).read_text()) or {}
    return root_preset(user.get("base", "tiny"))


def _diff(cfg: dict, ref: dict) -> dict:
    out = {}
    for k, v in cfg.items():
        if isinstance(v, dict) and isinstance(ref.get(k), dict):
            sub = _diff(v, ref[k])
            if sub:
                out[k] = sub
        elif k not in ref or ref[k] != v:
            out[k] = v
    return out


def write_best_yaml(path: Path, cfg: dict, preset: str, comment: str) -> None:
    """`base: PRESET` and every setting of `cfg` that differs from the preset (what `load_config` reads)."""
    body = {"base": preset, **_diff(cfg, load_config(preset))}
    text = "".join(f"# {line}\n" for line in comment.splitlines()) + yaml.safe_dump(body, sort_keys=False)
    tmp = path.with_suffix(".yaml.tmp")
    tmp.write_text(text)
    tmp.replace(path)


# --- summaries and the plot ---------------------------------------------------------------------------

@dataclass
class TrialRow:
    """One trial as the summary files and progress lines show it."""

    number: int
    state: str  # complete, pruned, fail, running
    val_r2: float | None  # best val_r2 the trial reached
    steps: int | None
    last_step: int | None
    seconds: float | None
    values: dict[str, Any] = field(default_factory=dict)
    intermediate: dict[int, float] = field(default_factory=dict)
    error: str | None = None

    @classmethod
    def of(cls, t: FrozenTrial) -> "TrialRow":
        inter = {int(k): float(v) for k, v in sorted(t.intermediate_values.items())}
        finite = [v for v in inter.values() if math.isfinite(v)]
        best = t.value if t.state == TrialState.COMPLETE else (max(finite) if finite else None)
        best = None if t.state == TrialState.FAIL else best
        return cls(t.number, t.state.name.lower(), best, t.user_attrs.get("steps"), max(inter) if inter else None,
                   t.user_attrs.get("seconds"), dict(t.user_attrs.get("values", {})), inter, t.user_attrs.get("error"))

    def line(self, best: "TrialRow | None") -> str:
        """A one-line progress report: outcome, val R², time, settings, best so far."""
        r2 = f"val R² {self.val_r2:.3f}" if self.val_r2 is not None else "no val R²"
        what = {"pruned": f"pruned at step {self.last_step}", "complete": f"{self.steps} steps",
                "fail": f"failed ({self.error or 'interrupted'})"}.get(self.state, self.state)
        secs = f", {self.seconds:.0f} s" if self.seconds is not None else ""
        top = f" | best {best.val_r2:.3f} (trial {best.number})" if best is not None and best.val_r2 is not None else ""
        return f"trial {self.number}: {what}, {r2}{secs} | {format_values(self.values)}{top}"


def format_values(v: dict[str, Any]) -> str:
    """The searched settings in one short line."""
    if not v:
        return ""
    return (f"lr={v['lr']:.2g} weight_decay={v['weight_decay']:.2g} dropout={v['model.dropout']:.2f} "
            f"window={v['model.window']:g}s latent_step={v['model.latent_step']:g} dim={v['model.dim']} "
            f"depth={v['model.depth']}")


def write_summary(rows: list[TrialRow], best: TrialRow | None, run_dir: Path) -> tuple[Path, Path]:
    """trials.csv (one row per trial) and trials.json (the same plus each trial's val_r2 per step)."""
    keys = list(SEARCHED)
    csv_path, json_path = run_dir / "trials.csv", run_dir / "trials.json"
    with open(csv_path.with_suffix(".csv.tmp"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["trial", "state", "val_r2", "steps", "last_step", "seconds", *keys])
        for r in rows:
            w.writerow([r.number, r.state, "" if r.val_r2 is None else f"{r.val_r2:.6f}", r.steps or "",
                        "" if r.last_step is None else r.last_step, "" if r.seconds is None else f"{r.seconds:.1f}",
                        *[r.values.get(k, "") for k in keys]])
    csv_path.with_suffix(".csv.tmp").replace(csv_path)
    doc = {"metric": f"{METRIC} (R² of the valid split; the test split is not used)",
           "best": None if best is None else {"trial": best.number, "val_r2": best.val_r2, "values": best.values},
           "trials": [{"trial": r.number, "state": r.state, "val_r2": r.val_r2, "steps": r.steps,
                       "last_step": r.last_step, "seconds": r.seconds, "values": r.values, "error": r.error,
                       "val_r2_per_step": {str(k): v for k, v in r.intermediate.items()}} for r in rows]}
    tmp = json_path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(doc, indent=1))
    tmp.replace(json_path)
    return csv_path, json_path


def plot_search(rows: list[TrialRow], path: Path, floor: float = -1.0) -> Path:
    """search.png: best val R² of each trial by trial number (pruned trials marked, best so far as a
    line), and each trial's val R² against the training step. Values below `floor` are drawn at it."""
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    def y(r: TrialRow) -> float:  # no finite value (diverged): drawn at the floor
        return max(r.val_r2, floor) if r.val_r2 is not None and math.isfinite(r.val_r2) else floor

    styles = {"complete": ("o", "tab:blue", "completed"), "pruned": ("x", "tab:orange", "pruned (best value reached)")}
    for state, (marker, colour, label) in styles.items():
        sel = [r for r in rows if r.state == state]
        if sel:
            ax.scatter([r.number for r in sel], [y(r) for r in sel], marker=marker, color=colour, label=label, zorder=3)
    done = sorted((r for r in rows if r.state == "complete" and r.val_r2 is not None and math.isfinite(r.val_r2)),
                  key=lambda r: r.number)
    if done:
        xs, best, ys = [], -math.inf, []
        for r in done:
            best = max(best, r.val_r2)
            xs.append(r.number)
            ys.append(max(best, floor))
        xs.append(max(r.number for r in rows))
        ys.append(ys[-1])
        ax.step(xs, ys, where="post", color="tab:green", label="best so far")
    failed = [r.number for r in rows if r.state == "fail"]
    if failed:
        ax.scatter(failed, [floor] * len(failed), marker="v", color="tab:red", label="failed", zorder=3)
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.set_xlabel("trial")
    ax.set_ylabel("val R² (valid split)")
    ax.set_title("search")
    ax.legend(loc="best", fontsize=8)
    ax.grid(alpha=0.3)
    top = max(done, key=lambda r: r.val_r2) if done else None
    for r in rows:
        if not r.intermediate:
            continue
        steps, vals = zip(*sorted(r.intermediate.items()))
        vals = [max(v, floor) if math.isfinite(v) else floor for v in vals]
        if r is top:
            ax2.plot(steps, vals, color="tab:green", lw=2.5, marker="o", ms=3, label=f"best (trial {r.number})", zorder=3)
        elif r.state == "pruned":
            ax2.plot(steps, vals, color="tab:orange", ls="--", lw=1, marker="x", ms=4)
        else:
            ax2.plot(steps, vals, color="tab:blue", lw=1, alpha=0.6, marker="o", ms=2)
    ax2.set_xlabel("training step")
    ax2.set_ylabel(f"val R² (below {floor:g}: drawn at {floor:g})")
    ax2.set_title("val R² per validation (dashed: pruned)")
    ax2.grid(alpha=0.3)
    if top is not None:
        ax2.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


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


@contextmanager
def _quiet():
    """Silence Lightning's INFO lines and Optuna's logs (one progress line per trial replaces them; a failed
    trial's error is in its line, trials.json and the study)."""
    names = ("lightning.pytorch", "lightning.fabric", "optuna")
    levels = {n: logging.getLogger(n).level for n in names}
    for n in names:
        logging.getLogger(n).setLevel(logging.ERROR if n == "optuna" else logging.WARNING)
    try:
        yield
    finally:
        for n, level in levels.items():
            logging.getLogger(n).setLevel(level)


def _spec(data: SessionDataset, base: dict) -> dict:
    """What a study is of: the sessions and the base config (max_minutes aside: each trial sets its own)."""
    cfg = {k: v for k, v in base.items() if k != "max_minutes"}
    return {"sessions": sorted(data.ids), "base_config": json.loads(json.dumps(cfg))}


def open_study(run_dir: Path, data: SessionDataset, base: dict, startup_trials: int, warmup_steps: int) -> optuna.Study:
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
            raise TuneError(f"{run_dir} holds a study of other {what}; resume with the same --data, --config and "
                            "overrides, or tune into a new folder")
    n_before = len(probe.trials) if probe is not None else 0
    sampler = optuna.samplers.TPESampler(seed=int(base["seed"]) + n_before, multivariate=True,
                                         n_startup_trials=5)
    pruner = optuna.pruners.MedianPruner(n_startup_trials=startup_trials, n_warmup_steps=warmup_steps)
    study = optuna.create_study(storage=storage, study_name=STUDY, direction="maximize", sampler=sampler,
                                pruner=pruner, load_if_exists=True)
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
    `startup_trials` finished trials, from the second validation and a fifth of max_steps on). `enqueue`: Optuna parameters to try first
    (names of `search_space`). Writes optuna.db, best.yaml, search.png, trials.csv and trials.json into
    run_dir; trials/NNNN/ hold each trial's logs (and the best trial's model).
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
    with _quiet():
        warmup = int(base["steps_per_epoch"]) + 1  # never at the first validation
        if not is_auto(base["max_steps"]):  # nor before a fifth of the run ("auto": chosen per trial by the recipe)
            warmup = max(warmup, int(base["max_steps"]) // 5)
        study = open_study(run_dir, data, base, startup_trials, warmup)
        for params in enqueue or []:
            study.enqueue_trial(params)
        failures: list[str] = []

        def objective(trial: optuna.Trial) -> float:
            values = suggest(trial, base)
            cfg = with_values(base, values)
            cfg["max_minutes"] = clock["limit"] / 60
            trial.set_user_attr("values", values)
            trial_dir = run_dir / "trials" / f"{trial.number:04d}"
            shutil.rmtree(trial_dir, ignore_errors=True)  # a trial number is never reused; leftovers are stale
            reporter = ReportValR2(trial)
            try:
                result = train(data, cfg, trial_dir, devices=1, accelerator=accelerator, progress=False,
                               callbacks=[reporter])
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
        raise TuneError(f"no trial finished with a val_r2 ({detail}); raise --budget-minutes or lower "
                        "steps_per_epoch so a trial reaches a validation")
    csv_path, json_path, plot, best_yaml = _write_outputs(run_dir, rows, best, base, preset)
    return TuneResult(run_dir, run_dir / "optuna.db", best_yaml, plot, (csv_path, json_path), best, current_values(base),
                      rows, new, time.monotonic() - t0)


def _keep_best_model(study: optuna.Study, best: TrialRow | None) -> None:
    """Only the best trial keeps its model file (each trial's logs stay)."""
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)):
        model = t.user_attrs.get("model")
        if model and (best is None or t.number != best.number):
            Path(model).unlink(missing_ok=True)


def _write_outputs(run_dir: Path, rows: list[TrialRow], best: TrialRow | None, base: dict,
                   preset: str) -> tuple[Path, Path, Path, Path | None]:
    csv_path, json_path = write_summary(rows, best, run_dir)
    plot = plot_search(rows, run_dir / "search.png")
    best_yaml = None
    if best is not None:
        best_yaml = run_dir / "best.yaml"
        n = sum(r.state in ("complete", "pruned") for r in rows)
        write_best_yaml(best_yaml, with_values(base, best.values), preset,
                        f"spiketok tune: trial {best.number}, val R² {best.val_r2:.4f} (valid split), best of {n} trials\n"
                        f"train with: spiketok train --config {best_yaml} --data ... --out ...")
    return csv_path, json_path, plot, best_yaml
