"""docs/tutorial.md's commands, as written there, run in order on the shared recording it names."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from conftest import cli

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from build_tutorial import PAGE, RECORDING, tutorial_commands  # noqa: E402

DATA = ROOT.parent / "shared" / "data"
SHORT = ["max_steps=100", "init_unit_id_restarts=1", "init_lr_factor=1"]  # the one setting the test adds: a short run


@pytest.mark.slow
def test_the_tutorial_runs_from_nwb_to_predictions_in_nwb(tmp_path, monkeypatch):
    if not (DATA / RECORDING).exists():
        pytest.skip(f"real recording {DATA / RECORDING} is absent (the shared data folder is not mounted here)")
    commands = tutorial_commands(PAGE.read_text())
    assert [c[1] for c in commands] == ["prepare", "info", "train", "evaluate", "baseline", "predict"]
    (tmp_path / RECORDING).symlink_to(DATA / RECORDING)
    monkeypatch.chdir(tmp_path)
    for cmd in commands:
        code, out = cli(*cmd[1:], *(SHORT if cmd[1] == "train" else []))
        assert code == 0, f"{' '.join(cmd)}:\n{out}"
    results = json.loads((tmp_path / "results.json").read_text())
    mlp = json.loads((tmp_path / "mlp.json").read_text())
    assert results["sessions"].keys() == mlp["sessions"].keys() == {"hc_linear_track"}
    assert results["mean_r2"] > 0.2  # a short run from the primate model already decodes the rat's position
    assert (tmp_path / "plots" / "traces_hc_linear_track.png").stat().st_size > 10_000
    from pynwb import NWBHDF5IO

    with NWBHDF5IO(str(tmp_path / "predictions.nwb"), "r") as io:
        series = io.read().processing["spiketok"]["led"]
        assert series.data.shape[1] == 2 and series.data.shape[0] > 100_000  # 60 Hz over about 33 minutes
