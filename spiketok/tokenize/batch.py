"""What the model reads: one tokenized window (`WindowTokens`) and a padded batch of them (`Batch`).

`collate` pads windows to the longest with masks, so each window's output equals its output alone.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import torch


@dataclass
class WindowTokens:
    """One window as the tokenizer makes it (numpy arrays; times in seconds from the window's start).

    input_units    (n_tokens,)      int64    vocabulary row of each token's unit
    input_times    (n_tokens,)      float64  spike time; 0 for START, the window length for END tokens
    input_types    (n_tokens,)      int64    token type: SPIKE, START or END
    latent_ids     (n_latents,)     int64    latent embedding row, repeated every latent step
    latent_times   (n_latents,)     float64  centre of each latent's step
    output_times   (n_queries,)     float64  time of each output query (a behaviour sample)
    output_values  (n_queries, D)   float32  target (0 where unknown)
    output_weights (n_queries,)     float32  weight in the loss and scores (0: not scored)
    output_sessions(n_queries,)     int64    session embedding row of each query
    output_tasks   (n_queries,)     int64    readout index of each query
    """

    input_units: np.ndarray
    input_times: np.ndarray
    input_types: np.ndarray
    latent_ids: np.ndarray
    latent_times: np.ndarray
    output_times: np.ndarray
    output_values: np.ndarray
    output_weights: np.ndarray
    output_sessions: np.ndarray
    output_tasks: np.ndarray


@dataclass
class Batch:
    """A padded batch of windows (torch tensors), as `POYO.forward` takes it.

    input_units    (batch, n_tokens)          long    vocabulary row of each token's unit (0 on padding)
    input_times    (batch, n_tokens)          double  seconds from the window's start
    input_types    (batch, n_tokens)          long    token type: SPIKE, START or END
    input_mask     (batch, n_tokens)          bool    True on real tokens; padding is masked out of attention
    latent_ids     (batch, n_latents)         long    latent embedding row
    latent_times   (batch, n_latents)         double  centre of each latent's step
    output_times   (batch, n_queries)         double  time of each output query
    output_values  (batch, n_queries, D)      float   targets, D = the widest task in the batch (0-padded)
    output_weights (batch, n_queries)         float   loss weight (0 on padding and unscored samples)
    output_sessions(batch, n_queries)         long    session embedding row of each query
    output_tasks   (batch, n_queries)         long    readout index of each query
    output_mask    (batch, n_queries)         bool    True on real queries
    """

    input_units: torch.Tensor
    input_times: torch.Tensor
    input_types: torch.Tensor
    input_mask: torch.Tensor
    latent_ids: torch.Tensor
    latent_times: torch.Tensor
    output_times: torch.Tensor
    output_values: torch.Tensor
    output_weights: torch.Tensor
    output_sessions: torch.Tensor
    output_tasks: torch.Tensor
    output_mask: torch.Tensor

    def __len__(self) -> int:
        """Number of windows."""
        return self.input_units.shape[0]

    def _map(self, fn) -> Batch:
        return Batch(**{f.name: fn(getattr(self, f.name)) for f in fields(self)})

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Batch:
        """The batch on `device` (Lightning calls this to move batches, as it does for tensors)."""
        return self._map(lambda t: t.to(device, non_blocking=non_blocking))

    def pin_memory(self) -> Batch:
        """Page-locked copies, for a DataLoader with pin_memory=True."""
        return self._map(lambda t: t.pin_memory())


_PADDED = (
    "input_units",
    "input_times",
    "input_types",
    "latent_ids",
    "latent_times",
    "output_times",
    "output_weights",
    "output_sessions",
    "output_tasks",
)


def _pad(arrays: list[np.ndarray]) -> torch.Tensor:
    """(batch, longest, *rest) zero-padded stack of arrays that differ in their first (and last) length."""
    shape = tuple(max(a.shape[d] for a in arrays) for d in range(arrays[0].ndim))
    buf = np.zeros((len(arrays),) + shape, dtype=arrays[0].dtype)
    for i, a in enumerate(arrays):
        buf[(i,) + tuple(slice(0, n) for n in a.shape)] = a
    return torch.from_numpy(buf)


def _mask(lengths: list[int]) -> torch.Tensor:
    return torch.arange(max(lengths))[None, :] < torch.tensor(lengths)[:, None]


def collate(windows: list[WindowTokens]) -> Batch:
    """Pad windows into one Batch; padded input tokens are masked out, padded outputs have weight 0."""
    padded = {key: _pad([getattr(w, key) for w in windows]) for key in _PADDED}
    return Batch(
        **padded,
        input_mask=_mask([len(w.input_units) for w in windows]),
        output_values=_pad([w.output_values.astype(np.float32, copy=False) for w in windows]),
        output_mask=_mask([len(w.output_times) for w in windows]),
    )
