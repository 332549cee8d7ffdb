"""The export of a recurrent model: one step graph (a chunk's spikes and the state in, prediction and state out),
equal to PyTorch within 1e-4 in onnxruntime and TorchScript, streamed by ExportedRecurrentDecoder and `replay --onnx`.

The model is untrained (random weights, possm-tiny) but registered with a simulated session: the graphs must match
whatever the weights are.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from spiketok.cli import _register, app
from spiketok.data.simulate import simulate_to_folder
from spiketok.data.storage import SessionDataset
from spiketok.model import model_config, save_model
from spiketok.model.export import export_model
from spiketok.model.export_sidecar import sidecar_path
from spiketok.model.family import new_model
from spiketok.stream import replay
from spiketok.stream.exported import ExportedModel, ExportedStreamingDecoder
from spiketok.stream.exported_recurrent import ExportedRecurrentDecoder
from spiketok.stream.recurrent import RecurrentStreamingDecoder
from spiketok.train.data import register_sessions

_register()
runner = CliRunner()
TOL = 1e-4
pytestmark = pytest.mark.usefixtures("one_torch_thread")  # see conftest.py


@pytest.fixture(scope="module")
def run(tmp_path_factory, one_torch_thread) -> dict:
    root = tmp_path_factory.mktemp("recurrent_export")
    simulate_to_folder(
        root / "sim", n_animals=1, sessions_per_animal=1, n_units=(30, 30), duration=30.0, seed=4, task="center_out"
    )
    data = SessionDataset(root / "sim")
    torch.manual_seed(0)
    model = new_model(model_config({"size": "possm-tiny", "window": 1.0}))
    register_sessions(model, data, "hand_velocity")
    model.eval()
    paths = {
        fmt: export_model(model, root / f"m.{ext}", fmt)[0] for fmt, ext in (("onnx", "onnx"), ("torchscript", "pt"))
    }
    return {"root": root, "model": model, "session": next(iter(data)), **paths}


def _stream(dec, session, times: np.ndarray, silent: tuple[float, float]) -> np.ndarray:
    """Push the spikes up to each decode time (none in the `silent` interval), decode there; (N, D)."""
    w = session.slice(float(times[0]) - 1.0, float(times[-1]) + 1e-9, behavior=[])
    st, su = w.spike_times + w.t0, w.spike_units.astype(np.int64)
    keep = (st < silent[0]) | (st >= silent[1])
    st, su = st[keep], su[keep]
    dec.reset()
    dec.push(su[st < times[0]], st[st < times[0]])
    out, done = [], int(np.searchsorted(st, times[0]))
    for t in times:
        cut = int(np.searchsorted(st, t))
        dec.push(su[done:cut], st[done:cut])
        done = cut
        out.append(dec.decode(t))
    return np.stack(out)


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_exported_step_graph_streams_as_pytorch(run: dict, fmt: str) -> None:
    model, session = run["model"], run["session"]
    times = 5.0 + 0.02 * np.arange(200)  # 4 s of decodes every 20 ms, with 0.2 s without spikes (empty chunks)
    silent = (6.0, 6.2)
    ours = _stream(RecurrentStreamingDecoder(model, session.id), session, times, silent)
    dec = ExportedRecurrentDecoder(ExportedModel(run[fmt]), session.id)
    theirs = _stream(dec, session, times, silent)
    assert dec.n_chunks == 99  # chunks from 4.0 s (the warm-up's first spike) to 8.95 s
    assert np.abs(theirs - ours).max() < TOL
    assert np.ptp(ours, axis=0).max() > 100 * TOL  # predictions move: the match means something


def test_sidecar_describes_the_step_graph(run: dict) -> None:
    meta = json.loads(sidecar_path(run["onnx"]).read_text())
    model = run["model"]
    assert meta["backbone"] == "recurrent" and meta["format_version"] == 3
    assert [i["name"] for i in meta["inputs"]] == ["input_units", "input_times", "state", "session"]
    assert [o["name"] for o in meta["outputs"]] == ["behavior", "state_out"]
    rec = meta["recurrent"]
    assert rec["chunk"] == model.config.latent_step and len(rec["initial_state"]) == model.config.dim
    assert set(rec["initial_behavior"]) == set(model.session_emb.ids)
    ours = RecurrentStreamingDecoder(model, run["session"].id).decode(0.01)  # before the first chunk ends
    np.testing.assert_allclose(rec["initial_behavior"][run["session"].id], ours, atol=1e-5)
    with pytest.raises(ValueError, match="ExportedRecurrentDecoder"):
        ExportedStreamingDecoder(ExportedModel(run["onnx"]), run["session"].id)
    with pytest.raises(ValueError, match="--int8"):  # an export's arithmetic was fixed when it was written
        ExportedRecurrentDecoder(ExportedModel(run["onnx"]), run["session"].id, precision="bfloat16")
    with pytest.raises(NotImplementedError, match="recording's units"):
        ExportedRecurrentDecoder(ExportedModel(run["onnx"]), run["session"].id).decode_normalised(0.01)


def test_replay_onnx_of_a_recurrent_model(run: dict, tmp_path: Path) -> None:
    model, session = run["model"], run["session"]
    a = replay(model, session, every=0.02, limit=3.0, progress=False)
    b = replay(ExportedModel(run["onnx"]), session, every=0.02, limit=3.0, progress=False)
    assert len(a.times) == 150 and np.abs(a.y_pred - b.y_pred).max() < TOL
    ckpt = save_model(model, tmp_path / "m.ckpt")
    out = runner.invoke(app, ["replay", "--onnx", str(run["onnx"]), str(session.path), "--limit", "2"])
    assert out.exit_code == 0, out.output
    out = runner.invoke(app, ["export", str(ckpt), "--format", "onnx", "--out", str(tmp_path / "cli.onnx")])
    assert out.exit_code == 0, out.output
    assert json.loads(sidecar_path(tmp_path / "cli.onnx").read_text())["backbone"] == "recurrent"
