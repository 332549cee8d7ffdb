"""Pad tokenized windows into one batch, with masks, so each window's output equals its output alone."""

from __future__ import annotations

import numpy as np
import torch

_PAD_1D = ("input_units", "input_times", "input_types", "latent_ids", "latent_times",
           "output_times", "output_weights", "output_sessions", "output_tasks")


def collate(samples: list[dict[str, np.ndarray]]) -> dict[str, torch.Tensor]:
    """Stack samples into (B, max_len) tensors; `input_mask`/`output_mask` mark real entries.

    Padded input tokens are masked out of attention; padded outputs have weight 0.
    """
    out: dict[str, torch.Tensor] = {}
    b = len(samples)
    for key in _PAD_1D:
        arrs = [s[key] for s in samples]
        n = max(len(a) for a in arrs)
        buf = np.zeros((b, n), dtype=arrs[0].dtype)
        for i, a in enumerate(arrs):
            buf[i, : len(a)] = a
        out[key] = torch.from_numpy(buf)
    n_in = [len(s["input_units"]) for s in samples]
    n_out = [len(s["output_times"]) for s in samples]
    out["input_mask"] = torch.arange(max(n_in))[None, :] < torch.tensor(n_in)[:, None]
    out["output_mask"] = torch.arange(max(n_out))[None, :] < torch.tensor(n_out)[:, None]
    d = max(s["output_values"].shape[1] for s in samples)
    vals = np.zeros((b, max(n_out), d), np.float32)
    for i, s in enumerate(samples):
        v = s["output_values"]
        vals[i, : len(v), : v.shape[1]] = v
    out["output_values"] = torch.from_numpy(vals)
    return out
