"""Embeddings keyed by string ids (units, sessions) that a trained model can extend."""

from __future__ import annotations

from collections.abc import Container, Iterable, Sequence

import torch
from torch import nn

from ..errors import SpiketokError


class UnknownIdError(SpiketokError, KeyError):
    """An id the model has never seen: adapt the model to that session first."""

    def __str__(self) -> str:
        return str(self.args[0])


ADAPT_FIRST = "adapt the model to that session first (`spiketok adapt` or spiketok.adapt)"


def require_known(ids: Sequence[str], known: Container[str], what: str, remedy: str) -> None:
    """Raise UnknownIdError naming how many of `ids` are not in `known` (and the first), `what` they are and
    the `remedy`."""
    missing = [i for i in ids if i not in known]
    if missing:
        raise UnknownIdError(f"{len(missing)} {what} (first: {missing[0]!r}); {remedy}")


class VocabEmbedding(nn.Module):
    """A (n_ids, dim) embedding table whose rows are addressed by string ids.

    `extend` appends rows for new ids (initialised fresh, old rows untouched); the ids travel in the
    state dict as extra state, so a saved model loads back with its vocabulary.
    """

    def __init__(self, dim: int, ids: Sequence[str] = (), kind: str = "unit", init_std: float = 0.02):
        super().__init__()
        self.dim, self.kind, self.init_std = dim, kind, init_std
        self.ids: list[str] = []
        self.index: dict[str, int] = {}
        self.weight = nn.Parameter(torch.empty(0, dim))
        self.extend(ids)

    def __len__(self) -> int:
        return len(self.ids)

    def extend(self, ids: Iterable[str]) -> list[str]:
        """Add rows for the ids not yet known; returns the ids added."""
        new = [i for i in dict.fromkeys(ids) if i not in self.index]
        if not new:
            return []
        rows = torch.randn(len(new), self.dim, device=self.weight.device, dtype=self.weight.dtype) * self.init_std
        with torch.no_grad():
            self.weight = nn.Parameter(torch.cat([self.weight.detach(), rows]), requires_grad=self.weight.requires_grad)
        for i in new:
            self.index[i] = len(self.ids)
            self.ids.append(i)
        return new

    def lookup(self, ids: Sequence[str]) -> torch.Tensor:
        """Row indices (len(ids),) of the given ids; unknown ids raise UnknownIdError."""
        require_known(ids, self.index, f"{self.kind} id(s) unknown to this model", ADAPT_FIRST)
        return torch.tensor([self.index[i] for i in ids], dtype=torch.long)

    def forward(self, index: torch.Tensor) -> torch.Tensor:
        return nn.functional.embedding(index, self.weight)

    def get_extra_state(self) -> dict:
        return {"ids": list(self.ids)}

    def set_extra_state(self, state: dict) -> None:
        self.ids = list(state["ids"])
        self.index = {i: k for k, i in enumerate(self.ids)}

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # Resize to the stored vocabulary before the weights are copied in.
        w = state_dict.get(prefix + "weight")
        if w is not None and w.shape != self.weight.shape:
            self.weight = nn.Parameter(
                torch.empty_like(w, device=self.weight.device), requires_grad=self.weight.requires_grad
            )
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
