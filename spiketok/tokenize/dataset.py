"""Windows of sessions as tokenized samples: the map-style dataset that training and adaptation read.

Keys are WindowSpec (session, t0, t1, draw) from the samplers; each item is the tokenizer's arrays
of one window (see SpikeTokenizer.__call__), ready for `collate`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from torch.utils.data import Dataset

from ..data.storage import SessionDataset
from ..data.windows import WindowSpec, causal_window
from .batch import WindowTokens
from .tokenizer import SpikeTokenizer

if TYPE_CHECKING:
    from ..model.poyo import POYO


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
    def for_model(cls, model: POYO, data: SessionDataset, targets: dict[str, str], **kw) -> WindowDataset:
        tasks = model.task_names
        return cls(
            data=data,
            model_units={s.id: model.unit_emb.lookup(s.unit_ids).numpy() for s in data},
            session_index={s.id: int(model.session_emb.lookup([s.id])[0]) for s in data},
            task_index={sid: tasks.index(t) for sid, t in targets.items()},
            targets=targets,
            tokenizer=model.tokenizer(),
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
        sample = self.tokenizer(
            w,
            self.model_units[spec.session],
            self.session_index[spec.session],
            self.task_index[spec.session],
            target,
            keep_units=keep,
        )
        return sample
