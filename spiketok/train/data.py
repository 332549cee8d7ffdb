"""From prepared sessions to batches: targets, normalisation statistics, window datasets, loaders."""

from __future__ import annotations

import lightning as L
from torch.utils.data import DataLoader

from ..data.samplers import RandomWindowBatchSampler
from ..data.session import DataError
from ..data.storage import SessionDataset, StoredSession
from ..data.targets import resolve_target
from ..data.windows import WindowSpec, causal_windows, sliding_windows
from ..model.normalize import target_stats  # noqa: F401  (also imported from here)
from ..model.poyo import POYO
from ..schema import TrainConfig
from ..tokenize import Batch, collate
from ..tokenize.dataset import WindowDataset, causal_window  # noqa: F401  (also imported from here)
from .stage import Stage


def choose_target(session: StoredSession, target: str | None) -> str:
    """The behaviour a session is trained on: `target` (comma-separated preferences) if given, else its only one."""
    return resolve_target(session.id, list(session.behavior_info), target)


def register_sessions(model: POYO, data: SessionDataset, target: str | None, causal: bool = False) -> dict[str, str]:
    """Add the sessions' units, ids, tasks and normalisation statistics to the model; returns targets."""
    targets = {}
    for s in data:
        if s.end - s.start < model.config.window:
            raise DataError(
                f"{s.path}: the recording spans {s.end - s.start:.3g} s, shorter than one "
                f"{model.config.window:g} s context window, so there is no window to learn from; use a "
                "longer recording, or a shorter window (e.g. model.window=0.5 model.t_max=1)"
            )
        t = choose_target(s, target)
        targets[s.id] = t
        model.unit_emb.extend(s.unit_ids)
        model.session_emb.extend([s.id])
        model.add_task(t, s.behavior_info[t]["dim"])
        if not model.normalizer.has(s.id, t):
            mean, std = target_stats(s, t)
            model.normalizer.set(s.id, t, mean, std)
    return targets


def unscored_validation(data: SessionDataset, targets: dict[str, str]) -> list[str]:
    """Sessions whose valid split holds no target sample with weight > 0 (their val_loss would be 0)."""
    empty = []
    for s in data:
        b = s.behavior(targets[s.id])
        if not (b.weights[s.splits["valid"].contains(b.timestamps)] > 0).any():
            empty.append(s.id)
    return empty


def eval_windows(
    data: SessionDataset, split: str, window: float, stride: float, causal: bool = False
) -> list[WindowSpec]:
    """Sliding (or causal) windows over a split of every session: the validation windows of `train` and of every
    adaptation stage."""
    make = causal_windows if causal else sliding_windows
    specs: list[WindowSpec] = []
    for s in data:
        if split not in s.splits:
            raise DataError(f"{s.path}: has no {split!r} split (it has {list(s.splits)})")
        specs.extend(make(s.splits[split], window, stride, s.id))
    return specs


def _as_is(batch: Batch) -> Batch:
    return batch


def _batches(specs: list[WindowSpec], batch_size: int) -> list[list[WindowSpec]]:
    return [specs[i : i + batch_size] for i in range(0, len(specs), batch_size)]


def train_sampler(data: SessionDataset, window: float, cfg: TrainConfig | Stage) -> RandomWindowBatchSampler:
    """The sampler of training windows a run (or stage) with config `cfg` uses (train split of every session)."""
    rates = {s.id: s.n_spikes / max(s.duration, 1e-9) + 2 * s.n_units for s in data}
    intervals = {s.id: s.splits["train"] for s in data}
    return RandomWindowBatchSampler(
        intervals,
        window,
        int(cfg.batch_size),
        int(cfg.steps_per_epoch),
        seed=cfg.seed,
        tokens_per_second=rates,
    )


class ResumableLoader(DataLoader):
    """A DataLoader over a RandomWindowBatchSampler whose position is saved in Lightning checkpoints.

    Lightning stores `state_dict()` in every checkpoint and calls `load_state_dict()` before the first
    batch of a resumed run, so a run stopped mid-epoch (SIGTERM, Ctrl-C) continues with the next batch
    of that epoch instead of repeating the epoch's first batches.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._epoch, self._delivered = self.batch_sampler.epoch, 0

    def __iter__(self):
        sampler = self.batch_sampler
        self._epoch, self._delivered = sampler.epoch, sampler.skip
        for batch in super().__iter__():
            self._delivered += 1
            yield batch

    def state_dict(self) -> dict[str, int]:
        """{"epoch", "batches_done"}: where the next batch comes from."""
        if self._delivered >= len(self):
            return {"epoch": self._epoch + 1, "batches_done": 0}
        return {"epoch": self._epoch, "batches_done": self._delivered}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.batch_sampler.epoch = int(state["epoch"])
        self.batch_sampler.skip = int(state["batches_done"])
        self._epoch, self._delivered = self.batch_sampler.epoch, self.batch_sampler.skip


class WindowDataModule(L.LightningDataModule):
    """Training batches of random windows; validation batches of sliding windows on the valid split.

    `keep_valid`: the validation batches are collated once and kept (a short stage validates often on few windows).
    """

    def __init__(self, train_set: WindowDataset, val_set: WindowDataset, stage: Stage, keep_valid: bool = False):
        super().__init__()
        self.train_set, self.val_set, self.stage = train_set, val_set, stage
        window = train_set.tokenizer.window
        self.train_sampler = train_sampler(train_set.data, window, stage)
        val_specs = eval_windows(val_set.data, "valid", window, stage.eval_stride, causal=stage.causal)
        self.val_batches = _batches(val_specs, stage.batch_size)
        self._kept: list[Batch] | None = None
        if keep_valid:
            self._kept = [collate([val_set[s] for s in specs]) for specs in self.val_batches]
        self._train_loader: ResumableLoader | None = None

    @classmethod
    def for_model(
        cls, model: POYO, data: SessionDataset, targets: dict[str, str], stage: Stage, keep_valid: bool = False
    ) -> WindowDataModule:
        """The batches a stage trains and validates `model` on (unit dropout on the training windows only)."""
        train_set = WindowDataset.for_model(
            model,
            data,
            targets,
            unit_dropout=stage.unit_dropout,
            min_units=stage.min_units,
            causal=stage.causal,
            seed=stage.seed,
        )
        val_set = WindowDataset.for_model(model, data, targets, causal=stage.causal)
        return cls(train_set, val_set, stage, keep_valid)

    def _workers(self) -> dict:
        workers = self.stage.num_workers
        return {"collate_fn": collate, "num_workers": workers, "persistent_workers": workers > 0}

    def train_dataloader(self) -> DataLoader:
        if self._train_loader is None:
            self._train_loader = ResumableLoader(self.train_set, batch_sampler=self.train_sampler, **self._workers())
        return self._train_loader

    def val_dataloader(self) -> DataLoader:
        if self._kept is not None:  # batches already collated: handed out as they are
            return DataLoader(self._kept, batch_size=None, collate_fn=_as_is)
        batches = self.val_batches
        trainer = getattr(self, "trainer", None)
        world = trainer.world_size if trainer is not None else 1
        if world > 1 and len(batches) >= world:  # each rank scores its share; metrics are synced
            batches = batches[trainer.global_rank :: world]
        return DataLoader(self.val_set, batch_sampler=batches, **self._workers())
