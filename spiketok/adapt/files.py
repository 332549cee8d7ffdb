"""What `spiketok adapt` and `spiketok fewshot` run on files: a model file and a prepared session read, the
adaptation or few-shot study (spiketok.adapt) with this layer's scratch trainer, and what they write.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..data.storage import StoredSession
from ..errors import UserError
from ..evaluate.decode import decode_split
from ..model.file import load_model_file, save_model
from ..model.meta import Adaptation
from ..model.poyo import POYO
from .data import as_session
from .fewshot import FewShotRun, few_shot_study, plot_study, write_csv
from .run import AdaptConfig, adapt

PICKS = ("first", "random")


@dataclass
class Adapted:
    """The adapted model (written), the session it learned, its adaptation record, and its test R² per dimension
    (None when not asked for or the session has no test split)."""

    model: POYO
    session: StoredSession
    record: Adaptation
    test_r2: np.ndarray | None


@dataclass
class FewShotStudy:
    """The few-shot runs, the session, and the files written: the summary and every-run tables and the plot."""

    runs: list[FewShotRun]
    session: StoredSession
    tables: tuple[Path, Path]
    plot: Path


def _inputs(checkpoint: str | Path, session: str | Path, overrides: Sequence[str], pick: str):
    """The adaptation settings, the model and the prepared session, each checked (spiketok's errors)."""
    if pick not in PICKS:
        raise UserError(f"--pick must be 'first' or 'random', not {pick!r}")
    return AdaptConfig.from_overrides(list(overrides)), load_model_file(checkpoint), as_session(session)


def adapt_file(
    checkpoint: str | Path,
    session: str | Path,
    out: str | Path,
    overrides: Sequence[str] = (),
    pick: str = "first",
    evaluate: bool = True,
    **adapt_kw,
) -> Adapted:
    """Adapt the model in `checkpoint` to the prepared session in `session` (`adapt_kw`: mode, n_trials, seconds,
    target, seed; see spiketok.adapt), write it to `out`, and score it on the session's test split."""
    config, model, s = _inputs(checkpoint, session, overrides, pick)
    adapted = adapt(model, s, pick=pick, config=config, **adapt_kw)
    save_model(adapted, out)
    record = adapted.meta.adaptations[-1]
    scored = evaluate and "test" in s.splits
    r2 = decode_split(adapted, s, record.target, "test").r2() if scored else None
    return Adapted(adapted, s, record, r2)


def fewshot_files(
    checkpoint: str | Path,
    session: str | Path,
    out: str | Path,
    counts: Sequence[int],
    seeds: int,
    modes: Sequence[str],
    target: str | None = None,
    pick: str = "random",
    overrides: Sequence[str] = (),
) -> FewShotStudy:
    """The few-shot study of the model in `checkpoint` on the prepared session in `session`; its tables and plot
    go to the folder `out` (the tables after every run, so a study stopped half-way keeps what it measured)."""
    config, model, s = _inputs(checkpoint, session, overrides, pick)
    done: list[FewShotRun] = []

    def save_progress(run: FewShotRun) -> None:
        done.append(run)
        write_csv(done, out)

    runs = few_shot_study(model, s, counts, seeds, list(modes), target, pick, config, on_run=save_progress)
    tables = write_csv(runs, out)
    plot = plot_study(runs, Path(out) / "fewshot.png", title=f"few-shot adaptation to {s.id} ({seeds} seed(s))")
    return FewShotStudy(runs, s, tables, plot)
