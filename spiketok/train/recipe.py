"""The default recipe: settings left at "auto" are chosen from the data in front of us, and said why.

A setting a user gives (config file or key=value) always wins; only "auto" values are chosen here.
Steps, warm-up, batch size and early-stopping patience follow from how much training data there is;
the context window is chosen on the validation split by short pilot runs (`train.run.pilot_windows`).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..data.storage import SessionDataset
from ..schema import TrainConfig

AUTO = "auto"
WINDOWS = (0.5, 1.0, 2.0, 4.0)  # context windows the pilots compare (seconds)
PASSES = 200  # passes over the train split in a run at most (early stopping usually ends it sooner)
MIN_STEPS, MAX_STEPS = 1000, 10000
TOKENS_PER_BATCH = 50_000  # batch size x input tokens per window: the cost of a step, whatever the data
MIN_BATCH, MAX_BATCH = 16, 64
CHECK_PASSES = 40  # a validation check (and checkpoint) at least every this many passes over the train split
MIN_CHECK_STEPS, MAX_CHECK_STEPS = 10, 100  # ... and every 10 to 100 steps
PILOT_FRACTION = 0.15  # a pilot run gets this share of the full run's steps
DEFAULT_WINDOW = 1.0  # kept unless the pilots separate (the paper's context window)


@dataclass
class RecipeChoice:
    """What the recipe set for settings left at "auto", and the reason for each (written to the run folder)."""

    settings: dict[str, float | int] = field(default_factory=dict)
    reasons: dict[str, str] = field(default_factory=dict)
    pilots: dict[str, float | None] = field(default_factory=dict)  # window (s) -> best validation R²
    pilot_spreads: dict[str, float | None] = field(default_factory=dict)  # window (s) -> change over its last check

    def set(self, cfg: TrainConfig, key: str, value, reason: str) -> TrainConfig:
        """cfg with `value` at dotted `key` (a copy), and why remembered."""
        self.settings[key] = value
        self.reasons[key] = reason
        return cfg.set(key, value)

    def fill(self, cfg: TrainConfig, key: str, choose: Callable[[], tuple[Any, str]]) -> TrainConfig:
        """cfg with `key` set by `choose()` (a value and why) where it is `auto`; unchanged otherwise."""
        if not is_auto(cfg.get(key)):
            return cfg
        value, reason = choose()
        return self.set(cfg, key, value, reason)

    def apply(self, cfg: TrainConfig) -> TrainConfig:
        """cfg with every setting chosen here."""
        for key, value in self.settings.items():
            cfg = cfg.set(key, value)
        return cfg

    def to_dict(self) -> dict:
        return asdict(self)

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_dict(), indent=2))

    @classmethod
    def load(cls, path: Path) -> RecipeChoice:
        return cls(**json.loads(path.read_text()))

    def summary(self) -> list[str]:
        """One line per chosen setting: `key = value: reason`."""
        return [f"{k} = {v}: {self.reasons[k]}" for k, v in self.settings.items()]


@dataclass(frozen=True)
class PilotScore:
    """One window pilot's validation R² curve (one value per validation check, in step order)."""

    curve: tuple[float, ...]

    @property
    def best(self) -> float | None:
        return max(self.curve) if self.curve else None

    @property
    def spread(self) -> float | None:
        """How much the pilot's validation R² still moved at its last check: the noise a difference between
        pilots must exceed (None with fewer than two checks)."""
        return abs(self.curve[-1] - self.curve[-2]) if len(self.curve) >= 2 else None


def choose_window(pilots: dict[str, PilotScore]) -> tuple[float, str]:
    """The window the pilots support, and why: the best pilot's window only when every compared pilot is past
    warm-up (its best validation R² above 0, better than predicting the mean) and the best beats the default
    window by more than either one's spread; otherwise DEFAULT_WINDOW stands."""
    default = f"{DEFAULT_WINDOW:g}"
    listing = ", ".join(
        f"{w} s {'-' if p.best is None else f'{p.best:.3f}'}" + ("" if p.spread is None else f" (±{p.spread:.3f})")
        for w, p in pilots.items()
    )
    if default not in pilots:
        raise ValueError(f"the pilots must include the default {default} s window, got {list(pilots)}")
    scored = {w: p for w, p in pilots.items() if p.best is not None}
    if default not in scored:
        return DEFAULT_WINDOW, f"the default: the {default} s pilot has no validation score ({listing})"
    best = max(scored, key=lambda w: (scored[w].best, -float(w)))
    if best == default:
        return DEFAULT_WINDOW, f"the default, also the pilots' best validation R²: {listing}"
    warming = [w for w in (best, default) if scored[w].best <= 0]
    if warming:
        return DEFAULT_WINDOW, (
            f"the default: the {' and '.join(warming)} s pilot{'s are' if len(warming) > 1 else ' is'}"
            f" still in warm-up (validation R² at most 0), so the pilots cannot tell ({listing})"
        )
    gain = scored[best].best - scored[default].best
    spread = max(scored[best].spread or 0.0, scored[default].spread or 0.0)
    if gain <= spread:
        return DEFAULT_WINDOW, (
            f"the default: the best pilot ({best} s) beats it by {gain:.3f}, within the pilots' "
            f"spread of {spread:.3f} at their last check ({listing})"
        )
    return (
        float(best),
        f"best validation R² of the pilots by {gain:.3f} over the {default} s default, more than "
        f"their spread of {spread:.3f}: {listing}",
    )


def is_auto(value) -> bool:
    return isinstance(value, str) and value.lower() == AUTO


def longest_train_interval(data: SessionDataset) -> float:
    """The longest interval of any train split: windows longer than it are cut to it, so they add nothing."""
    return max(float((s.splits["train"].end - s.splits["train"].start).max(initial=0.0)) for s in data)


def typical_train_interval(data: SessionDataset) -> float:
    """Median length of the train splits' intervals (trials, or blocks of continuous recordings)."""
    lengths = np.concatenate([s.splits["train"].end - s.splits["train"].start for s in data])
    return float(np.median(lengths)) if len(lengths) else 0.0


def tokens_per_window(data: SessionDataset, length: float, sample: int = 50) -> float:
    """Input tokens of a `length` s window inside the train split, averaged over sessions: its spikes (rate
    measured on up to `sample` train intervals, since gaps between trials may hold none) plus a start and an
    end token per unit."""
    per_session = []
    for s in data:
        iv = s.splits["train"]
        pick = np.linspace(0, len(iv) - 1, min(sample, len(iv))).astype(int)
        spikes = sum(len(s.slice(float(iv.start[i]), float(iv.end[i]), behavior=[]).spike_times) for i in pick)
        seconds = float((iv.end[pick] - iv.start[pick]).sum())
        per_session.append(spikes / max(seconds, 1e-9) * length + 2 * s.n_units)
    return float(np.mean(per_session))


def window_settings(window: float, backbone: str = "perceiver") -> dict[str, float]:
    """The model settings that go with a context window: latent grid and the rotary's longest period. A
    recurrent model's latent step is its chunk length (the size's, e.g. 50 ms), which the window does not change."""
    settings = {"model.window": window, "model.t_max": max(4.0, 2 * window)}
    if backbone != "recurrent":
        settings["model.latent_step"] = max(0.125, window / 16)
    return settings


def resolve_schedule(
    cfg: TrainConfig, data: SessionDataset, targets: dict[str, str], choice: RecipeChoice
) -> TrainConfig:
    """cfg with auto batch size, steps, validation interval, warm-up and patience filled from the amount of
    training data (each choice and its reason recorded in `choice`)."""
    window = float(cfg.model.window)
    seconds = sum(float((s.splits["train"].end - s.splits["train"].start).sum()) for s in data)
    effective = min(window, typical_train_interval(data))  # a window never reaches past its interval
    passes = lambda: seconds / (int(cfg.batch_size) * effective)  # noqa: E731  passes over train per step

    def batch_size() -> tuple[int, str]:
        tokens = tokens_per_window(data, effective)
        batch = int(np.clip(round(TOKENS_PER_BATCH / tokens), MIN_BATCH, MAX_BATCH))
        why = f"about {TOKENS_PER_BATCH:,} input tokens per batch ({tokens:,.0f} per {effective:.2g} s window)"
        return batch, f"{why}, within {MIN_BATCH}-{MAX_BATCH}"

    def max_steps() -> tuple[int, str]:
        steps = int(np.clip(round(PASSES * passes(), -2), MIN_STEPS, MAX_STEPS))
        return steps, (
            f"about {PASSES} passes over the {seconds:.0f} s train split (batches of {cfg.batch_size} x "
            f"{effective:.2g} s), within {MIN_STEPS}-{MAX_STEPS}; early stopping ends it sooner"
        )

    def steps_per_epoch() -> tuple[int, str]:
        per = int(np.clip(round(CHECK_PASSES * passes()), MIN_CHECK_STEPS, MAX_CHECK_STEPS))
        return per, (
            f"a validation check and checkpoint every {per} steps: at most {CHECK_PASSES} passes over the train "
            f"split apart (so early stopping can catch a small data set's best point), every "
            f"{MIN_CHECK_STEPS}-{MAX_CHECK_STEPS} steps"
        )

    def patience() -> tuple[int, str]:
        checks = int(cfg.max_steps) / int(cfg.steps_per_epoch)
        why = "validation checks without a better validation R² before stopping: a quarter of the run, at least 5"
        return int(max(5, round(0.25 * checks))), why

    cfg = choice.fill(cfg, "batch_size", batch_size)  # each in turn: later choices read the earlier ones
    cfg = choice.fill(cfg, "max_steps", max_steps)
    cfg = choice.fill(cfg, "steps_per_epoch", steps_per_epoch)
    cfg = choice.fill(cfg, "warmup_steps", lambda: (max(10, int(cfg.max_steps) // 20), "5% of the steps"))
    return choice.fill(cfg, "patience", patience)


def window_candidates(data: SessionDataset) -> list[float]:
    """Windows worth comparing: longer ones than the longest training interval behave as that interval."""
    longest = longest_train_interval(data)
    cands = [w for w in WINDOWS if w <= longest + 1e-9]
    longer = [w for w in WINDOWS if w > longest + 1e-9]
    return cands + longer[:1]  # one window covering whole intervals, if any is longer
