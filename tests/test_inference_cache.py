"""The inference forward keeps tables computed from the weights (spiketok.model.inference_cache): it must give
the training forward's outputs, and rebuild its tables whenever the weights or the latent/query layout change."""

from __future__ import annotations

import copy
import pickle

import numpy as np
import torch
from test_model import make_model, make_window, tokenize

from spiketok.model import POYO
from spiketok.tokenize import collate


def windows(model: POYO, seed: int, n: int = 3, length: float = 1.0):
    rng = np.random.default_rng(seed)
    return collate([tokenize(model, make_window(rng, n_spikes=100 + 80 * k, length=length)) for k in range(n)])


def recomputed(model: POYO, batch) -> torch.Tensor:
    """The forward with autograd on: nothing cached, every table computed from the current weights."""
    with torch.enable_grad():
        return model(batch).detach()


def inferred(model: POYO, batch) -> torch.Tensor:
    with torch.inference_mode():
        return model(batch)


def test_inference_matches_the_training_forward_and_reuses_its_tables():
    model = make_model()
    batch = windows(model, 0)  # padded: windows of 100, 180 and 260 spikes
    first, second = inferred(model, batch), inferred(model, batch)
    assert torch.equal(first, recomputed(model, batch)) and torch.equal(second, first)
    tables = dict(model._cache._entries)
    assert set(tables) == {"token_kv", "latents", "outputs"}
    inferred(model, windows(model, 1))  # other spikes, same layout: the same tables serve
    assert all(model._cache._entries[k][2] is tables[k][2] for k in tables)


def test_tables_follow_every_change_of_the_weights():
    model = make_model()
    batch = windows(model, 0)
    inferred(model, batch)  # tables built
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model.train()
    loss = model(batch).square().mean()
    loss.backward()
    opt.step()  # every weight moves in place
    model.eval()
    after = inferred(model, batch)
    assert torch.equal(after, recomputed(model, batch))
    assert (after - inferred(make_model(), batch)).abs().max() > 1e-3  # the step changed the outputs

    other = make_model()
    with torch.no_grad():
        for p in other.parameters():
            p.add_(0.05 * torch.randn_like(p))
    model.load_state_dict(other.state_dict())  # copied into the same tensors
    assert torch.equal(inferred(model, batch), recomputed(other, batch))

    with torch.no_grad():
        model.unit_emb.weight[3] += 1.0  # one unit edited by hand
    assert torch.equal(inferred(model, batch), recomputed(model, batch))

    model.unit_emb.extend(["s0/new"])  # a new vocabulary table
    assert torch.equal(inferred(model, batch), recomputed(model, batch))

    model.double()  # weights converted: tables too
    assert inferred(model, batch).dtype == torch.float64


def test_tables_follow_the_latent_layout_and_the_query_times():
    model = make_model()
    inferred(model, windows(model, 0))
    for batch in (windows(model, 1, n=1), windows(model, 2, n=2, length=0.75)):  # other batch size, other layout
        assert torch.equal(inferred(model, batch), recomputed(model, batch))


def test_copies_and_pickles_carry_no_tables():
    model = make_model()
    batch = windows(model, 0)
    inferred(model, batch)
    clone = copy.deepcopy(model)
    assert clone._cache._entries == {}
    with torch.no_grad():
        clone.encoder.attn.to_kv.weight.mul_(2.0)
    assert torch.equal(inferred(clone, batch), recomputed(clone, batch))
    assert pickle.loads(pickle.dumps(model))._cache._entries == {}
