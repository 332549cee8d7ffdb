"""Streaming decoding: equal to offline windows, packet-size independent, strict about order; `spiketok replay`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from spiketok.cli import _register, app
from spiketok.data.simulate import simulate_to_folder
from spiketok.data.storage import SessionDataset, StoredSession
from spiketok.data.windows import causal_window
from spiketok.evaluate import decode_times, evaluate
from spiketok.model import UnknownIdError
from spiketok.model.normalize import denormalise
from spiketok.stream import LateSpikeError, StreamingDecoder, StreamOrderError, replay
from spiketok.tokenize import SpikeTokenizer, collate
from spiketok.tokenize.dataset import WindowDataset
from spiketok.train import load, load_config, train

_register()
runner = CliRunner()
TRAIN = [
    "target=hand_velocity",
    "model.window=1",
    "causal=true",
    "max_steps=40",
    "steps_per_epoch=20",
    "batch_size=16",
    "warmup_steps=5",
    "eval_stride=1.0",
    "lr=0.003",
    "model.dropout=0.2",
    "weight_decay=0.05",
]  # pinned: the fixture's model does not follow the preset's changes


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # see conftest.py


@pytest.fixture(scope="module")
def causal_run(tmp_path_factory, one_torch_thread) -> dict:
    """A tiny causal model trained briefly on one simulated 60 s session (30 units)."""
    root = tmp_path_factory.mktemp("stream")
    simulate_to_folder(
        root / "sim", n_animals=1, sessions_per_animal=1, n_units=(30, 30), duration=60.0, seed=3, task="center_out"
    )
    data = SessionDataset(root / "sim")
    result = train(data, load_config("tiny", TRAIN), root / "run", accelerator="cpu", progress=False)
    model = load(result.checkpoint)
    session = next(iter(data))
    return {
        "root": root,
        "data": data,
        "session": session,
        "model": model,
        "ckpt": result.checkpoint,
        "file": session.path,
    }


def offline(model, session: StoredSession, t: float) -> np.ndarray:
    """Tokenizer + model on the window [t - window, t) with the output query at its end, original units."""
    c = model.config
    tok = SpikeTokenizer(c.num_latents_per_step, c.latent_step, c.window)
    w = session.slice(t - c.window, t, behavior=[])
    sample = tok(
        w,
        model.unit_emb.lookup(session.unit_ids).numpy(),
        int(model.session_emb.lookup([session.id])[0]),
        0,
        None,
        output_times=np.array([w.length]),
    )
    batch = collate([sample])
    with torch.no_grad():
        pred = denormalise(model, model(batch), batch.output_sessions, batch.output_tasks)
    return pred[0, 0, :2].numpy()


def spikes(session: StoredSession, t0: float, t1: float) -> tuple[np.ndarray, np.ndarray]:
    w = session.slice(t0, t1, behavior=[])
    return w.spike_units.astype(np.int64), w.spike_times + t0


def test_streaming_equals_offline_windows(causal_run: dict) -> None:
    model, session = causal_run["model"], causal_run["session"]
    assert model.meta.train.causal is True
    std = np.array(model.normalizer.stats[session.id]["hand_velocity"]["std"])
    dec = StreamingDecoder(model, session.id)
    assert dec.target == "hand_velocity" and dec.window == model.config.window
    units, times = spikes(session, session.start, session.end)
    # decode times from the first 0.3 s (window partly before the recording) to the end, 20 ms packets
    grid = np.arange(session.start + 0.3, session.start + 20.0, 0.02)
    check = set(range(0, len(grid), 31)) | {len(grid) - 1}
    cut = np.searchsorted(times, grid)
    stream, ref = [], []
    for k, t in enumerate(grid):
        dec.push(units[cut[k - 1] if k else 0 : cut[k]], times[cut[k - 1] if k else 0 : cut[k]])
        y = dec.decode(t)
        if k in check:
            stream.append(y)
            ref.append(offline(model, session, t))
    stream, ref = np.array(stream), np.array(ref)
    assert np.abs((stream - ref) / std).max() < 1e-4  # in normalised units (std of the training targets)
    # different windows differ by far more than that tolerance: the comparison means something
    assert np.abs(np.diff(ref, axis=0) / std).max() > 1e-2
    assert dec.n_buffered < 4 * len(times) / session.duration  # only about a window of spikes kept
    # and the offline decoder of causal models (what `spiketok evaluate` uses) gives the same numbers
    iv = session.splits["test"]
    sample_times = session.behavior("hand_velocity").timestamps
    sample_times = sample_times[iv.contains(sample_times)][::25]
    off, covered = decode_times(model, session, "hand_velocity", iv, sample_times)
    assert covered.all()
    dec.reset()
    dec.push(*spikes(session, sample_times[0] - 1.0, sample_times[-1]))
    streamed = np.array([dec.decode(t) for t in sample_times])
    assert np.abs((streamed - off) / std).max() < 1e-4


def test_packet_sizes_and_id_kinds_give_the_same_result(causal_run: dict) -> None:
    model, session = causal_run["model"], causal_run["session"]
    units, times = spikes(session, 10.0, 16.0)
    grid = np.arange(11.0, 16.0, 0.05)
    rng = np.random.default_rng(0)

    def run(sizes: str) -> np.ndarray:
        dec = StreamingDecoder(model, session.id, capacity=64)  # small: forces compaction and growth
        out, i = [], 0
        for t in grid:
            j = int(np.searchsorted(times, t))
            if sizes == "ones":
                for k in range(i, j):
                    dec.push(units[k : k + 1], times[k : k + 1])
            elif sizes == "random":
                edges = np.unique(np.concatenate([[i, j], rng.integers(i, j + 1, 3)]))
                for a, b in zip(edges[:-1], edges[1:]):
                    dec.push(units[a:b], times[a:b])
            elif sizes == "names":
                names = np.array(session.unit_names)[units[i:j]]
                dec.push(names, times[i:j])
            else:  # all spikes up front: spikes after t must not count
                if i == 0:
                    dec.push(units, times)
            i = j
            out.append(dec.decode(t))
        return np.array(out)

    ref = run("per-decode")
    for sizes in ("ones", "random", "names", "all"):
        np.testing.assert_allclose(run(sizes), ref, atol=1e-5, err_msg=sizes)
    full_ids = StreamingDecoder(model, session.id)
    full_ids.push(np.array(session.unit_ids)[units], times)
    np.testing.assert_allclose(full_ids.decode(grid[-1]), ref[-1], atol=1e-5)


def test_out_of_order_and_late_packets_raise(causal_run: dict) -> None:
    model, session = causal_run["model"], causal_run["session"]
    dec = StreamingDecoder(model, session.id)
    dec.push([0, 1, 2], [5.0, 5.2, 5.4])
    with pytest.raises(StreamOrderError, match="before the newest spike"):
        dec.push([3], [5.3])
    y = dec.decode(5.6)
    with pytest.raises(LateSpikeError, match="already went out"):
        dec.push([3, 4], [5.5, 5.7])  # newer than every spike pushed, but older than the decode at 5.6
    with pytest.raises(StreamOrderError, match="must not decrease"):
        dec.decode(5.59)
    # the rejected packets left nothing behind
    clean = StreamingDecoder(model, session.id)
    clean.push([0, 1, 2], [5.0, 5.2, 5.4])
    np.testing.assert_array_equal(clean.decode(5.6), y)
    np.testing.assert_array_equal(dec.decode(5.8), clean.decode(5.8))
    # unsorted within a packet is fine (sorted on arrival); late spikes can be dropped and counted instead
    lenient = StreamingDecoder(model, session.id, late="drop")
    lenient.push([2, 0, 1], [5.4, 5.0, 5.2])
    np.testing.assert_array_equal(lenient.decode(5.6), y)
    assert lenient.push([3, 4], [5.5, 5.7]) == 1 and lenient.n_late == 1
    with pytest.raises(IndexError):
        lenient.push([session.n_units], [6.0])
    with pytest.raises(KeyError, match="unknown to this decoder"):
        lenient.push(["no_such_unit"], [6.0])


def test_unknown_session_says_adapt_first(causal_run: dict) -> None:
    with pytest.raises(UnknownIdError, match="adapt the model to that session first"):
        StreamingDecoder(causal_run["model"], "some_other_session")


def test_causal_training_windows_end_on_a_behaviour_sample(causal_run: dict) -> None:
    model, data, session = causal_run["model"], causal_run["data"], causal_run["session"]
    ds = WindowDataset.for_model(model, data, {session.id: "hand_velocity"}, causal=True)
    b = session.behavior("hand_velocity")
    from spiketok.data.samplers import WindowSpec

    for t0, t1 in ((3.0, 4.0), (20.013, 21.013), (41.5, 42.5), (30.0, 30.4)):  # the last one shorter: still full
        spec = WindowSpec(session.id, t0, t1)
        w = causal_window(session, spec, "hand_velocity", 1.0)
        end = w.t1
        k = int(np.argmin(np.abs(b.timestamps - end)))
        assert abs(b.timestamps[k] - end) < 1e-9 and spec.t0 <= end < spec.t1  # ends exactly on a sample
        assert abs(w.length - 1.0) < 1e-9  # full length
        s = ds[spec]
        assert s.output_times.tolist() == [pytest.approx(1.0)]
        np.testing.assert_allclose(s.output_values[0], b.values[k])
        assert s.input_times.max() <= 1.0 + 1e-9 and (s.input_times >= 0).all()
    # evaluate scores causal models (one window ending at each test sample)
    results, decoded = evaluate(model, data, "test", progress=False)
    d = decoded[session.id]
    assert np.isfinite(d.y_pred).all() and np.isfinite(results["mean_r2"])


def test_replay_cli_streams_a_prepared_file(causal_run: dict, tmp_path: Path) -> None:
    model, session = causal_run["model"], causal_run["session"]
    out_json, out_png = tmp_path / "replay.json", tmp_path / "replay.png"
    result = runner.invoke(
        app,
        [
            "replay",
            str(causal_run["ckpt"]),
            str(causal_run["file"]),
            "--every",
            "0.02",
            "--json",
            str(out_json),
            "--plot",
            str(out_png),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "latency median / p99 / max" in result.output and "R² (hand_velocity)" in result.output
    s = json.loads(out_json.read_text())
    test = np.asarray(model.meta.splits[session.id]["test"])
    expected = sum(int(np.ceil((e - a) / 0.02 - 1e-9)) for a, e in test)
    assert s["n_decodes"] == expected and s["split"] == "test"
    assert 0 < s["latency_ms"]["median"] <= s["latency_ms"]["p99"] <= s["latency_ms"]["max"]
    assert out_png.stat().st_size > 10_000
    # the CLI's R² is that of the same stream decoded through the Python API, whose decodes equal the
    # offline decoder's at the same times
    from spiketok.data.session import Intervals

    iv = Intervals(test[:, 0], test[:, 1])
    api = replay(model, session, iv, every=0.02, progress=False)
    assert s["r2"] == pytest.approx(float(np.nanmean(api.r2())), abs=1e-6)
    sel = np.arange(0, len(api.times), 15)
    off, covered = decode_times(model, session, "hand_velocity", iv, api.times[sel])
    std = np.array(model.normalizer.stats[session.id]["hand_velocity"]["std"])
    assert covered.all() and np.abs((api.y_pred[sel] - off) / std).max() < 1e-4
    # wrong inputs fail with a clear message
    bad = runner.invoke(app, ["replay", str(causal_run["ckpt"]), str(causal_run["file"]), "--split", "nope"])
    assert bad.exit_code == 2 and "no 'nope' split" in bad.output
    bad = runner.invoke(app, ["replay", str(causal_run["ckpt"]), str(causal_run["file"]), "--speed", "fast"])
    assert bad.exit_code != 0 and "--speed" in bad.output


def test_replay_in_lower_precision_stays_close(causal_run: dict, tmp_path: Path) -> None:
    """`replay --precision bfloat16|int8`: the same stream, outputs near float32's (< 10% of the behaviour's std),
    the model itself untouched; a bad name and --precision with --onnx are one-line errors."""
    model, session = causal_run["model"], causal_run["session"]
    from spiketok.data.session import Intervals

    test = np.asarray(model.meta.splits[session.id]["test"])
    iv = Intervals(test[:1, 0], test[:1, 1])
    ref = replay(model, session, iv, every=0.05, progress=False)
    std = np.array(model.normalizer.stats[session.id]["hand_velocity"]["std"])
    for precision in ("bfloat16", "int8"):
        low = replay(model, session, iv, every=0.05, progress=False, precision=precision)
        err = np.abs((low.y_pred - ref.y_pred) / std).max()
        print(f"{precision}: max error {err:.4f} of the behaviour's std")
        assert np.array_equal(low.times, ref.times) and 0 < err < 0.1
    assert isinstance(model.encoder.attn.to_q, torch.nn.Linear)  # the model was not converted in place
    out = tmp_path / "r.json"
    ok = runner.invoke(
        app,
        [
            "replay",
            str(causal_run["ckpt"]),
            str(causal_run["file"]),
            "--precision",
            "bfloat16",
            "--limit",
            "1",
            "--json",
            str(out),
        ],
    )
    assert ok.exit_code == 0, ok.output
    assert json.loads(out.read_text())["n_decodes"] == 50
    bad = runner.invoke(app, ["replay", str(causal_run["ckpt"]), str(causal_run["file"]), "--precision", "fp8"])
    assert bad.exit_code == 2 and "precision='fp8'" in bad.output
    bad = runner.invoke(
        app, ["replay", str(causal_run["file"]), "--onnx", str(causal_run["ckpt"]), "--precision", "int8"]
    )
    assert bad.exit_code == 2 and "--precision applies to checkpoints" in bad.output
