"""Absolute latent grid and the incremental StreamingDecoder: equal to offline windows and to the full decoder."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import cli  # noqa: E402  (runs `spiketok ARGS` in this process)

from spiketok.data.simulate import simulate_to_folder
from spiketok.data.storage import SessionDataset, StoredSession
from spiketok.model import ModelConfig, model_config
from spiketok.model.file import load_model_file, read_model_file, save_model_file
from spiketok.model.meta import ModelFileMeta
from spiketok.stream import StreamingDecoder, replay
from spiketok.tokenize import SpikeTokenizer, collate
from spiketok.train import load

TRAIN = [
    "target=hand_velocity",
    "model.window=1",
    "model.latent_grid=absolute",
    "causal=true",
    "max_steps=12",
    "steps_per_epoch=6",
    "batch_size=8",
    "warmup_steps=3",
    "eval_stride=1.0",
    "lr=0.003",
]

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # see conftest.py


@pytest.fixture(scope="module")
def absolute_run(tmp_path_factory, one_torch_thread) -> dict:
    """A tiny causal model with latents on the absolute grid, trained briefly by `spiketok train` (20 units, 40 s)."""
    root = tmp_path_factory.mktemp("incr")
    simulate_to_folder(
        root / "sim", n_animals=1, sessions_per_animal=1, n_units=(20, 20), duration=40.0, seed=4, task="center_out"
    )
    code, out = cli(
        "train", "--data", root / "sim", "--out", root / "run", "--accelerator", "cpu", "--no-progress", *TRAIN
    )
    assert code == 0, out
    data = SessionDataset(root / "sim")
    session = next(iter(data))
    ckpt = root / "run" / "model.ckpt"
    return {"root": root, "data": root / "sim", "session": session, "model": load(ckpt), "ckpt": ckpt}


def offline(model, session: StoredSession, t: float) -> np.ndarray:
    """Tokenizer + model forward on [t - window, t), output query at its end: normalised output (D,)."""
    w = session.slice(t - model.config.window, t, behavior=[])
    sample = model.tokenizer()(
        w,
        model.unit_emb.lookup(session.unit_ids).numpy(),
        int(model.session_emb.lookup([session.id])[0]),
        0,
        None,
        output_times=np.array([w.length]),
    )
    batch = collate([sample])
    with torch.no_grad():
        return model(batch)[0, 0, :2].numpy()


def spikes(session: StoredSession, t0: float, t1: float) -> tuple[np.ndarray, np.ndarray]:
    w = session.slice(t0, t1, behavior=[])
    return w.spike_units.astype(np.int64), w.spike_times + t0


def test_absolute_grid_latents_sit_on_the_session_clock() -> None:
    tok = SpikeTokenizer(num_latents_per_step=3, latent_step=0.125, window=1.0, latent_grid="absolute")
    for t0 in (0.0, 0.0625, 0.1, 3.3, 17.9999, 123.456, -0.4):
        ids, times = tok.latents(t0=t0)
        assert len(ids) == len(times) == 8 * 3  # always window / step grid points
        np.testing.assert_array_equal(ids, np.tile(np.arange(3), 8))
        absolute = times + t0
        k = absolute / 0.125 - 0.5
        np.testing.assert_allclose(k, np.round(k), atol=1e-9)  # on the grid (k + 0.5) * step
        assert (absolute >= t0 - 1e-12).all() and (absolute < t0 + 1.0).all()  # inside [t0, t0 + window)
        assert np.all(np.diff(absolute[::3]) > 0.124)  # each grid point once, in order
    # the first grid point after t0 is at most one step in
    assert tok.latents(t0=0.1)[1][0] == pytest.approx(0.1875 - 0.1)
    # the window grid does not move with t0
    win = SpikeTokenizer(3, 0.125, 1.0)
    np.testing.assert_array_equal(win.latents(t0=5.03)[1], win.latents()[1])
    with pytest.raises(ValueError, match="needs the window's start"):
        tok.latents()
    with pytest.raises(ValueError, match="whole number of latent steps"):
        SpikeTokenizer(3, 0.3, 1.0, "absolute").latents(t0=0.0)
    with pytest.raises(ValueError, match="whole number of latent steps"):
        ModelConfig(window=1.0, latent_step=0.3, latent_grid="absolute")
    with pytest.raises(ValueError, match="latent_grid='diagonal'"):
        model_config({"latent_grid": "diagonal"})


def test_train_writes_the_grid_and_evaluate_and_replay_work(absolute_run: dict) -> None:
    model, session = absolute_run["model"], absolute_run["session"]
    _, meta = read_model_file(absolute_run["ckpt"])
    assert meta.model["latent_grid"] == "absolute" and model.config.latent_grid == "absolute"
    assert model.tokenizer().latent_grid == "absolute"
    root = absolute_run["root"]
    code, out = cli("evaluate", absolute_run["ckpt"], "--data", absolute_run["data"], "--json", root / "eval.json")
    assert code == 0, out
    assert np.isfinite(json.loads((root / "eval.json").read_text())["mean_r2"])
    code, out = cli("replay", absolute_run["ckpt"], session.path, "--limit", "2", "--json", root / "replay.json")
    assert code == 0, out
    s = json.loads((root / "replay.json").read_text())
    assert s["incremental"] is True and s["n_decodes"] == 100 and "incremental (per-packet partials)" in out
    code, out = cli(
        "replay",
        absolute_run["ckpt"],
        session.path,
        "--limit",
        "2",
        "--no-incremental",
        "--json",
        root / "replay_full.json",
    )
    assert code == 0, out
    full = json.loads((root / "replay_full.json").read_text())
    assert full["incremental"] is False and full["r2"] == pytest.approx(s["r2"], abs=1e-5)


def test_incremental_equals_offline_and_the_full_decoder(absolute_run: dict) -> None:
    model, session = absolute_run["model"], absolute_run["session"]
    std = np.array(model.normalizer.stats[session.id]["hand_velocity"]["std"])
    inc = StreamingDecoder(model, session.id)
    full = StreamingDecoder(model, session.id, incremental=False)
    assert inc.incremental and not full.incremental
    units, times = spikes(session, session.start, session.start + 12.0)
    # decodes every 20 ms; packets end at random times, independent of the decode times: some are empty,
    # some hold several decodes' worth of spikes (pushed ahead: they straddle t), long ones get cut into blocks
    grid = np.arange(session.start + 0.3, session.start + 11.0, 0.02)
    rng = np.random.default_rng(1)
    edges = np.sort(np.concatenate([rng.uniform(grid[0] - 0.3, grid[-1], 400), grid[::7] + 0.31, [grid[-1]]]))
    cut = np.searchsorted(times, edges)
    pushed_to, k = -np.inf, 0
    got_inc, got_full, ref = [], [], []
    for j, t in enumerate(grid):
        while pushed_to < t:  # push packets until every spike before t is in
            lo = cut[k - 1] if k else 0
            assert inc.push(units[lo : cut[k]], times[lo : cut[k]]) == full.push(units[lo : cut[k]], times[lo : cut[k]])
            pushed_to, k = edges[k], k + 1
        inc.push([], [])  # an empty packet
        got_inc.append(inc.decode_normalised(t).numpy())
        got_full.append(full.decode_normalised(t).numpy())
        if j % 11 == 0:
            ref.append((j, offline(model, session, t)))
    got_inc, got_full = np.array(got_inc), np.array(got_full)
    assert np.abs(got_inc - got_full).max() < 1e-5
    sel = [j for j, _ in ref]
    offl = np.array([r for _, r in ref])
    assert np.abs(got_inc[sel] - offl).max() < 1e-5
    assert np.abs(np.diff(offl, axis=0)).max() > 1e-2  # windows differ by far more: the test means something
    # blocks older than the window are dropped: only about a window of spikes is kept
    assert sum(len(b.times) for b in inc._inc.blocks) < 3 * len(times) / 12.0
    # decode (original units) agrees too
    assert np.abs((inc.decode(grid[-1]) - full.decode(grid[-1])) / std).max() < 1e-5


def test_incremental_after_reset_and_with_single_spike_packets(absolute_run: dict) -> None:
    model, session = absolute_run["model"], absolute_run["session"]
    units, times = spikes(session, 20.0, 24.0)
    grid = np.arange(21.0, 24.0, 0.05)
    ones = StreamingDecoder(model, session.id, capacity=64)
    ones.push(units[:5], times[:5])
    ones.decode(20.5)
    ones.reset()  # forgets spikes, blocks and decode times
    assert ones.n_buffered == 0 and not ones._inc.blocks
    ref = StreamingDecoder(model, session.id, incremental=False)
    ref.push(units, times)  # everything up front: spikes after t must not count
    out, i = [], 0
    for t in grid:
        j = int(np.searchsorted(times, t))
        for s in range(i, j):
            ones.push(units[s : s + 1], times[s : s + 1])
        i = j
        out.append([ones.decode(t), ref.decode(t)])
    out = np.array(out)
    assert len(ones._inc.m) > 64  # one block per spike: the partial storage grew (blocks moved to new slots)
    std = np.array(model.normalizer.stats[session.id]["hand_velocity"]["std"])
    assert np.abs((out[:, 0] - out[:, 1]) / std).max() < 1e-5


def test_window_models_refuse_incremental_and_old_files_load_as_window(absolute_run: dict, tmp_path: Path) -> None:
    model, session = absolute_run["model"], absolute_run["session"]
    # a model file written before latent_grid existed: its metadata has no such key
    window_model = load_model_file(absolute_run["ckpt"])
    window_model.config = ModelConfig(**{**window_model.config.to_dict(), "latent_grid": "window"})
    meta = ModelFileMeta.from_model(window_model)
    del meta.model["latent_grid"]
    save_model_file(window_model, tmp_path / "old.ckpt", meta)
    _, stored = read_model_file(tmp_path / "old.ckpt")
    assert "latent_grid" not in stored.model
    old = load_model_file(tmp_path / "old.ckpt")
    assert old.config.latent_grid == "window" and old.tokenizer().latent_grid == "window"
    assert load_model_file("pretrained:primate-reaching").config.latent_grid == "window"  # the shipped model file
    with pytest.raises(ValueError, match="no partial sum can be reused exactly"):
        StreamingDecoder(old, session.id, incremental=True)
    assert StreamingDecoder(old, session.id).incremental is False
    code, out = cli("replay", tmp_path / "old.ckpt", session.path, "--limit", "1", "--incremental")
    assert code == 2 and "latent_grid='absolute'" in out
    # the API: replay through the full decoder on request
    r = replay(model, session, every=0.05, limit=0.5, progress=False, incremental=False)
    assert r.incremental is False and len(r.times) == 10


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_absolute_grid_export_takes_the_window_start(absolute_run: dict, tmp_path: Path, fmt: str) -> None:
    """An absolute-grid model exported: the graph takes the window's start and places the latents as the tokenizer
    does, so it matches PyTorch (offline windows at starts of every phase on the grid, and replay) within 1e-4."""
    pytest.importorskip("onnxruntime", reason="the `export` extra (onnx, onnxruntime) is not installed")
    from spiketok.model.export import sidecar_path
    from spiketok.stream.exported import ExportedModel
    from spiketok.stream.replay import replay as replay_exported

    model, session = absolute_run["model"], absolute_run["session"]
    out = tmp_path / ("m.onnx" if fmt == "onnx" else "m.pt")
    code, text = cli("export", absolute_run["ckpt"], "--format", fmt, "--out", out)
    assert code == 0, text
    meta = json.loads(sidecar_path(out).read_text())
    assert meta["latents"]["grid"] == "absolute" and "window_start" in [i["name"] for i in meta["inputs"]]
    exported = ExportedModel(out)
    rows, sess = exported.unit_rows(session.unit_ids), exported.session_row(session.id)
    mean, std = (np.asarray(meta["normalization"][session.id][k]) for k in ("mean", "std"))
    rng = np.random.default_rng(3)
    ends = session.start + 1.0 + rng.uniform(0, 30, 12)  # window starts at every phase of the 0.125 s grid
    diffs, outs = [], []
    for t in ends:
        w = session.slice(t - 1.0, t, behavior=[])
        got = exported.run(*exported.tokenize(rows[w.spike_units], w.spike_times, rows), np.array([1.0]), sess, t - 1.0)
        ref = offline(model, session, t) * std + mean
        diffs.append(np.abs(got[0] - ref).max())
        outs.append(ref)
    spread = np.ptp(np.array(outs), axis=0).max()
    print(f"absolute grid, {fmt}: max abs difference {max(diffs):.2e}, spread of outputs {spread:.2e}")
    assert max(diffs) < 1e-4 and spread > 1e-2
    with pytest.raises(ValueError, match="window_start"):
        exported.run(*exported.tokenize(rows[:0], np.zeros(0), rows), np.array([1.0]), sess)
    torch_run = replay(model, session, every=0.02, limit=1.0, progress=False)  # the incremental decoder
    exp_run = replay_exported(exported, session, every=0.02, limit=1.0, progress=False)
    assert torch_run.incremental and np.array_equal(exp_run.times, torch_run.times) and len(exp_run.times) == 50
    assert np.abs(exp_run.y_pred - torch_run.y_pred).max() < 1e-4
