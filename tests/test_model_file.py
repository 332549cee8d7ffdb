"""The shareable model file: data only (safetensors + JSON metadata), versioned, and `spiketok convert`."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import rewrite_meta
from typer.testing import CliRunner

import spiketok
from spiketok.cli import _register, app
from spiketok.data.simulate import simulate_to_folder
from spiketok.data.storage import SessionDataset
from spiketok.evaluate.decode import decode_split
from spiketok.model.file import ModelFileError, ModelFileMeta, read_model_file
from spiketok.model.meta import FORMAT_VERSION
from spiketok.train.checkpoint import save_model
from spiketok.train.config import load_config
from spiketok.train.run import train

_register()
runner = CliRunner()


class Payload:
    """Unpickling this writes a marker file: proof that a loader ran code from the file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "code ran"))


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> dict:
    """A tiny model trained for 6 steps on one simulated session."""
    root = tmp_path_factory.mktemp("modelfile")
    (path,) = simulate_to_folder(
        root / "sim", n_animals=1, sessions_per_animal=1, n_units=(10, 10), duration=40.0, seed=4, task="center_out"
    )
    cfg = load_config(
        "tiny",
        [
            "target=hand_velocity",
            "max_steps=6",
            "steps_per_epoch=3",
            "batch_size=4",
            "warmup_steps=1",
            "eval_stride=1.0",
            "model.window=1",
            "patience=5",
        ],
    )
    result = train(SessionDataset(path), cfg, root / "run", accelerator="cpu", progress=False)
    return {"root": root, "data": path, "model": result.checkpoint, "run": root / "run", "cfg": cfg}


def _predictions(model, path: Path) -> np.ndarray:
    (s,) = SessionDataset(path)
    return decode_split(model, s, "hand_velocity", "test", stride=1.0).y_pred


@pytest.mark.parametrize("how", ["torch.save", "pickle"])
def test_a_pickle_with_a_payload_is_refused_without_running_it(tmp_path: Path, how: str) -> None:
    marker, bad = tmp_path / "marker.txt", tmp_path / "model.ckpt"
    obj = {"hyper_parameters": {"model": {}}, "state_dict": {}, "x": Payload(marker)}
    if how == "torch.save":
        torch.save(obj, bad)
    else:
        bad.write_bytes(pickle.dumps(obj, protocol=2))
    with pytest.raises(ModelFileError, match="spiketok convert"):
        spiketok.load(bad)
    assert not marker.exists()
    code = runner.invoke(app, ["model-info", str(bad)])
    assert code.exit_code == 2 and "spiketok convert" in code.output and not marker.exists()


def test_the_product_model_is_safetensors_with_versioned_metadata(run: dict) -> None:
    raw = run["model"].read_bytes()
    assert raw[:2] != b"PK"  # not a torch zip
    n = int.from_bytes(raw[:8], "little")  # safetensors: header length, then a JSON header (a pickle is neither)
    header = json.loads(raw[8 : 8 + n])
    assert "__metadata__" in header and "unit_emb.weight" in header
    tensors, meta = read_model_file(run["model"])
    assert meta.format_version == FORMAT_VERSION and meta.spiketok_version == spiketok.__version__
    assert meta.train == run["cfg"] and meta.tasks == {"hand_velocity": 2}
    (s,) = SessionDataset(run["data"])
    assert meta.unit_ids == s.unit_ids and meta.session_ids == [s.id]
    assert meta.targets == {s.id: "hand_velocity"}
    assert set(meta.normalization[s.id]["hand_velocity"]) == {"mean", "std"}
    assert tensors["unit_emb.weight"].shape == (10, 64)


def test_round_trip_train_load_save_load_gives_identical_predictions(run: dict, tmp_path: Path) -> None:
    from spiketok.train.checkpoint import model_from_checkpoint, read_pickled_checkpoint

    (best,) = (run["run"] / "checkpoints").glob("best-*.ckpt")
    trained, step = model_from_checkpoint(read_pickled_checkpoint(best))  # the weights as training left them
    loaded = spiketok.load(run["model"])
    assert read_model_file(run["model"])[1].step == step
    expected = _predictions(trained, run["data"])
    np.testing.assert_array_equal(_predictions(loaded, run["data"]), expected)
    save_model(loaded, tmp_path / "again.ckpt")
    again = spiketok.load(tmp_path / "again.ckpt")
    np.testing.assert_array_equal(_predictions(again, run["data"]), expected)
    assert again.meta == loaded.meta


def test_a_newer_format_version_gets_a_clear_message(run: dict, tmp_path: Path) -> None:
    newer = tmp_path / "newer.ckpt"
    rewrite_meta(run["model"], newer, lambda m: m.update(format_version=FORMAT_VERSION + 1, spiketok_version="9.0"))
    with pytest.raises(ModelFileError, match=r"format version 2 \(written by spiketok 9.0\) is newer.*upgrade"):
        spiketok.load(newer)
    same = tmp_path / "same.ckpt"
    rewrite_meta(run["model"], same, lambda m: None)  # the rewrite itself keeps a loadable file
    assert spiketok.load(same).task_names == ["hand_velocity"]


def test_convert_turns_a_pickled_checkpoint_into_a_model_file(run: dict, tmp_path: Path) -> None:
    (best,) = (run["run"] / "checkpoints").glob("best-*.ckpt")
    with pytest.raises(ModelFileError, match=f"spiketok convert {best}"):
        spiketok.load(best)
    refused = runner.invoke(app, ["convert", str(best), str(tmp_path / "new.ckpt")])  # no --trust
    assert refused.exit_code == 2 and refused.output.count("error: ") == 1 and "--trust" in refused.output
    assert "executes any code" in refused.output and not (tmp_path / "new.ckpt").exists()
    result = runner.invoke(app, ["convert", str(best), str(tmp_path / "new.ckpt"), "--trust"])
    assert result.exit_code == 0, result.output
    assert result.output.index("executes any code") < result.output.index("wrote")  # said before it loads
    converted = spiketok.load(tmp_path / "new.ckpt")
    np.testing.assert_array_equal(
        _predictions(converted, run["data"]), _predictions(spiketok.load(run["model"]), run["data"])
    )
    help_text = runner.invoke(app, ["convert", "--help"]).output
    assert "unpickled" in help_text and "weights_only=False" in help_text and "--trust" in help_text
    bad = runner.invoke(app, ["convert", str(run["model"]), str(tmp_path / "x.ckpt"), "--trust"])  # not a pickle
    assert bad.exit_code == 2 and bad.output.count("error: ") == 1


def test_meta_is_one_typed_dataclass() -> None:
    meta = ModelFileMeta(model={"dim": 8}, tasks={"a": 1}, unit_ids=["s/u"], session_ids=["s"])
    back = ModelFileMeta.from_json(meta.to_json())
    assert back == meta and back.tasks == {"a": 1} and back.model_meta().train is None
    with pytest.raises(ModelFileError, match="lacks"):
        ModelFileMeta.from_json(json.dumps({"format_version": 1, "model": {}}))


def test_the_records_are_typed_and_read_back_as_they_were_written() -> None:
    """The training config and the adaptation records round-trip through the JSON as dataclasses; a training
    record without a setting newer than the file reads it as its absence meant; a damaged record is refused."""
    from spiketok.model.meta import Adaptation, StageResult
    from spiketok.schema import AdaptConfig, TrainConfig

    stage = StageResult("unit-id", 10, 8, 0.25, True, 1.5)
    record = Adaptation("s", "s.h5", "unit-id", "a", 3, None, "first", 0, "3 trials", [stage], AdaptConfig())
    meta = ModelFileMeta(model={"dim": 8}, tasks={"a": 1}, unit_ids=["s/u"], session_ids=["s"])
    meta.train, meta.adaptations = load_config("tiny", ["lr=0.01"]), [record]
    back = ModelFileMeta.from_json(meta.to_json())
    assert back == meta and isinstance(back.train, TrainConfig) and back.train.lr == 0.01
    assert back.adaptations[0].stages[0].best_val_loss == 0.25 and back.adaptations[0].config == AdaptConfig()
    old = meta.to_dict()
    del old["train"]["init"]  # written before the setting existed (as the shipped model's record)
    assert ModelFileMeta.from_json(json.dumps(old)).train.init is None
    old["adaptations"][0]["stages"] = [{"name": "unit-id"}]
    with pytest.raises(ModelFileError, match="metadata is damaged"):
        ModelFileMeta.from_json(json.dumps(old))


def test_a_safetensors_header_length_ending_in_0x80_is_not_taken_for_a_pickle() -> None:
    from spiketok.model.file import _is_pickle

    header = b'{"__metadata__":{}}'.ljust(0x0380)  # a header of 896 bytes: its length starts 0x80 0x03
    assert not _is_pickle(len(header).to_bytes(8, "little") + header[:1])
    for protocol in (2, 3, 4, 5):
        assert _is_pickle(pickle.dumps({"state_dict": [1.0] * 50}, protocol=protocol)[:9])
    assert _is_pickle(b"PK\x03\x04" + bytes(5))
