"""The recurrent (POSSM-like) backbone: settings, training, model files, causality, unit identification, streaming.

One possm-tiny model is trained through `spiketok train` (150 steps) on three simulated sessions of two animals;
a tiny POYO is trained the same steps on the same data for comparison; a fourth session is held out for
unit identification.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import spiketok
from spiketok.adapt import AdaptConfig
from spiketok.cli import _register, app
from spiketok.data.simulate import simulate_to_folder
from spiketok.data.storage import SessionDataset, StoredSession
from spiketok.evaluate import evaluate
from spiketok.model import SIZES, ModelConfig, load_model_file, model_config, save_model
from spiketok.model.family import new_model
from spiketok.model.normalize import denormalise
from spiketok.model.poyo import POYO
from spiketok.model.recurrent import RecurrentPOYO
from spiketok.schema import ConfigError
from spiketok.stream import replay
from spiketok.stream.recurrent import RecurrentStreamingDecoder
from spiketok.tokenize import collate
from spiketok.train import load_config, train
from spiketok.train.recipe import RecipeChoice, window_settings
from spiketok.train.tune_space import base_params, search_space, values_of

_register()
runner = CliRunner()
HELD_OUT = "sim_a1_s1"
STEPS = 150
TRAIN = [
    "target=hand_velocity",
    "model.window=1",
    "causal=false",  # outputs throughout the windows: more targets per step (the recurrent model is causal anyway)
    f"max_steps={STEPS}",
    "steps_per_epoch=50",
    "batch_size=16",
    "warmup_steps=10",
    "eval_stride=1.0",
    "lr=0.003",
    "ema=null",
    "init=null",
]

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # see conftest.py


@dataclass
class Runs:
    data: SessionDataset  # the three training sessions
    recurrent: RecurrentPOYO
    poyo: POYO
    checkpoint: Path
    new_session: Path  # held out of training
    r2: dict[str, float]  # test-split mean R² of each


@pytest.fixture(scope="module")
def runs(tmp_path_factory, one_torch_thread) -> Runs:
    root = tmp_path_factory.mktemp("recurrent")
    paths = simulate_to_folder(
        root / "all", n_animals=2, sessions_per_animal=2, n_units=(30, 40), duration=60.0, seed=3, task="center_out"
    )
    (root / "pre").mkdir()
    for p in paths:
        if p.stem != HELD_OUT:
            shutil.copy(p, root / "pre" / p.name)
    out = runner.invoke(
        app,
        ["train", "--data", str(root / "pre"), "--out", str(root / "rec"), "--accelerator", "cpu", "--no-progress"]
        + TRAIN
        + ["model.size=possm-tiny"],
    )
    assert out.exit_code == 0, out.output
    data = SessionDataset(root / "pre")
    poyo_run = train(data, load_config("tiny", TRAIN), root / "poyo", accelerator="cpu", progress=False)
    recurrent, poyo = spiketok.load(root / "rec" / "model.ckpt"), spiketok.load(poyo_run.checkpoint)
    r2 = {
        name: float(evaluate(m, data, "test", progress=False)[0]["mean_r2"])
        for name, m in [("recurrent", recurrent), ("poyo", poyo)]
    }
    print(f"test R² after {STEPS} steps on 3 sessions: {r2}")
    return Runs(data, recurrent, poyo, root / "rec" / "model.ckpt", root / "all" / f"{HELD_OUT}.h5", r2)


# --- settings -------------------------------------------------------------------------------------


def test_backbone_setting_and_sizes():
    assert ModelConfig().backbone == "perceiver" and isinstance(new_model(model_config("tiny")), POYO)
    assert not isinstance(new_model(model_config("tiny")), RecurrentPOYO)
    assert isinstance(new_model(model_config("possm-tiny")), RecurrentPOYO)
    assert isinstance(new_model(model_config({"backbone": "recurrent"})), RecurrentPOYO)
    n = new_model(model_config("possm-1.3M")).n_parameters()
    assert 1.2e6 < n < 1.4e6, n
    assert SIZES["possm-tiny"].latent_step == 0.05
    with pytest.raises(ValueError, match="backbone"):
        ModelConfig(backbone="lstm")
    assert load_config("tiny", ["model.backbone=recurrent"]).model.backbone == "recurrent"
    assert load_config("tiny", ["model.size=possm-1.3M"]).model.size == "possm-1.3M"
    with pytest.raises(ConfigError, match="backbone"):
        load_config("tiny", ["model.backbone=lstm"])


def test_recipe_window_keeps_the_chunk_length():
    """The recipe's window choice sets a perceiver's latent grid from the window, but a recurrent model's latent
    step is its chunk: a 2 s window keeps possm-tiny's 50 ms chunks (and tiny gets 125 ms latents)."""
    for size, step in (("possm-tiny", 0.05), ("tiny", 0.125)):
        cfg = load_config("tiny", [f"model.size={size}", "model.window=auto"])
        chosen = RecipeChoice(settings=window_settings(2.0, cfg.model.resolved_backbone)).apply(cfg)
        assert (chosen.model.config().window, chosen.model.config().latent_step) == (2.0, step)
    cfg = load_config("tiny", ["model.backbone=recurrent", "model.window=auto"])
    assert (
        RecipeChoice(settings=window_settings(4.0, cfg.model.resolved_backbone)).apply(cfg).model.config().latent_step
        == 0.125
    )


def test_tuning_keeps_the_chunk_length():
    """`spiketok tune` searches the window and the latents per window, but a recurrent model's latent step is its
    chunk: every trial of possm-tiny keeps 50 ms chunks, while tiny's latent step follows window / latent_steps."""
    recurrent, perceiver = load_config("tiny", ["model.size=possm-tiny"]), load_config("tiny", [])
    assert search_space(recurrent)["latent_steps"] == [base_params(recurrent)["latent_steps"]]
    for window, steps in ((0.5, 4), (2.0, 16), (4.0, 8)):
        params = {**base_params(recurrent), "window": window, "latent_steps": steps}
        assert values_of(params, recurrent)["model.latent_step"] == 0.05
        assert values_of(params, perceiver)["model.latent_step"] == window / steps


# --- training, model files ------------------------------------------------------------------------


def test_trains_on_many_sessions_with_positive_r2(runs):
    assert isinstance(runs.recurrent, RecurrentPOYO) and runs.recurrent.config.backbone == "recurrent"
    assert len(runs.recurrent.session_emb) == 3
    # measured (150 steps, 3 sessions, outputs throughout the windows): possm-tiny 0.64, tiny POYO 0.01
    assert runs.r2["recurrent"] > 0.4, runs.r2


def test_model_file_rebuilds_the_recurrent_model(runs, tmp_path):
    model, s = runs.recurrent, next(iter(runs.data))
    path = save_model(model, tmp_path / "m.ckpt")
    again = load_model_file(path)
    assert type(again) is RecurrentPOYO and again.config == model.config
    batch = _window(model, s, 20.0, np.array([0.5, 1.0]))
    with torch.no_grad():
        assert torch.equal(model(batch), again(batch))


def _window(model, session, t0: float, output_times: np.ndarray):
    """A batch of the window [t0, t0 + window) with output queries at `output_times` (s from t0)."""
    w = session.slice(t0, t0 + model.config.window, behavior=[])
    rows, sess = model.unit_emb.lookup(session.unit_ids).numpy(), int(model.session_emb.lookup([session.id])[0])
    return collate([model.tokenizer()(w, rows, sess, 0, None, output_times=output_times)])


def test_an_output_reads_only_the_chunks_ended_before_it(runs):
    model, s = runs.recurrent, next(iter(runs.data))
    batch = _window(model, s, 10.0, np.array([0.5]))
    t = batch.input_times
    later_moved = torch.where(t >= 0.5, torch.full_like(t, 0.9), t)  # spikes after the query: no effect
    last_chunk_moved = torch.where((t > 0.45) & (t < 0.5), torch.full_like(t, 0.47), t)  # the chunk [0.45, 0.5)
    with torch.no_grad():
        base = model(batch)
        # equal up to float rounding: the chunks' padding changes with the spikes moved
        torch.testing.assert_close(model(replace(batch, input_times=later_moved)), base, atol=1e-6, rtol=0)
        assert (model(replace(batch, input_times=last_chunk_moved)) - base).abs().max() > 1e-3


def test_unit_identification_learns_only_the_new_rows(runs):
    model = runs.recurrent
    before = {k: v.clone() for k, v in model.state_dict().items() if isinstance(v, torch.Tensor)}
    new = StoredSession(runs.new_session)
    cfg = AdaptConfig(max_steps=15, batch_size=8, min_valid_trials=3)
    adapted = spiketok.adapt(model, new, mode="unit-id", n_trials=3, config=cfg, progress=False)
    assert type(adapted) is RecurrentPOYO and len(adapted.session_emb) == 4
    for k, old in before.items():
        now = adapted.state_dict()[k]
        if k in ("unit_emb.weight", "session_emb.weight"):
            assert torch.equal(now[: len(old)], old) and len(now) > len(old), k
        else:
            assert torch.equal(now, old), f"{k} moved during unit identification"
    dec = RecurrentStreamingDecoder(adapted, HELD_OUT)
    dec.push([0, 1], [3.01, 3.02])
    assert np.isfinite(dec.decode(3.2)).all()


def test_train_init_from_a_recurrent_model(runs, tmp_path):
    """`spiketok train --init MODEL` on the held-out session: unit identification, then fine-tuning, as for POYO."""
    short = ["target=hand_velocity", "max_steps=10", "steps_per_epoch=5", "batch_size=8", "warmup_steps=1"]
    out = runner.invoke(
        app,
        ["train", "--data", str(runs.new_session), "--out", str(tmp_path / "init"), "--init", str(runs.checkpoint)]
        + ["--no-progress", "--accelerator", "cpu", "init_lr_factor=1", "init_unit_id_restarts=1", *short],
    )
    assert out.exit_code == 0, out.output
    model = spiketok.load(tmp_path / "init" / "model.ckpt")
    assert type(model) is RecurrentPOYO and HELD_OUT in model.session_emb.ids
    assert model.config == runs.recurrent.config


# --- streaming --------------------------------------------------------------------------------------


def _stream(dec, session, t0: float, decode_times: np.ndarray) -> np.ndarray:
    """Push the session's spikes in packets up to each decode time (absolute), decoding there; (N, D)."""
    w = session.slice(t0, float(decode_times[-1]) + 1e-9, behavior=[])
    st, su = w.spike_times + w.t0, w.spike_units.astype(np.int64)
    out, done = [], 0
    for t in decode_times:
        cut = int(np.searchsorted(st, t))
        dec.push(su[done:cut], st[done:cut])
        done = cut
        out.append(dec.decode(t))
    return np.stack(out)


@pytest.mark.parametrize("t0", [10.0, 23.45])
def test_streaming_equals_the_offline_forward_on_the_same_chunks(runs, t0):
    model, s = runs.recurrent, next(iter(runs.data))
    q = np.arange(0.0, model.config.window + 1e-9, 0.02)  # a decode every 20 ms through one window
    batch = _window(model, s, t0, q)
    with torch.no_grad():
        offline = denormalise(model, model(batch), batch.output_sessions, batch.output_tasks)[0].numpy()
    dec = RecurrentStreamingDecoder(model, s.id, unit_ids=s.unit_ids)
    dec.reset(start=t0)
    streamed = _stream(dec, s, t0, t0 + q)
    np.testing.assert_allclose(streamed, offline, atol=1e-5, rtol=0)
    assert dec.n_chunks == 20


def test_the_folded_step_and_the_stages_stream_alike(runs):
    """The float32 decoder runs the folded step (ChunkStep); another precision runs the model's stages on its
    copy. They agree within bfloat16's rounding (measured: at most 0.08 apart over a spread of 35)."""
    model, s, t0 = runs.recurrent, next(iter(runs.data)), 10.0
    q = t0 + np.arange(0.0, 2 * model.config.window + 1e-9, 0.02)
    folded = RecurrentStreamingDecoder(model, s.id, unit_ids=s.unit_ids)
    staged = RecurrentStreamingDecoder(model, s.id, unit_ids=s.unit_ids, precision="bfloat16")
    assert folded._step is not None and staged._step is None
    for dec in (folded, staged):
        dec.reset(start=t0)
    a, b = _stream(folded, s, t0, q), _stream(staged, s, t0, q)
    spread = float(np.ptp(a))
    assert spread > 1.0 and np.abs(a - b).max() < 0.01 * spread, (np.abs(a - b).max(), spread)


def test_a_decode_costs_a_chunk_not_a_window(runs):
    model, s = runs.recurrent, next(iter(runs.data))
    dec = RecurrentStreamingDecoder(model, s.id)
    times = 5.0 + np.arange(0, 30.0, 0.02)
    chunks, buffered = [], []
    w = s.slice(5.0, 35.0, behavior=[])
    st, su, done = w.spike_times + w.t0, w.spike_units.astype(np.int64), 0
    for t in times:
        cut = int(np.searchsorted(st, t))
        before = dec.n_chunks
        dec.push(su[done:cut], st[done:cut])  # runs a chunk when a spike after its end comes
        done = cut
        dec.decode(t)
        chunks.append(dec.n_chunks - before)
        buffered.append(dec.n_buffered)
    assert max(chunks) == 1 and sum(chunks) == pytest.approx(30.0 / 0.05, abs=2)  # one state update per chunk
    assert max(buffered) < 0.05 * 40 * 100  # only the unfinished chunk's spikes are kept
    with pytest.raises(spiketok.stream.StreamOrderError):
        dec.decode(1.0)


def test_replay_streams_a_recurrent_model(runs):
    s = next(iter(runs.data))
    result = replay(runs.recurrent, s, s.splits["test"], progress=False)  # the state carried through each interval
    assert np.isfinite(result.y_pred).all()
    print(f"replay R² on the test split: {result.summary()['r2']:.3f}; offline windows: {runs.r2['recurrent']:.3f}")
    assert result.summary()["r2"] > 0.3
