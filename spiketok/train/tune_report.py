"""What `tune` writes: trials.csv / trials.json, the search plot, and best.yaml."""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from optuna.trial import FrozenTrial, TrialState

from ..schema import TrainConfig
from .config import PRESETS, load_config
from .tune_space import METRIC, SEARCHED

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
    def of(cls, t: FrozenTrial) -> TrialRow:
        inter = {int(k): float(v) for k, v in sorted(t.intermediate_values.items())}
        finite = [v for v in inter.values() if math.isfinite(v)]
        best = t.value if t.state == TrialState.COMPLETE else (max(finite) if finite else None)
        best = None if t.state == TrialState.FAIL else best
        return cls(
            t.number,
            t.state.name.lower(),
            best,
            t.user_attrs.get("steps"),
            max(inter) if inter else None,
            t.user_attrs.get("seconds"),
            dict(t.user_attrs.get("values", {})),
            inter,
            t.user_attrs.get("error"),
        )

    def line(self, best: TrialRow | None) -> str:
        """A one-line progress report: outcome, val R², time, settings, best so far."""
        r2 = f"val R² {self.val_r2:.3f}" if self.val_r2 is not None else "no val R²"
        what = {
            "pruned": f"pruned at step {self.last_step}",
            "complete": f"{self.steps} steps",
            "fail": f"failed ({self.error or 'interrupted'})",
        }.get(self.state, self.state)
        secs = f", {self.seconds:.0f} s" if self.seconds is not None else ""
        top = f" | best {best.val_r2:.3f} (trial {best.number})" if best is not None and best.val_r2 is not None else ""
        return f"trial {self.number}: {what}, {r2}{secs} | {format_values(self.values)}{top}"


def format_values(v: dict[str, Any]) -> str:
    """The searched settings in one short line."""
    if not v:
        return ""
    return (
        f"lr={v['lr']:.2g} weight_decay={v['weight_decay']:.2g} dropout={v['model.dropout']:.2f} "
        f"window={v['model.window']:g}s latent_step={v['model.latent_step']:g} dim={v['model.dim']} "
        f"depth={v['model.depth']}"
    )


def write_summary(rows: list[TrialRow], best: TrialRow | None, run_dir: Path) -> tuple[Path, Path]:
    """trials.csv (one row per trial) and trials.json (the same plus each trial's val_r2 per step)."""
    keys = list(SEARCHED)
    csv_path, json_path = run_dir / "trials.csv", run_dir / "trials.json"
    with open(csv_path.with_suffix(".csv.tmp"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["trial", "state", "val_r2", "steps", "last_step", "seconds", *keys])
        for r in rows:
            w.writerow(
                [
                    r.number,
                    r.state,
                    "" if r.val_r2 is None else f"{r.val_r2:.6f}",
                    r.steps or "",
                    "" if r.last_step is None else r.last_step,
                    "" if r.seconds is None else f"{r.seconds:.1f}",
                    *[r.values.get(k, "") for k in keys],
                ]
            )
    csv_path.with_suffix(".csv.tmp").replace(csv_path)
    doc = {
        "metric": f"{METRIC} (R² of the valid split; the test split is not used)",
        "best": None if best is None else {"trial": best.number, "val_r2": best.val_r2, "values": best.values},
        "trials": [
            {
                "trial": r.number,
                "state": r.state,
                "val_r2": r.val_r2,
                "steps": r.steps,
                "last_step": r.last_step,
                "seconds": r.seconds,
                "values": r.values,
                "error": r.error,
                "val_r2_per_step": {str(k): v for k, v in r.intermediate.items()},
            }
            for r in rows
        ],
    }
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
    done = sorted(
        (r for r in rows if r.state == "complete" and r.val_r2 is not None and math.isfinite(r.val_r2)),
        key=lambda r: r.number,
    )
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
            ax2.plot(
                steps, vals, color="tab:green", lw=2.5, marker="o", ms=3, label=f"best (trial {r.number})", zorder=3
            )
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


def write_best_yaml(path: Path, cfg: TrainConfig, preset: str, comment: str) -> None:
    """`base: PRESET` and every setting of `cfg` that differs from the preset (what `load_config` reads)."""
    body = {"base": preset, **_diff(cfg.to_dict(), load_config(preset).to_dict())}
    text = "".join(f"# {line}\n" for line in comment.splitlines()) + yaml.safe_dump(body, sort_keys=False)
    tmp = path.with_suffix(".yaml.tmp")
    tmp.write_text(text)
    tmp.replace(path)
