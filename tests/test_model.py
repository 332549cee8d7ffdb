"""POYO model and tokenizer: invariances, batching, vocabularies, freezing, overfitting."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from spiketok.data import Behavior, Window
from spiketok.model import POYO, SIZES, UnknownIdError, model_config
from spiketok.tokenize import TOKEN_END, TOKEN_SPIKE, TOKEN_START, SpikeTokenizer, WindowTokens, collate


def make_window(rng: np.random.Generator, n_units: int = 20, n_spikes: int = 300, length: float = 1.0) -> Window:
    times = np.sort(rng.uniform(0, length, n_spikes))
    units = rng.integers(0, n_units, n_spikes)
    ts = np.arange(0.005, length, 0.01)
    vals = np.stack([np.sin(2 * np.pi * ts), np.cos(2 * np.pi * ts)], 1)
    return Window(0.0, length, times, units, {"vel": Behavior("vel", ts, vals)})


def make_model(n_units: int = 20, size: str = "tiny", sessions=("s0",)) -> POYO:
    torch.manual_seed(0)
    units = [f"{s}/u{i}" for s in sessions for i in range(n_units)]
    cfg = model_config({"size": size, "dropout": 0.0})
    return POYO(cfg, unit_ids=units, session_ids=list(sessions), tasks={"vel": 2}).eval()


def tokenize(model: POYO, window: Window, session: int = 0, n_units: int = 20) -> WindowTokens:
    c = model.config
    tok = SpikeTokenizer(c.num_latents_per_step, c.latent_step, c.window)
    return tok(window, np.arange(n_units) + session * n_units, session, 0, "vel")


def test_tokens_have_start_and_end_per_unit_and_latent_grid():
    rng = np.random.default_rng(0)
    w = make_window(rng, n_units=5, n_spikes=40)
    tok = SpikeTokenizer(num_latents_per_step=16, latent_step=0.125, window=1.0)
    s = tok(w, np.arange(5) + 100, 3, 0, "vel")
    types = s.input_types
    assert (types == TOKEN_SPIKE).sum() == 40
    assert (types == TOKEN_START).sum() == 5 and (types == TOKEN_END).sum() == 5
    assert np.all(s.input_times[types == TOKEN_START] == 0) and np.all(s.input_times[types == TOKEN_END] == 1.0)
    assert set(s.input_units) == set(range(100, 105))
    assert len(s.latent_ids) == 16 * 8 and np.unique(s.latent_times).size == 8
    assert np.all(s.output_sessions == 3) and s.output_values.shape == (100, 2)


def test_nan_targets_get_zero_weight():
    rng = np.random.default_rng(0)
    w = make_window(rng)
    w.behavior["vel"].values[3] = np.nan
    s = SpikeTokenizer()(w, np.arange(20), 0, 0, "vel")
    assert s.output_weights[3] == 0 and s.output_weights.sum() == len(s.output_weights) - 1
    assert np.isfinite(s.output_values).all()


@pytest.mark.parametrize("size", list(SIZES))
def test_shapes_and_finite(size):
    model = make_model(size=size)
    rng = np.random.default_rng(1)
    batch = collate([tokenize(model, make_window(rng))])
    with torch.no_grad():
        out = model(batch)
    assert out.shape == (1, 100, 2) and torch.isfinite(out).all()


def test_time_shift_invariance():
    model = make_model()
    rng = np.random.default_rng(2)
    s = tokenize(model, make_window(rng))
    shifted = replace(s, **{key: getattr(s, key) + 1234.567 for key in ("input_times", "latent_times", "output_times")})
    with torch.no_grad():
        a, b = model(collate([s])), model(collate([shifted]))
    assert (a - b).abs().max().item() < 1e-4
    # and the output does depend on timing: moving the spikes changes it
    moved = replace(s, input_times=s.input_times.copy())
    moved.input_times[moved.input_types == TOKEN_SPIKE] *= 0.5
    with torch.no_grad():
        c = model(collate([moved]))
    assert (a - c).abs().max().item() > 1e-3


def test_permuting_input_tokens_changes_nothing():
    model = make_model()
    rng = np.random.default_rng(3)
    s = tokenize(model, make_window(rng))
    perm = rng.permutation(len(s.input_units))
    p = replace(s, **{key: getattr(s, key)[perm] for key in ("input_units", "input_times", "input_types")})
    with torch.no_grad():
        assert torch.allclose(model(collate([s])), model(collate([p])), atol=1e-5)


def test_batched_equals_unbatched():
    model = make_model(sessions=("s0", "s1"))
    rng = np.random.default_rng(4)
    samples = [
        tokenize(model, make_window(rng, n_spikes=n, length=L), session=i % 2)
        for i, (n, L) in enumerate([(30, 1.0), (2000, 1.0), (400, 0.6), (5, 0.3)])
    ]
    with torch.no_grad():
        batched = model(collate(samples))
        for i, s in enumerate(samples):
            alone = model(collate([s]))
            n = len(s.output_times)
            assert torch.allclose(batched[i, :n], alone[0], atol=1e-5), i


def test_extending_vocabulary_keeps_old_predictions_and_unknown_ids_raise():
    model = make_model()
    rng = np.random.default_rng(5)
    batch = collate([tokenize(model, make_window(rng))])
    with torch.no_grad():
        before = model(batch)
    old_rows = model.unit_emb.weight.detach().clone()
    added = model.unit_emb.extend([f"new/u{i}" for i in range(7)] + ["s0/u0"])
    model.session_emb.extend(["new"])
    assert len(added) == 7 and len(model.unit_emb) == 27
    assert torch.equal(model.unit_emb.weight[:20], old_rows)
    with torch.no_grad():
        assert torch.equal(model(batch), before)
    with pytest.raises(UnknownIdError, match="adapt"):
        model.unit_emb.lookup(["never/seen"])


def test_vocabulary_survives_state_dict_round_trip():
    model = make_model()
    model.unit_emb.extend(["x/a", "x/b"])
    fresh = make_model()
    fresh.load_state_dict(model.state_dict())
    assert fresh.unit_emb.ids == model.unit_emb.ids
    assert torch.equal(fresh.unit_emb.weight, model.unit_emb.weight)


def test_only_embeddings_get_gradients_when_rest_frozen():
    model = make_model().train()
    for name, p in model.named_parameters():
        p.requires_grad_(name in ("unit_emb.weight", "session_emb.weight"))
    rng = np.random.default_rng(6)
    batch = collate([tokenize(model, make_window(rng))])
    loss = (model(batch)[..., :2] - batch.output_values).pow(2).mean()
    loss.backward()
    for name, p in model.named_parameters():
        if name in ("unit_emb.weight", "session_emb.weight"):
            assert p.grad is not None and p.grad.abs().sum() > 0, name
        else:
            assert p.grad is None, name


def test_tiny_model_overfits_one_window():
    model = make_model().train()
    rng = np.random.default_rng(7)
    batch = collate([tokenize(model, make_window(rng))])
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(300):
        loss = (model(batch)[..., :2] - batch.output_values).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] / 100
