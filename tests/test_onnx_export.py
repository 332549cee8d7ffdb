"""`spiketok export`: ONNX and TorchScript graphs give the PyTorch model's numbers (max abs difference < 1e-4) on
simulated and real-recording windows of different spike counts; the sidecar tokenizes; `replay --onnx` streams."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import cli

from spiketok.data.nwb import read_nwb
from spiketok.data.readers import ReadOptions
from spiketok.data.session import Session, Window
from spiketok.data.simulate import simulate_to_folder
from spiketok.data.storage import SessionDataset, StoredSession
from spiketok.model.export import SIDECAR_VERSION, sidecar_path
from spiketok.model.normalize import denormalise
from spiketok.stream import replay
from spiketok.stream.exported import ExportedModel, ExportedStreamingDecoder
from spiketok.stream.replay import replay as replay_exported
from spiketok.tokenize import SpikeTokenizer, collate
from spiketok.train import load, load_config, train
from spiketok.train.checkpoint import save_model

pytest.importorskip("onnxruntime", reason="the `export` extra (onnx, onnxruntime) is not installed")

DATA = Path(__file__).parents[1].parent / "shared" / "data"
REAL = DATA / "m1_chewie_2013-12-19.nwb"  # the smallest M1 recording: hand velocity, as the simulated task
TRAIN = [
    "target=hand_velocity",
    "model.window=1",
    "causal=true",
    "max_steps=20",
    "steps_per_epoch=10",
    "batch_size=16",
    "warmup_steps=5",
    "eval_stride=1.0",
    "lr=0.003",
]
TOL = 1e-4

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # see conftest.py


@pytest.fixture(scope="module")
def run(tmp_path_factory, one_torch_thread) -> dict:
    """A tiny causal model trained for 20 steps on one simulated 40 s session (24 units), exported both ways
    through the CLI."""
    root = tmp_path_factory.mktemp("export")
    simulate_to_folder(
        root / "sim", n_animals=1, sessions_per_animal=1, n_units=(24, 24), duration=40.0, seed=5, task="center_out"
    )
    data = SessionDataset(root / "sim")
    result = train(data, load_config("tiny", TRAIN), root / "run", accelerator="cpu", progress=False)
    out = {"root": root, "ckpt": result.checkpoint, "model": load(result.checkpoint), "session": next(iter(data))}
    for fmt, name in (("onnx", "model.onnx"), ("torchscript", "model.pt")):
        code, text = cli("export", result.checkpoint, "--format", fmt, "--out", root / name)
        assert code == 0, text
        out[fmt] = root / name
    return out


def reference(model, window: Window, unit_ids: list[str], session_id: str, output_times: np.ndarray) -> np.ndarray:
    """The PyTorch model itself (tokenizer, collate, forward, denormalise): behaviour (n_out, D) at `output_times`."""
    c = model.config
    tok = SpikeTokenizer(c.num_latents_per_step, c.latent_step, c.window)
    sample = tok(
        window,
        model.unit_emb.lookup(unit_ids).numpy(),
        int(model.session_emb.lookup([session_id])[0]),
        0,
        None,
        output_times=output_times,
    )
    batch = collate([sample])
    with torch.no_grad():
        return denormalise(model, model(batch), batch.output_sessions, batch.output_tasks)[0].numpy()


def windows(session: Session | StoredSession, n: int, seed: int) -> list[Window]:
    """n one-second windows at random times, one of them emptied and one thinned: spike counts all differ."""
    rng = np.random.default_rng(seed)
    starts = rng.uniform(session.start, session.end - 1.0, n)
    out = [session.slice(s, s + 1.0) for s in starts]
    out[0] = replace(out[0], spike_times=out[0].spike_times[:0], spike_units=out[0].spike_units[:0])
    out[1] = replace(out[1], spike_times=out[1].spike_times[::7], spike_units=out[1].spike_units[::7])
    return out


def compare(model, graph: Path, session, session_id: str, wins: list[Window]) -> tuple[float, float, set[int]]:
    """Max abs difference exported vs PyTorch over the windows (1 to 3 output times each), the largest difference
    between windows' outputs (so the tolerance means something) and the spike counts seen."""
    exported = ExportedModel(graph)
    rows = exported.unit_rows(session.unit_ids)
    diffs, outs, counts = [], [], set()
    for k, w in enumerate(wins):
        out_times = np.linspace(1.0, 0.25, 1 + k % 3)
        ref = reference(model, w, session.unit_ids, session_id, out_times)
        tokens = exported.tokenize(rows[w.spike_units], w.spike_times, rows)
        got = exported.run(*tokens, out_times, exported.session_row(session_id))
        assert got.shape == ref.shape == (len(out_times), exported.dims)
        diffs.append(np.abs(got - ref).max())
        outs.append(ref[0])
        counts.add(len(w.spike_times))
    spread = np.abs(np.array(outs)[:, None] - np.array(outs)[None]).max()
    return float(max(diffs)), float(spread), counts


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_exported_graph_matches_pytorch_on_simulated_windows(run: dict, fmt: str) -> None:
    model, session = run["model"], run["session"]
    diff, spread, counts = compare(model, run[fmt], session, session.id, windows(session, 6, seed=0))
    print(f"simulated windows, {fmt}: max abs difference {diff:.2e}, spike counts {sorted(counts)}")
    assert diff < TOL, f"{fmt}: max abs difference {diff:.2e}"
    assert spread > 100 * TOL  # windows' outputs differ far more than the tolerance
    assert len(counts) == 6 and 0 in counts


def test_large_vocabularies_project_each_token(run: dict, tmp_path: Path, monkeypatch) -> None:
    """The graph keeps the vocabulary's token key/value table as a constant up to MAX_TABLE_FLOATS; past it, it
    projects each token itself. Both give PyTorch's numbers."""
    import spiketok.model.export as export

    model, session = run["model"], run["session"]
    c = model.config
    graph = export.WindowGraph(model, "hand_velocity")
    assert graph.token_kv.shape == (3 * len(model.unit_emb), 2 * c.cross_heads * c.head_dim)
    monkeypatch.setattr(export, "MAX_TABLE_FLOATS", graph.token_kv.numel() - 1)
    assert export.WindowGraph(model, "hand_velocity").token_kv is None
    export.export_model(model, tmp_path / "per_token.onnx")
    diff, spread, _ = compare(model, tmp_path / "per_token.onnx", session, session.id, windows(session, 4, seed=2))
    assert diff < TOL and spread > 100 * TOL
    import onnx

    table_shape = list(graph.token_kv.shape)  # the table is a constant of the default graph only

    def constants(path: Path) -> list[list[int]]:
        g = onnx.load(str(path)).graph
        return [list(i.dims) for i in g.initializer] + [
            list(a.t.dims) for n in g.node if n.op_type == "Constant" for a in n.attribute if a.t is not None
        ]

    shapes = {"table": constants(run["onnx"]), "per token": constants(tmp_path / "per_token.onnx")}
    assert table_shape in shapes["table"] and table_shape not in shapes["per token"]


def test_real_recording_windows(run: dict, tmp_path: Path) -> None:
    """The trained model extended to a real M1 recording (its units, session and velocity statistics), exported:
    onnxruntime and TorchScript against PyTorch on real windows; replay through ONNX equals replay in PyTorch."""
    if not REAL.exists():
        pytest.skip(f"real recording {REAL} is absent (the shared data folder is not mounted here)")
    session, _ = read_nwb(REAL, ReadOptions(behavior=["hand_velocity"]))
    model = load(run["ckpt"])
    model.unit_emb.extend(session.unit_ids)
    model.session_emb.extend([session.id])
    v = session.behavior("hand_velocity").values
    model.normalizer.set(session.id, "hand_velocity", np.nanmean(v, 0), np.nanstd(v, 0))
    ckpt = save_model(model, tmp_path / "real.ckpt")
    for fmt, name in (("onnx", "real.onnx"), ("torchscript", "real.pt")):
        code, text = cli("export", ckpt, "--format", fmt, "--out", tmp_path / name)
        assert code == 0, text
        diff, spread, counts = compare(model, tmp_path / name, session, session.id, windows(session, 5, seed=1))
        print(f"real windows, {fmt}: max abs difference {diff:.2e}, spike counts {sorted(counts)}")
        assert diff < TOL, f"{fmt}: max abs difference {diff:.2e} on real windows"
        assert spread > 100 * TOL and len(counts) == 5 and max(counts) > 1000  # real M1 windows: thousands of spikes
    torch_run = replay(model, session, every=0.05, limit=1.0, progress=False)
    onnx_run = replay_exported(ExportedModel(tmp_path / "real.onnx"), session, every=0.05, limit=1.0, progress=False)
    assert len(onnx_run.times) == 20 and np.array_equal(onnx_run.times, torch_run.times)
    assert np.abs(onnx_run.y_pred - torch_run.y_pred).max() < TOL


def test_int8_export_stays_close_and_says_so(run: dict, tmp_path: Path) -> None:
    """`export --int8`: a smaller onnxruntime graph, sidecar precision "int8", outputs near PyTorch's: int8 weights
    move them by more than the float graph's 1e-4 but by less than 5% of the behaviour's standard deviation."""
    code, text = cli("export", run["ckpt"], "--out", tmp_path / "q.onnx", "--int8")
    assert code == 0, text
    assert json.loads(sidecar_path(tmp_path / "q.onnx").read_text())["precision"] == "int8"
    assert json.loads(sidecar_path(run["onnx"]).read_text())["precision"] == "float32"
    assert (tmp_path / "q.onnx").stat().st_size < 0.6 * run["onnx"].stat().st_size
    model, session = run["model"], run["session"]
    diff, spread, _ = compare(model, tmp_path / "q.onnx", session, session.id, windows(session, 6, seed=0))
    std = float(np.min(model.normalizer.get(session.id, "hand_velocity")[1].numpy()))
    print(f"int8 onnx: max abs difference {diff:.2e}, behaviour std {std:.2e}")
    assert TOL < diff < 0.05 * std
    code, text = cli("export", run["ckpt"], "--out", tmp_path / "q.pt", "--format", "torchscript", "--int8")
    assert code == 2 and "int8 export is for ONNX graphs" in text


def test_sidecar_describes_the_graph(run: dict) -> None:
    import onnxruntime as ort

    model, session = run["model"], run["session"]
    meta = json.loads(sidecar_path(run["onnx"]).read_text())
    assert meta["format"] == "spiketok-export" and meta["format_version"] == SIDECAR_VERSION
    assert meta["graph"] == "onnx" and meta["target"] == "hand_velocity" and meta["dims"] == 2
    assert meta["window"] == model.config.window and meta["causal"] is True
    assert meta["units"] == {u: k for k, u in enumerate(model.unit_emb.ids)}
    assert meta["sessions"] == {session.id: 0}
    assert meta["normalization"][session.id] == model.normalizer.stats[session.id]["hand_velocity"]
    assert meta["splits"][session.id]["test"] == model.meta.splits[session.id]["test"]
    c = model.config
    assert len(meta["latents"]["times"]) == c.num_latents_per_step * round(c.window / c.latent_step)
    graph_inputs = ort.InferenceSession(str(run["onnx"]), providers=["CPUExecutionProvider"]).get_inputs()
    assert [(i.name, i.type) for i in graph_inputs] == [
        (i["name"], f"tensor({i['dtype'].replace('float64', 'double')})") for i in meta["inputs"]
    ]
    assert graph_inputs[0].shape == ["n_tokens"] and graph_inputs[3].shape == ["n_out"]
    for key in ("keys", "window"):  # the streaming graphs: files beside the model, inputs as the sidecar says
        entry = meta["stream"][key]
        graph = ort.InferenceSession(str(run["onnx"].parent / entry["file"]), providers=["CPUExecutionProvider"])
        assert [i.name for i in graph.get_inputs()] == [i["name"] for i in entry["inputs"]]
        assert [o.name for o in graph.get_outputs()] == [o["name"] for o in entry["outputs"]]
    assert meta["stream"]["keys"]["outputs"][0]["shape"][1] == 2 * c.cross_heads * c.head_dim
    # tokenizing from the sidecar alone gives what the model's tokenizer gives
    w = session.slice(session.start + 5.0, session.start + 6.0)
    rows = np.array([meta["units"][u] for u in session.unit_ids])
    ours = ExportedModel(run["onnx"]).tokenize(rows[w.spike_units], w.spike_times, rows)
    theirs = SpikeTokenizer(c.num_latents_per_step, c.latent_step, c.window).inputs(
        w.spike_times, w.spike_units, rows, 1.0
    )
    for a, b, key in zip(ours, theirs, ("input_units", "input_times", "input_types")):
        assert np.array_equal(a, b), key


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_replay_through_exported_model_equals_pytorch(run: dict, fmt: str) -> None:
    model, session = run["model"], run["session"]
    torch_run = replay(model, session, session.splits["test"], every=0.02, limit=3.0, progress=False)
    exp_run = replay_exported(
        ExportedModel(run[fmt]), session, session.splits["test"], every=0.02, limit=3.0, progress=False
    )
    assert len(exp_run.times) == 150 and np.array_equal(exp_run.times, torch_run.times)
    assert np.abs(exp_run.y_pred - torch_run.y_pred).max() < TOL
    assert np.ptp(torch_run.y_pred, axis=0).max() > 100 * TOL  # predictions move: the match means something
    np.testing.assert_allclose(exp_run.r2(), torch_run.r2(), atol=1e-5)


def test_replay_cli_with_onnx(run: dict, tmp_path: Path) -> None:
    session_file = run["session"].path
    code, text = cli("replay", run["ckpt"], session_file, "--limit", "2", "--json", tmp_path / "torch.json")
    assert code == 0, text
    code, text = cli("replay", "--onnx", run["onnx"], session_file, "--limit", "2", "--json", tmp_path / "onnx.json")
    assert code == 0, text
    a, b = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("torch", "onnx"))
    assert a["n_decodes"] == b["n_decodes"] == 100 and a["session"] == b["session"]
    assert abs(a["r2"] - b["r2"]) < 1e-5 and a["r2_per_dim"] != [0.0, 0.0]


def test_streaming_decoder_on_exported_model_rules(run: dict) -> None:
    """Packets out of order, late spikes and unknown units are refused as by StreamingDecoder."""
    from spiketok.model import UnknownIdError
    from spiketok.stream import LateSpikeError, StreamOrderError

    exported, session = ExportedModel(run["onnx"]), run["session"]
    dec = ExportedStreamingDecoder(exported, session.id)
    assert dec.unit_ids == session.unit_ids and dec.target == "hand_velocity"
    dec.push([0, 1], [10.0, 10.01])
    with pytest.raises(StreamOrderError):
        dec.push([2], [9.5])
    y = dec.decode(10.5)
    assert y.shape == (2,) and np.isfinite(y).all()
    with pytest.raises(LateSpikeError):
        dec.push([2], [10.2])
    with pytest.raises(KeyError):
        dec.push(["nope"], [11.0])
    with pytest.raises(UnknownIdError):
        ExportedStreamingDecoder(exported, "another_session")
    with pytest.raises(ValueError, match="exported for"):
        ExportedStreamingDecoder(exported, session.id, target="other")


def packets(session, start: float, seconds: float, every: float = 0.02):
    """The session's spikes in [start, start + seconds) as consecutive packets of `every` s: (units, times, t_end)."""
    for k in range(int(round(seconds / every))):
        t0, t1 = start + k * every, start + (k + 1) * every
        w = session.slice(t0, t1, behavior=[])
        yield w.spike_units, w.spike_times + t0, t1


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_keyed_streaming_equals_whole_windows_and_keys_each_spike_once(run: dict, fmt: str) -> None:
    """The streaming graphs (each spike keyed once, by its session time) give the window graph's numbers decode by
    decode, through buffer growth and compaction; the keys graph sees each spike once plus the START/END tokens."""
    exported, session = ExportedModel(run[fmt]), run["session"]
    assert exported.has_stream
    keyed = ExportedStreamingDecoder(exported, session.id, capacity=16)  # grows and compacts many times
    whole = ExportedStreamingDecoder(exported, session.id, keyed=False)
    assert keyed.keyed and not whole.keyed
    seen = []
    keys = exported.keys
    exported.keys = lambda units, types, times: (seen.append(len(units)), keys(units, types, times))[1]
    diffs, outs, n_spikes = [], [], 0
    for units, times, t in packets(session, session.start + 3.0, 4.0):
        assert keyed.push(units, times) == whole.push(units, times) == len(times)
        n_spikes += len(times)
        a, b = keyed.decode(t), whole.decode(t)
        diffs.append(np.abs(a - b).max())
        outs.append(b)
    print(f"keyed against whole windows, {fmt}: max abs difference {max(diffs):.2e} over {len(diffs)} decodes")
    assert max(diffs) < 1e-5
    assert np.ptp(np.array(outs), axis=0).max() > 1e3 * max(diffs)  # the outputs move: the match means something
    assert sum(seen) == n_spikes + 2 * keyed.n_units * len(diffs)  # spikes keyed once, START/END at each decode
    assert 0 < keyed.n_buffered == whole.n_buffered
    keyed.reset()
    assert keyed.n_buffered == 0


def test_exports_without_streaming_graphs_decode_whole_windows(run: dict, tmp_path: Path) -> None:
    """An export whose sidecar names no streaming graphs (as older ones) decodes whole windows; asking for the keyed
    path then says to export again; a sidecar naming a missing graph file is refused on loading."""
    old = tmp_path / "old.onnx"
    old.write_bytes(run["onnx"].read_bytes())
    meta = json.loads(sidecar_path(run["onnx"]).read_text())
    sidecar_path(old).write_text(json.dumps({k: v for k, v in meta.items() if k != "stream"}))
    exported, session = ExportedModel(old), run["session"]
    assert not exported.has_stream
    dec = ExportedStreamingDecoder(exported, session.id)
    assert not dec.keyed
    ref = ExportedStreamingDecoder(ExportedModel(run["onnx"]), session.id)
    for units, times, t in packets(session, session.start + 3.0, 1.2):
        dec.push(units, times)
        ref.push(units, times)
        assert np.abs(dec.decode(t) - ref.decode(t)).max() < 1e-5
    with pytest.raises(ValueError, match="export the model again"):
        ExportedStreamingDecoder(exported, session.id, keyed=True)
    sidecar_path(old).write_text(json.dumps(meta))  # names model.keys.onnx, which is not beside old.onnx
    with pytest.raises(ValueError, match="streaming graph model.keys.onnx is missing"):
        ExportedModel(old)


def test_bad_inputs_end_in_one_error_line(run: dict, tmp_path: Path) -> None:
    def error(*args) -> str:
        code, text = cli(*args)
        assert code == 2, text
        lines = [ln for ln in text.strip().splitlines() if ln.strip()]
        assert lines[-1].startswith("error:") or "Invalid value" in text, text
        return text

    assert "not a task" in error("export", run["ckpt"], "--out", tmp_path / "m.onnx", "--target", "nope")
    assert "choose one of" in error("export", run["ckpt"], "--out", tmp_path / "m.onnx", "--format", "tflite")
    assert "is a folder" in error("export", run["ckpt"], "--out", tmp_path)
    assert "error:" in error("export", tmp_path / "missing.ckpt", "--out", tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists()  # nothing half-written
    lonely = tmp_path / "lonely.onnx"
    lonely.write_bytes(run["onnx"].read_bytes())
    assert "sidecar lonely.onnx.json is missing" in error("replay", "--onnx", lonely, run["session"].path)
    sidecar_path(lonely).write_text("{not json")
    assert "not valid JSON" in error("replay", "--onnx", lonely, run["session"].path)
    sidecar_path(lonely).write_text(
        json.dumps({**json.loads(sidecar_path(run["onnx"]).read_text()), "format_version": 99})
    )
    assert "upgrade spiketok" in error("replay", "--onnx", lonely, run["session"].path)
    assert "give only the session FILE" in error("replay", "--onnx", run["onnx"], run["ckpt"], run["session"].path)
