"""The five real recordings in ../shared/data: prepare each, and check `info --json` against the NWB counts."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
from typer.testing import CliRunner

import spiketok.cli.data_commands  # noqa: F401  (registers the commands)
from spiketok.cli import app
from spiketok.data.nwb import read_nwb
from spiketok.data.readers import ReadOptions
from spiketok.data.storage import write_session

DATA = Path(__file__).parents[1].parent / "shared" / "data"
FILES = {
    "m1_chewie_2013-10-03.nwb": "hand_velocity",
    "m1_chewie_2013-12-19.nwb": "hand_velocity",
    "m1_mihi_2014-03-03.nwb": "hand_velocity",
    "hc_linear_track.nwb": "led",
    "hc_w_maze.nwb": "led",
}
runner = CliRunner()


def _path(name: str) -> Path:
    path = DATA / name
    if not path.exists():
        pytest.skip(f"real recording {path} is absent (the shared data folder is not mounted here)")
    return path


def _nwb_counts(path: Path) -> tuple[int, int]:
    with h5py.File(path, "r") as f:
        return int(f["units/id"].shape[0]), int(f["units/spike_times"].shape[0])


@pytest.mark.parametrize("name", list(FILES))
def test_prepare_and_info_counts(name, tmp_path):
    path = _path(name)
    session, report = read_nwb(path, ReadOptions(behavior=[FILES[name]]))
    out = write_session(session, tmp_path / f"{session.id}.h5")
    result = runner.invoke(app, ["info", str(out), "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    n_units, n_spikes = _nwb_counts(path)
    assert (report.n_units_in, report.n_spikes_in) == (n_units, n_spikes)
    assert info["n_units"] == n_units - len(report.dropped_units)
    assert info["n_spikes"] == n_spikes - report.duplicate_spikes - report.outside_span
    assert info["behavior"][FILES[name]]["dim"] == 2
    assert set(info["splits"]) == {"train", "valid", "test"}
    if name.startswith("m1_"):
        assert info["trials"]["count"] > 150 and "target_id" in info["trials"]["columns"]


def test_known_quirks_are_reported():
    track, wmaze = _path("hc_linear_track.nwb"), _path("hc_w_maze.nwb")
    _, report = read_nwb(track, ReadOptions(behavior=["led"], keep_moving=5.0))
    assert report.dropped_timestamps == {"led": 1}  # the one timestamp that does not increase
    assert report.moving_left_out["led"] > 0.5  # frozen at (522, 8) px for the second half
    for seed in range(3):  # the valid block always holds moving samples, whatever the split seed
        session, _ = read_nwb(track, ReadOptions(behavior=["led"], keep_moving=5.0, split_seed=seed))
        led = session.behavior("led")
        assert led.weights[session.splits["valid"].contains(led.timestamps)].sum() > 100
    session, report = read_nwb(wmaze, ReadOptions(behavior=["led"], derive="velocity", keep_moving=5.0))
    assert report.moving_left_out["led"] > 0.4  # parked about 45% of the time
    assert np.bincount(session.spike_units).max() > 450_000  # the multi-unit cluster is kept, not hidden
    assert session.behavior("led_velocity").weights.sum() < 0.6 * len(session.behavior("led_velocity").weights)
    _, report = read_nwb(_path("m1_mihi_2014-03-03.nwb"), ReadOptions(behavior=["hand"]))
    assert any("constant" in note for note in report.notes)  # Mihi's hand position is all zeros in the file


def test_prepare_all_five_with_one_command(tmp_path):
    paths = [_path(name) for name in FILES]
    out = tmp_path / "prepared"
    result = runner.invoke(app, ["prepare", *map(str, paths), "--out", str(out), "--behavior", "hand_velocity,led"])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.glob("*.h5")) == sorted(p.stem + ".h5" for p in paths)
