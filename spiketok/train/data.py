"""From prepared sessions to batches: targets, normalisation statistics, window datasets, loaders."""

from __future__ import annotations

from dataclasses import dataclass

import lightning as L
import numpy as np
from torch.utils.data import DataLoader, Dataset

from ..data.samplers import RandomWindowBatchSampler, WindowSpec, causal_windows, sliding_windows
from ..data.session import DataError
from ..data.storage import SessionDataset, StoredSession
from ..model.poyo import POYO
from ..tokenize import SpikeTokenizer, collate


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

    def __getitem__(self, spec: WindowSpec) -> dict[str, np.ndarray]:
        s = self.data[spec.session]
        target = self.targets[spec.session]
        w = s.slice(spec.t0, spec.t1, behavior=[target])
        keep = None
        if self.unit_dropout:
            rng = np.random.default_rng([self.seed, int(spec.t0 * 1e6) % (2**32), len(spec.session)])
            n = s.n_units
            k = int(rng.integers(min(self.min_units, n), n + 1))
            keep = np.sort(rng.choice(n, size=k, replace=False))
        if self.causal:
            # one output query at the window end, from the last behaviour sample
            b = w.behavior[target]
            last = len(b.timestamps) - 1
            sel = slice(last, last + 1) if last >= 0 else slice(0, 0)
            b.timestamps, b.values, b.weights = b.timestamps[sel], b.values[sel], b.weights[sel]
        sample = self.tokenizer(w, self.model_units[spec.session], self.session_index[spec.session],
                                self.task_index[spec.session], target, keep_units=keep)
        return sample


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


class WindowDataModule(L.LightningDataModule):
    """Training batches of random windows; validation batches of sliding windows on the valid split."""

    def __init__(self, train_set: WindowDataset, val_set: WindowDataset, cfg: dict):
        super().__init__()
        self.train_set, self.val_set, self.cfg = train_set, val_set, cfg
        data = train_set.data
        window = train_set.tokenizer.window
        rates = {s.id: s.n_spikes / max(s.duration, 1e-9) + 2 * s.n_units for s in data}
        intervals = {s.id: s.splits["train"] for s in data}
        self.train_sampler = RandomWindowBatchSampler(
            intervals, window, cfg["batch_size"], cfg["steps_per_epoch"], seed=cfg["seed"], tokens_per_second=rates,
        )
        val_specs = eval_windows(val_set.data, "valid", window, cfg["eval_stride"], causal=bool(cfg.get("causal")))
        self.val_batches = _batches(val_specs, cfg["batch_size"])

    def _loader(self, dataset: WindowDataset, batch_sampler) -> DataLoader:
        workers = int(self.cfg.get("num_workers", 0))
        return DataLoader(dataset, batch_sampler=batch_sampler, collate_fn=collate, num_workers=workers,
                          persistent_workers=workers > 0)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, self.train_sampler)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, self.val_batches)
