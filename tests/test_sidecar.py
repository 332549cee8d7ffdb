"""The export sidecar as typed records (spiketok.model.sidecar): the JSON an export writes reads back into a Sidecar
and writes out again byte for byte; a sidecar with a key missing or of the wrong type is refused naming the key.

The models are untrained (random weights) but registered with a simulated session, as an export needs; the real
export is TorchScript, which needs no extra package.
"""

from __future__ import annotations

import copy
import json
import re
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from spiketok.data.simulate import simulate_to_folder
from spiketok.data.storage import SessionDataset
from spiketok.errors import SpiketokError
from spiketok.model import model_config
from spiketok.model.export import export_model
from spiketok.model.export_recurrent import STEP_INPUTS, recurrent_entry
from spiketok.model.export_sidecar import sidecar, stream_entry
from spiketok.model.family import new_model
from spiketok.model.sidecar import SIDECAR_VERSION, Sidecar, read_sidecar, sidecar_path
from spiketok.stream import exported as stream_exported
from spiketok.stream.exported import ExportedModel, ExportFileError
from spiketok.train.data import register_sessions

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # see conftest.py


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> SessionDataset:
    root = tmp_path_factory.mktemp("sidecar")
    simulate_to_folder(
        root / "sim", n_animals=1, sessions_per_animal=1, n_units=(12, 12), duration=20.0, seed=3, task="center_out"
    )
    return SessionDataset(root / "sim")


def _model(data: SessionDataset, **settings):
    torch.manual_seed(0)
    model = new_model(model_config({"size": "tiny", "window": 1.0, **settings}))
    register_sessions(model, data, "hand_velocity")
    return model.eval()


@pytest.fixture(scope="module")
def exported(data: SessionDataset, tmp_path_factory, one_torch_thread) -> dict:
    """A tiny POYO exported as TorchScript (window graph, streaming graphs, sidecar)."""
    model = _model(data)
    graph, side = export_model(model, tmp_path_factory.mktemp("export") / "m.pt", "torchscript")
    return {"model": model, "graph": graph, "side": side, "text": side.read_text()}


def test_an_exported_sidecar_round_trips(exported: dict) -> None:
    text, model = exported["text"], exported["model"]
    meta = read_sidecar(exported["graph"])
    assert json.dumps(meta.to_dict(), indent=1) == text  # what the export wrote, byte for byte
    assert Sidecar.from_dict(json.loads(text)) == meta == Sidecar.from_dict(meta.to_dict())
    # the builder's record is the one read back from the file
    stream = stream_entry(model, "hand_velocity", "m.keys.pt", "m.stream.pt")
    assert sidecar(model, "hand_velocity", "torchscript", stream=stream) == meta
    assert meta.format_version == SIDECAR_VERSION and meta.backbone is None and meta.recurrent is None
    assert (
        meta.latents.grid == "window" and meta.latents.rule is None and len(meta.latents.times) == len(meta.latents.ids)
    )
    # ExportedModel reads the typed record
    loaded = ExportedModel(exported["graph"])
    assert loaded.meta == meta and loaded.has_stream and not loaded.recurrent
    heads, head_dim = model.encoder.attn.heads, model.encoder.attn.head_dim
    assert loaded.meta.stream.keys.outputs[0].shape[1] == 2 * heads * head_dim
    assert loaded.names == ["input_units", "input_times", "input_types", "output_times", "session"]


@pytest.mark.parametrize("kind", ["absolute", "recurrent"])
def test_built_sidecars_round_trip(data: SessionDataset, kind: str) -> None:
    """The other shapes of a sidecar: latents on the absolute grid (a `rule`, no `times`), a recurrent model's step
    graph (`backbone`, `recurrent`, no `stream`), as export_recurrent builds it."""
    if kind == "absolute":
        meta = sidecar(_model(data, latent_grid="absolute"), "hand_velocity", "onnx")
        assert meta.latents.times is None and "rule" in meta.to_dict()["latents"]
        assert "times" not in meta.to_dict()["latents"] and meta.inputs[-1].name == "window_start"
    else:
        torch.manual_seed(0)
        model = new_model(model_config({"size": "possm-tiny", "window": 1.0}))
        register_sessions(model, data, "hand_velocity")
        base = sidecar(model.eval(), "hand_velocity", "onnx")
        meta = replace(
            base, backbone="recurrent", inputs=STEP_INPUTS, recurrent=recurrent_entry(model, "hand_velocity")
        )
        assert base.backbone is None and base.recurrent is None  # replace made a new record
        assert meta.recurrent.dim == model.config.dim and len(meta.recurrent.initial_state) == model.config.dim
    d = meta.to_dict()
    assert ("stream" in d, "backbone" in d, "recurrent" in d) == (False, kind == "recurrent", kind == "recurrent")
    assert Sidecar.from_dict(json.loads(json.dumps(d))) == meta
    assert json.dumps(Sidecar.from_dict(json.loads(json.dumps(d))).to_dict(), indent=1) == json.dumps(d, indent=1)


def _set(d: dict, path: tuple, value=None, delete: bool = False) -> None:
    for k in path[:-1]:
        d = d[k]
    if delete:
        del d[path[-1]]
    else:
        d[path[-1]] = value


DAMAGE = [
    (("latents", "step"), None, True, "'latents.step' is missing"),
    (("format_version",), 3, False, None),  # (control: the unchanged sidecar reads)
    (("dims",), "2", False, "'dims' is a string, not a whole number"),
    (("window",), -1.0, False, "'window' is a number, not a positive number"),
    (("causal",), 1, False, "'causal' is a number, not true or false"),
    (("units",), [], False, "'units' is a list, not a mapping"),
    (("token_types", "end"), None, True, "'token_types.end' is missing"),
    (("inputs", 2, "shape"), "n_tokens", False, "'inputs[2].shape' is a string"),
    (("outputs", 0, "name"), None, True, "'outputs[0].name' is missing"),
    (("stream", "keys", "file"), 7, False, "'stream.keys.file' is a number, not a string"),
    (("stream", "window", "inputs"), None, True, "'stream.window.inputs' is missing"),
    (("latents", "times"), None, True, "'latents.times' is missing"),
    (("latents", "grid"), "absolute", False, "'latents.rule' is missing"),
    (("backbone",), "recurrent", False, "'recurrent' is missing"),
    (("precision",), None, True, "'precision' is missing"),
]


@pytest.mark.parametrize(("path", "value", "delete", "message"), DAMAGE)
def test_a_damaged_sidecar_is_refused_naming_the_key(exported: dict, tmp_path: Path, path, value, delete, message):
    graph = tmp_path / "m.pt"
    graph.write_bytes(exported["graph"].read_bytes())
    d = json.loads(exported["text"])
    _set(d, path, value, delete)
    sidecar_path(graph).write_text(json.dumps(d))
    if message is None:
        assert read_sidecar(graph) == read_sidecar(exported["graph"])
        return
    for read in (read_sidecar, ExportedModel):
        with pytest.raises(ExportFileError, match=re.escape(message)) as err:
            read(graph)
        assert str(err.value).startswith(f"sidecar {sidecar_path(graph)}: ")


def test_a_version_1_sidecar_reads_as_before(exported: dict, tmp_path: Path) -> None:
    """Version 1 (window grid only; early ones without `precision`, all without `stream`): its absent fields read
    as what their absence meant; the same sidecar claiming version 3 is refused."""
    d = json.loads(exported["text"])
    old = copy.deepcopy(d)
    old["format_version"] = 1
    for key in ("precision", "stream"):
        del old[key]
    del old["latents"]["grid"]
    meta = Sidecar.from_dict(old)
    assert meta.latents.grid == "window" and meta.precision == "float32" and meta.stream is None
    with pytest.raises(ExportFileError, match="'precision' is missing"):
        Sidecar.from_dict({**old, "format_version": 3})


def test_the_error_type_lives_with_the_sidecar() -> None:
    from spiketok.model import sidecar as model_sidecar

    assert stream_exported.ExportFileError is model_sidecar.ExportFileError
    assert stream_exported.read_sidecar is model_sidecar.read_sidecar
    assert issubclass(ExportFileError, SpiketokError) and issubclass(ExportFileError, ValueError)
    assert {"ExportFileError", "read_sidecar"} <= set(stream_exported.__all__)
