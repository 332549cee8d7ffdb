"""Values an inference forward computes from the weights alone (and a few small inputs), kept between calls.

A window's forward recomputes parts that do not depend on its spikes: the keys and values of every
(unit, token type) pair, the latents' queries and rotations, the output queries. On a small model these
small operations are a tenth of the latency. `WeightCache` keeps them while the weights they came from are
unchanged: the same parameter objects (held by weak reference, so a replaced or freed one never matches) at
the same version (bumped by every in-place change: optimiser steps, `load_state_dict`, `torch.no_grad()`
edits), so any change rebuilds the value on the next call.
Used only without autograd; training always recomputes.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn


def caching_allowed() -> bool:
    """True where a cached value may stand in for a computation: no autograd, not being traced or scripted."""
    return not (torch.is_grad_enabled() or torch.jit.is_tracing() or torch.jit.is_scripting())


def _params(modules: Iterable[nn.Module]) -> list[torch.Tensor]:
    return [p for m in modules for p in m.parameters()]


def _unchanged(marks: list[tuple[weakref.ref, int]], params: list[torch.Tensor]) -> bool:
    """True if `params` are the very tensors `marks` were taken from, at the same versions."""
    return len(marks) == len(params) and all(r() is p and v == p._version for (r, v), p in zip(marks, params))


def _same(a: tuple[torch.Tensor, ...], b: tuple[torch.Tensor, ...]) -> bool:
    return len(a) == len(b) and all(x.shape == y.shape and torch.equal(x, y) for x, y in zip(a, b))


class WeightCache:
    """Named values computed from `modules`' weights and small `inputs`, rebuilt when either changes."""

    def __init__(self) -> None:
        self._entries: dict[str, tuple[list[tuple[weakref.ref, int]], tuple[torch.Tensor, ...], Any]] = {}

    def get(
        self, name: str, modules: Iterable[nn.Module], inputs: tuple[torch.Tensor, ...], build: Callable[[], Any]
    ) -> Any:
        """The value stored under `name` if `modules`' weights and `inputs` are what it was built from, else
        `build()` (stored for the next call). Inputs are compared by value: keep them small."""
        params = _params(modules)
        entry = self._entries.get(name)
        if entry is not None and _unchanged(entry[0], params) and _same(entry[1], inputs):
            return entry[2]
        value = build()
        marks = [(weakref.ref(p), p._version) for p in params]  # after build: it must not change them
        self._entries[name] = (marks, tuple(x.clone() for x in inputs), value)
        return value

    def clear(self) -> None:
        self._entries.clear()

    # A copied or pickled model has its own weights: nothing here is theirs (and weak references do not pickle).
    def __deepcopy__(self, memo: dict) -> WeightCache:
        return WeightCache()

    def __getstate__(self) -> dict:
        return {}

    def __setstate__(self, state: dict) -> None:
        self._entries = {}
