"""From prepared sessions to batches: targets, normalisation statistics, window datasets, loaders."""

from __future__ import annotations

from dataclasses import dataclass

import lightning as L
import numpy as np
from torch.utils.data import DataLoader, Dataset

from ..data.samplers import RandomWindowBatchSampler
from ..data.session import Behavior, DataError, Window
from ..data.storage import SessionDataset, StoredSession
from ..data.windows import WindowSpec, causal_windows, sliding_windows
from ..model.poyo import POYO
from ..tokenize import SpikeTokenizer, WindowTokens, collate


def choose_target(session: StoredSession, target: str | None) -> str:
    """The behaviour a session is decoded to: `target` if given, else its only behaviour signal."""
    names = list(session.behavior_info)
    if target is not None:
        for name in target.split(","):
            if name in names:
                return name
        raise DataError(f"{session.path}: no behaviour {target!r}; it has {names}. Set `target` in the config.")
    if len(names) != 1:
        raise DataError(f"{session.path}: {len(names)} behaviour signals {names}; choose one with target=NAME")
    return names[0]


def target_stats(session: StoredSession, target: str, split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """Mean and std (D,) of a target over the samples inside a split that have weight > 0."""
    b = session.behavior(target)
    keep = session.splits[split].contains(b.timestamps) & (b.weights > 0) & np.isfinite(b.values).all(1)
    if keep.sum() < 2:
        raise DataError(f"{session.path}: fewer than 2 usable {target!r} samples in the {split} split")
    v = b.values[keep].astype(np.float64)
    return v.mean(0), v.std(0)


def register_sessions(model: POYO, data: SessionDataset, target: str | None, causal: bool = False) -> dict[str, str]:
    """Add the sessions' units, ids, tasks and normalisation statistics to the model; returns targets."""
    targets = {}
    for s in data:
        if s.end - s.start < model.config.window:
            raise DataError(f"{s.path}: the recording spans {s.end - s.start:.3g} s, shorter than one "
                            f"{model.config.window:g} s context window, so there is no window to learn from; use a "
                            "longer recording, or a shorter window (e.g. model.window=0.5 model.t_max=1)")
        t = choose_target(s, target)
        targets[s.id] = t
        model.unit_emb.extend(s.unit_ids)
        model.session_emb.extend([s.id])
        model.add_task(t, s.behavior_info[t]["dim"])
        if s.id not in model.normalizer.stats or t not in model.normalizer.stats[s.id]:
            mean, std = target_stats(s, t)
            model.normalizer.set(s.id, t, mean, std)
    return targets


@dataclass
class WindowDataset(Dataset):
    """Reads and tokenizes windows given by WindowSpec keys (map-style, keyed by spec)."""

    data: SessionDataset
    model_units: dict[str, np.ndarray]  # session id -> vocabulary row of each local unit
    session_index: dict[str, int]
    task_index: dict[str, int]  # session id -> readout index
    targets: dict[str, str]
    tokenizer: SpikeTokenizer
    unit_dropout: bool = False
    min_units: int = 8
    causal: bool = False
    seed: int = 0

    @classmethod
    def for_model(cls, model: POYO, data: SessionDataset, targets: dict[str, str], **kw) -> "WindowDataset":
        c = model.config
        tasks = model.task_names
        return cls(
            data=data,
            model_units={s.id: model.unit_emb.lookup(s.unit_ids).numpy() for s in data},
            session_index={s.id: int(model.session_emb.lookup([s.id])[0]) for s in data},
            task_index={sid: tasks.index(t) for sid, t in targets.items()},
            targets=targets,
            tokenizer=SpikeTokenizer(c.num_latents_per_step, c.latent_step, c.window),
            **kw,
        )

    def __len__(self) -> int:  # keys come from a sampler
        return 0

    def __getitem__(self, spec: WindowSpec) -> WindowTokens:
        s = self.data[spec.session]
        target = self.targets[spec.session]
        if self.causal:
            w = causal_window(s, spec, target, self.tokenizer.window)
        else:
            w = s.slice(spec.t0, spec.t1, behavior=[target])
        keep = None
        if self.unit_dropout:
            rng = np.random.default_rng([self.seed, spec.draw, int(spec.t0 * 1e6) % (2**32), len(spec.session)])
            n = s.n_units
            k = int(rng.integers(min(self.min_units, n), n + 1))
            keep = np.sort(rng.choice(n, size=k, replace=False))
        sample = self.tokenizer(w, self.model_units[spec.session], self.session_index[spec.session],
                                self.task_index[spec.session], target, keep_units=keep)
        return sample


def unscored_validation(data: SessionDataset, targets: dict[str, str]) -> list[str]:
    """Sessions whose valid split holds no target sample with weight > 0 (their val_loss would be 0)."""
    empty = []
    for s in data:
        b = s.behavior(targets[s.id])
        if not (b.weights[s.splits["valid"].contains(b.timestamps)] > 0).any():
            empty.append(s.id)
    return empty


def causal_window(session: StoredSession, spec: WindowSpec, target: str, length: float) -> Window:
    """The window of a causal model: `length` s of spikes ending exactly at a behaviour sample, which is
    its only output (query at the window end, time `length`).

    Takes the last `target` sample tau in [t0, t1) and returns the window [tau - length, tau). Always full
    length, as a real-time decoder (and `decode_times` for causal models) always has a full window of past
    spikes: when [t0, t1) is shorter (an interval shorter than the window, a validation window at an
    interval's start) the window reaches back before t0, for spikes only; its label stays inside [t0, t1).
    A [t0, t1) without samples comes back as it is, with no outputs.
    """
    w = session.slice(spec.t0, spec.t1, behavior=[target])
    b = w.behavior[target]
    if len(b.timestamps) == 0:
        return w
    end = spec.t0 + float(b.timestamps[-1])
    w = session.slice(end - length, end, behavior=[])
    w.behavior[target] = Behavior(target, np.array([w.length]), b.values[-1:], b.unit, b.dims, b.weights[-1:])
    return w


def eval_windows(data: SessionDataset, split: str, window: float, stride: float, causal: bool = False) -> list[WindowSpec]:
    """Sliding (or causal) windows over a split of every session."""
    make = causal_windows if causal else sliding_windows
    specs: list[WindowSpec] = []
    for s in data:
        if split not in s.splits:
            raise DataError(f"{s.path}: has no {split!r} split (it has {list(s.splits)})")
        specs.extend(make(s.splits[split], window, stride, s.id))
    return specs


def _batches(specs: list[WindowSpec], batch_size: int) -> list[list[WindowSpec]]:
    return [specs[i:i + batch_size] for i in range(0, len(specs), batch_size)]


def train_sampler(data: SessionDataset, window: float, cfg: dict) -> RandomWindowBatchSampler:
    """The sampler of training windows a run with config `cfg` uses (train split of every session)."""
    rates = {s.id: s.n_spikes / max(s.duration, 1e-9) + 2 * s.n_units for s in data}
    intervals = {s.id: s.splits["train"] for s in data}
    return RandomWindowBatchSampler(intervals, window, int(cfg["batch_size"]), int(cfg["steps_per_epoch"]),
                                    seed=int(cfg["seed"]), tokens_per_second=rates)


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
    """Training batches of random windows; validation batches of sliding windows on the valid split."""

    def __init__(self, train_set: WindowDataset, val_set: WindowDataset, cfg: dict):
        super().__init__()
        self.train_set, self.val_set, self.cfg = train_set, val_set, cfg
        window = train_set.tokenizer.window
        self.train_sampler = train_sampler(train_set.data, window, cfg)
        val_specs = eval_windows(val_set.data, "valid", window, cfg["eval_stride"], causal=bool(cfg.get("causal")))
        self.val_batches = _batches(val_specs, cfg["batch_size"])
        self._train_loader: ResumableLoader | None = None

    def _workers(self) -> dict:
        workers = int(self.cfg.get("num_workers", 0))
        return {"collate_fn": collate, "num_workers": workers, "persistent_workers": workers > 0}

    def train_dataloader(self) -> DataLoader:
        if self._train_loader is None:
            self._train_loader = ResumableLoader(self.train_set, batch_sampler=self.train_sampler, **self._workers())
        return self._train_loader

    def val_dataloader(self) -> DataLoader:
        batches = self.val_batches
        trainer = getattr(self, "trainer", None)
        world = trainer.world_size if trainer is not None else 1
        if world > 1 and len(batches) >= world:  # each rank scores its share; metrics are synced
            batches = batches[trainer.global_rank::world]
        return DataLoader(self.val_set, batch_sampler=batches, **self._workers())
