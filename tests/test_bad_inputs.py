"""Bad input, as a careless or hostile user gives it, through the real CLI (issue 32).

Every case ends in exit status 2, exactly one `error:` line, no traceback, and leaves the working folder as it
was: no new file, no changed file. Classes: settings (unknown keys at any depth, wrong types, out of range,
--devices), model files (damaged metadata, a crafted resume checkpoint, `convert` without --trust), outputs
(existing files without --overwrite, a model file or recording in the way, an output that is an input, a
prepared session of another recording), and recordings too short or requests that make no sense (--target,
--rate). Two hypothesis properties: damaged model metadata and random settings end in one `error:` line or
in a result identical to the undamaged file's (a setting the schema accepts, typed as its rule says).
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import struct
from pathlib import Path

import numpy as np
import pytest
from conftest import cli, rewrite_meta, write_nwb
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from spiketok.data.session import Behavior, Intervals, Session
from spiketok.data.simulate import simulate_to_folder
from spiketok.data.storage import StoredSession, write_session

TRAIN = [
    "target=hand_velocity",
    "model.window=1",
    "max_steps=4",
    "steps_per_epoch=2",
    "batch_size=4",
    "warmup_steps=1",
    "eval_stride=1.0",
]


class Payload:
    """Unpickling this writes a marker file: proof that a loader ran code from the file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "code ran"))


def short_copy(stored: StoredSession, path: Path, seconds: float) -> Path:
    """The first `seconds` of a prepared session (same id and units), split in three."""
    w = stored.slice(stored.start, stored.start + seconds)
    beh = {
        n: Behavior(n, b.timestamps + stored.start, b.values, b.unit, b.dims, b.weights) for n, b in w.behavior.items()
    }
    cut = [stored.start + f * seconds for f in (0.0, 0.5, 0.75, 1.0)]
    splits = {
        name: Intervals(np.array([cut[k]]), np.array([cut[k + 1]])) for k, name in enumerate(("train", "valid", "test"))
    }
    session = Session(
        stored.id,
        w.spike_times + stored.start,
        w.spike_units,
        stored.unit_names,
        behaviors=beh,
        splits=splits,
        start=stored.start,
        end=stored.start + seconds,
    )
    return write_session(session, path)


def recording(path: Path, n_units: int, seed: int) -> Path:
    """A 12 s NWB recording: `n_units` units at ~20 Hz and a 2-D hand_velocity at 100 Hz."""
    rng = np.random.default_rng(seed)
    ts = np.arange(0.0, 12.0, 0.01)
    units = {str(u): np.sort(rng.uniform(0, 12.0, 240)) for u in range(n_units)}
    beh = {"hand_velocity": {"data": np.stack([np.sin(ts), np.cos(ts)], 1), "timestamps": ts, "kind": "timeseries"}}
    return write_nwb(path, units, beh)


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> dict[str, Path]:
    """The working folder: a session, a model trained on it for 4 steps, damaged copies, outputs in the way."""
    root = tmp_path_factory.mktemp("bad-inputs")
    (good,) = simulate_to_folder(
        root / "sim", n_animals=1, sessions_per_animal=1, n_units=(10, 10), duration=30.0, seed=3, task="center_out"
    )
    code, out = cli("train", "--data", good, "--out", root / "run", "--accelerator", "cpu", "--no-progress", *TRAIN)
    assert code == 0, out
    model = root / "run" / "model.ckpt"
    f = {
        "root": root,
        "good": good,
        "model": model,
        "run": root / "run",
        "pickled": next((root / "run" / "checkpoints").glob("best-*.ckpt")),
        "short": short_copy(StoredSession(good), root / "short" / good.name, 0.6),
    }
    damaged = {
        "norm_empty": lambda m: m.update(normalization={}),
        "norm_x": lambda m: m.update(normalization={"x": 1}),
        "tasks_list": lambda m: m.update(tasks=list(m["tasks"])),
        "std_nan": lambda m: next(iter(m["normalization"].values()))["hand_velocity"].update(std=[math.nan, 1.0]),
        "units_short": lambda m: m.update(unit_ids=m["unit_ids"][:-1]),
    }
    for name, change in damaged.items():
        f[name] = rewrite_meta(model, root / f"{name}.ckpt", change)
    crafted = root / "crafted-run" / "checkpoints" / "last.ckpt"
    crafted.parent.mkdir(parents=True)
    import torch

    torch.save({"hyper_parameters": {"model": {}}, "state_dict": {}, "x": Payload(root / "marker.txt")}, crafted)
    f["crafted_run"] = crafted.parents[1]
    for name, n_units, seed in (("a", 8, 0), ("b", 6, 1)):  # two recordings with the same file name
        (root / f"nwb_{name}").mkdir()
        f[f"rec_{name}"] = recording(root / f"nwb_{name}" / "rec.nwb", n_units, seed)
    code, out = cli("prepare", f["rec_a"], "--out", root / "prepared")
    assert code == 0, out
    (root / "empty").mkdir()
    f["empty"] = root / "empty"
    for name, text in (("old.npz", "old predictions"), ("old.json", "{}"), ("old.onnx", "old graph")):
        (root / name).write_text(text)
        f[name] = root / name
    return f


def snapshot(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def assert_refused(code: int, out: str, *phrases: str) -> str:
    """Exit status 2, exactly one `error:` line holding every phrase, and no traceback."""
    errors = [line for line in out.splitlines() if line.startswith("error: ")]
    assert code == 2, out
    assert len(errors) == 1, out
    assert "Traceback" not in out, out
    for p in phrases:
        assert p in errors[0], errors[0]
    return errors[0]


def train_args(f, *extra):
    return [
        "train",
        "--data",
        f["good"],
        "--out",
        f["root"] / "new-run",
        "--accelerator",
        "cpu",
        "--no-progress",
        *extra,
    ]


CASES = {
    # settings: unknown keys at any depth, wrong types, out of range; devices the machine lacks
    "unknown nested key": (lambda f: train_args(f, "foo.bar=1"), ["foo.bar=1", "known settings"]),
    "unknown model key": (lambda f: train_args(f, "model.foo=1"), ["model.foo=1", "known model settings"]),
    "max_steps text": (lambda f: train_args(f, "max_steps=abc"), ["max_steps=abc", "whole number >= 1"]),
    "max_steps negative": (lambda f: train_args(f, "max_steps=-5"), ["max_steps=-5", "whole number >= 1"]),
    "max_steps zero": (lambda f: train_args(f, "max_steps=0"), ["max_steps=0", "whole number >= 1"]),
    "lr text": (lambda f: train_args(f, "lr=abc"), ["lr=abc", "finite number >= 0"]),
    "batch_size zero": (lambda f: train_args(f, "batch_size=0"), ["batch_size=0", "whole number >= 1"]),
    "negative window": (lambda f: train_args(f, "model.window=-1"), ["model.window=-1", "> 0"]),
    "devices 99": (lambda f: train_args(f, "--devices", "99"), ["--devices 99", "at most"]),
    "devices text": (lambda f: train_args(f, "--devices", "abc"), ["--devices 'abc'"]),
    "adapt steps negative": (
        lambda f: ["adapt", f["model"], f["good"], "--out", f["root"] / "a.ckpt", "max_steps=-5"],
        ["max_steps=-5", "whole number >= 1"],
    ),
    "adapt fraction text": (
        lambda f: ["adapt", f["model"], f["good"], "--out", f["root"] / "a.ckpt", "valid_fraction=abc"],
        ["valid_fraction=abc", "> 0 and < 1"],
    ),
    # model files: damaged metadata in every command that reads a model; code in a resume file; convert
    **{
        f"{cmd} {bad}": (
            lambda f, cmd=cmd, bad=bad: {
                "evaluate": ["evaluate", f[bad], "--data", f["good"]],
                "predict": ["predict", f[bad], f["good"], "--out", f["root"] / "p.npz"],
                "export": ["export", f[bad], "--out", f["root"] / "m.onnx"],
                "adapt": ["adapt", f[bad], f["good"], "--out", f["root"] / "a.ckpt"],
            }[cmd],
            ["metadata is damaged"],
        )
        for cmd in ("evaluate", "predict", "export", "adapt")
        for bad in ("norm_empty", "norm_x", "tasks_list")
    },
    "evaluate std nan": (lambda f: ["evaluate", f["std_nan"], "--data", f["good"]], ["finite"]),
    "evaluate vocabulary": (lambda f: ["evaluate", f["units_short"], "--data", f["good"]], ["9 unit ids for 10"]),
    "resume crafted last.ckpt": (
        lambda f: [
            "train",
            "--data",
            f["good"],
            "--out",
            f["crafted_run"],
            "--resume",
            "--accelerator",
            "cpu",
            "--no-progress",
            *TRAIN,
        ],
        ["not loaded"],
    ),
    "convert without --trust": (lambda f: ["convert", f["pickled"], f["root"] / "conv.ckpt"], ["--trust"]),
    # data given where it does not belong: a recording where a prepared session goes, an empty folder
    "train on an NWB recording": (
        lambda f: ["train", "--data", f["rec_a"], "--out", f["root"] / "new-run", *TRAIN],
        ["is an NWB recording, not a prepared session", "spiketok prepare"],
    ),
    "train on an empty folder": (
        lambda f: ["train", "--data", f["empty"], "--out", f["root"] / "new-run", *TRAIN],
        ["empty: no prepared session files (*.h5)", "spiketok prepare"],
    ),
    "prepare a missing file": (
        lambda f: ["prepare", f["root"] / "missing.nwb", "--out", f["root"] / "prepared"],
        ["missing.nwb: no such file"],
    ),
    # outputs: never overwritten without consent, never a model file, a recording or an input
    "predict over a file": (lambda f: ["predict", f["model"], f["good"], "--out", f["old.npz"]], ["--overwrite"]),
    "predict over a recording": (
        lambda f: ["predict", f["model"], f["good"], "--out", f["rec_b"], "--overwrite"],
        ["a recording is there"],
    ),
    "predict over its input": (
        lambda f: ["predict", f["model"], f["rec_a"], "--out", f["rec_a"], "--overwrite"],
        ["input recording"],
    ),
    "export over its model": (lambda f: ["export", f["model"], "--out", f["model"], "--overwrite"], ["inputs"]),
    "export over a file": (lambda f: ["export", f["model"], "--out", f["old.onnx"]], ["--overwrite"]),
    "adapt over a file": (lambda f: ["adapt", f["model"], f["good"], "--out", f["old.npz"]], ["--overwrite"]),
    "adapt over its model": (
        lambda f: ["adapt", f["model"], f["good"], "--out", f["model"], "--overwrite"],
        ["inputs"],
    ),
    "evaluate json over a file": (
        lambda f: ["evaluate", f["model"], "--data", f["good"], "--json", f["old.json"]],
        ["--overwrite"],
    ),
    "evaluate json over a model": (
        lambda f: ["evaluate", f["model"], "--data", f["good"], "--json", f["pickled"], "--overwrite"],
        ["a model file is there"],
    ),
    "prepare over another recording": (
        lambda f: ["prepare", f["rec_b"], "--out", f["root"] / "prepared"],
        ["another recording", "--overwrite"],
    ),
    # requests that make no sense, recordings too short to score
    "evaluate unknown target": (
        lambda f: ["evaluate", f["model"], "--data", f["good"], "--target", "nonexistent"],
        ["--target nonexistent"],
    ),
    "predict negative rate": (
        lambda f: ["predict", f["model"], f["good"], "--out", f["root"] / "p.csv", "--rate", "-5"],
        ["--rate -5"],
    ),
    **{
        f"{cmd} too short": (
            lambda f, cmd=cmd: {
                "evaluate": ["evaluate", f["model"], "--data", f["short"]],
                "predict": ["predict", f["model"], f["short"], "--out", f["root"] / "p.npz"],
                "replay": ["replay", f["model"], f["short"]],
                "baseline": ["baseline", "--data", f["short"], "--target", "hand_velocity"],
            }[cmd],
            ["0.6 s long", "at least 1 s"],
        )
        for cmd in ("evaluate", "predict", "replay", "baseline")
    },
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_refused_with_one_error_line_and_nothing_written(work, case, monkeypatch) -> None:
    monkeypatch.chdir(work["root"])
    args, phrases = CASES[case]
    before = snapshot(work["root"])
    assert_refused(*cli(*args(work)), *phrases)
    assert snapshot(work["root"]) == before
    assert not (work["root"] / "marker.txt").exists()  # no code from a file ran


def test_one_bad_file_is_one_line_and_debug_shows_the_traceback(work, monkeypatch) -> None:
    """prepare of one missing file: its error line only (no second summary line); --debug: the traceback."""
    monkeypatch.chdir(work["root"])
    code, out = cli("prepare", "missing.nwb", "--out", "prepared")
    assert code == 2 and [line for line in out.splitlines() if line.strip()] == [
        "error: missing.nwb: no such file; give the path of an NWB 2 file (.nwb)"
    ], out
    from spiketok.data.session import DataError

    with pytest.raises(DataError, match="missing.nwb: no such file"):  # cli() raises what the command raised
        cli("--debug", "prepare", "missing.nwb", "--out", "prepared")


def test_a_recording_with_too_few_trials_to_split_says_it_is_split_in_time(work, tmp_path) -> None:
    rec = recording(tmp_path / "two.nwb", 6, 2)
    two = write_nwb(
        tmp_path / "two-trials.nwb",
        {str(u): np.sort(np.random.default_rng(u).uniform(0, 12, 240)) for u in range(6)},
        {"hand_velocity": {"data": np.ones((1200, 2)), "timestamps": np.arange(0, 12, 0.01), "kind": "timeseries"}},
        trials={"start_time": [1.0, 6.0], "stop_time": [5.0, 10.0]},
    )
    assert rec.exists()
    code, out = cli("prepare", two, "--out", tmp_path / "p")
    assert code == 0, out
    assert "only 2 trial(s), too few to split whole trials: the session is split in time blocks" in " ".join(
        out.split()
    )


def test_a_failed_train_leaves_no_run_folder(work, tmp_path) -> None:
    """Bad data found once training has begun (here: no behaviour sample with weight > 0, found after the recipe
    wrote recipe.json) removes the run folder the call made, so the next call is not refused."""
    session = StoredSession(work["good"]).load()
    for b in session.behaviors.values():
        b.weights = np.zeros_like(b.weights)
    bad = write_session(session, tmp_path / "unscored" / work["good"].name)
    code, out = cli("train", "--data", bad, "--out", tmp_path / "run", "--accelerator", "cpu", "--no-progress", *TRAIN)
    assert code == 2 and not (tmp_path / "run").exists(), out


def test_consent_replaces_outputs_atomically(work, tmp_path) -> None:
    """--overwrite replaces a plain output, through a temporary file: nothing else is left beside it."""
    out = tmp_path / "p.npz"
    out.write_text("old")
    code, text = cli("predict", work["model"], work["good"], "--out", out, "--overwrite")
    assert code == 0, text
    assert set(np.load(out)) >= {"timestamps", "predictions"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.npz"]


def test_every_setting_has_a_rule() -> None:
    """The schema follows the dataclasses it checks: a new setting without a rule fails here."""
    from dataclasses import fields

    from spiketok.adapt.run import AdaptConfig
    from spiketok.schema import ADAPT_RULES, TRAIN_RULES, check_config
    from spiketok.train.config import PRESETS, load_config

    assert set(ADAPT_RULES) == {f.name for f in fields(AdaptConfig)}
    for preset in PRESETS:
        cfg = load_config(preset)
        assert set(cfg.to_dict()) == set(TRAIN_RULES) and check_config(cfg.to_dict()) == cfg.to_dict()


def test_a_train_config_refuses_a_bad_value_however_it_is_changed() -> None:
    """A TrainConfig checks its fields when made: by load_config, by `set` and by dataclasses.replace."""
    from dataclasses import replace

    from spiketok.schema import ConfigError, TrainConfig
    from spiketok.train.config import load_config

    cfg = load_config("tiny")
    assert cfg.set("model.window", "2").model.window == 2.0 and replace(cfg, max_steps=5.0).max_steps == 5
    assert cfg.set("model", "poyo-1.3M").model.to_dict() == {"size": "poyo-1.3M"}
    with pytest.raises(ConfigError, match=r"setting max_steps=0 is not allowed"):
        replace(cfg, max_steps=0)
    with pytest.raises(ConfigError, match=r"setting model.window=-1 is not allowed"):
        cfg.set("model.window", -1)
    with pytest.raises(ConfigError, match=r"unknown config key 'model.foo'"):
        cfg.set("model.foo", 1)
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg  # one way to plain data and back


def test_predict_killed_while_writing_leaves_the_previous_output_whole(work, tmp_path) -> None:
    """kill -9 while `predict --overwrite` writes its NWB file: the previous file stays byte for byte (the new
    one goes to a temporary file beside it, renamed only when complete), or the new one is whole."""
    import os
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "p.nwb"
    code, text = cli("predict", work["model"], work["good"], "--out", out)
    assert code == 0, text
    before = out.read_bytes()
    exe = Path(sys.executable).parent / "spiketok"
    proc = subprocess.Popen(
        [str(exe), "predict", str(work["model"]), str(work["good"]), "--out", str(out), "--overwrite", "--rate", "50"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline, killed = time.monotonic() + 120, False
    while proc.poll() is None and time.monotonic() < deadline:
        if list(tmp_path.glob(".p.nwb.*.tmp")):  # writing has begun
            os.kill(proc.pid, signal.SIGKILL)
            killed = True
            break
        time.sleep(0.002)
    proc.wait(timeout=60)
    if killed:
        assert out.read_bytes() == before
    else:  # it finished before the poll saw it write: the new file is whole
        from pynwb import NWBHDF5IO

        with NWBHDF5IO(str(out), "r") as io:
            assert "hand_velocity" in io.read().processing["spiketok"].data_interfaces


# --- hypothesis: damaged metadata, random settings ---------------------------------------------------------

JUNK = [None, True, "x", -1, 0, math.nan, math.inf, [], {"x": 1}, [None]]


def _paths(node, prefix=()):
    """Every place in the metadata a value sits (containers and leaves), as key paths."""
    yield prefix
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for k, v in items:
        yield from _paths(v, (*prefix, k))


def _get(meta, path):
    for k in path:
        meta = meta[k]
    return meta


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


@pytest.fixture(scope="module")
def meta_paths(work) -> tuple[dict, list]:
    raw = work["model"].read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    meta = json.loads(json.loads(raw[8 : 8 + n])["__metadata__"]["spiketok"])
    # `train` as a whole and `extra` are free-form records: a valid other value there is another model, not damage
    paths = [p for p in _paths(meta) if p and p[0] not in ("extra",) and p != ("train",)]
    return meta, paths


@pytest.fixture(scope="module")
def undamaged(work, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("undamaged") / "r.json"
    code, text = cli("evaluate", work["model"], "--data", work["good"], "--json", out)
    assert code == 0, text
    return json.loads(out.read_text())


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_damaged_metadata_is_refused_or_changes_nothing(work, meta_paths, undamaged, tmp_path_factory, data) -> None:
    meta, paths = meta_paths
    path = data.draw(st.sampled_from(paths), label="path")
    original = _get(meta, path)
    value = data.draw(st.sampled_from(JUNK), label="value")
    # damage, not another valid model: never a finite number for a number, nor a value of the original's own type
    assume(not (_is_number(original) and _is_number(value) and math.isfinite(value)))
    assume(not (isinstance(original, (str, bool)) and type(value) is type(original)) and original is not None)

    def change(m):
        parent = _get(m, path[:-1])
        parent[path[-1]] = copy.deepcopy(value)

    folder = tmp_path_factory.mktemp("fuzz")
    bad = rewrite_meta(work["model"], folder / "bad.ckpt", change)
    code, text = cli("evaluate", bad, "--data", work["good"], "--json", folder / "r.json")
    if code == 0:
        result = json.loads((folder / "r.json").read_text())
        assert result == undamaged, f"{path} = {value!r} was accepted and changed the result"
    else:
        assert_refused(code, text)
        assert not (folder / "r.json").exists()


SETTING_KEYS = [
    "max_steps",
    "batch_size",
    "lr",
    "model.window",
    "model.dim",
    "ema",
    "patience",
    "seed",
    "causal",
    "precision",
    "target",
    "foo",
    "foo.bar",
    "model.foo",
    "model.window.x",
    "eval_stride",
]
SETTING_VALUES = ["abc", "-5", "0", "1", "2.5", "nan", ".inf", "[", "", "true", "null", "auto", "{a: 1}", "1e-3"]


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(key=st.sampled_from(SETTING_KEYS), value=st.sampled_from(SETTING_VALUES))
def test_random_settings_are_refused_or_typed(work, tmp_path_factory, key, value) -> None:
    """Every key=value ends in one `error:` line naming it, or is a setting whose value has its rule's type (the
    run then stops at the data, given as a missing folder, so nothing trains)."""
    from spiketok.schema import ConfigError, Rule, rule_for
    from spiketok.train.config import load_config

    folder = tmp_path_factory.mktemp("settings")
    code, text = cli("train", "--data", folder / "missing", "--out", folder / "run", f"{key}={value}")
    line = assert_refused(code, text)
    assert not (folder / "run").exists()
    try:
        cfg = load_config("tiny", [f"{key}={value}"])
    except ConfigError:
        assert f"{key}=" in line
        return
    assert "missing" in line  # the setting passed; the data did not
    rule = rule_for(key)
    typed = cfg.get(key)
    assert isinstance(rule, Rule)
    assert typed is None or typed == "auto" or type(typed) is rule.kind
