"""The pretrained model shipped in the package: `pretrained:primate-reaching` loads, is what its card says, adapts."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from conftest import cli

import spiketok
from spiketok.model.file import ModelFileError, read_model_file
from spiketok.model.meta import FORMAT_VERSION
from spiketok.model.pretrained import FOLDER, available, model_card, pretrained_path

pytestmark = pytest.mark.usefixtures("one_torch_thread")
DATA = Path(__file__).parents[1].parent / "shared" / "data"
PRIMATE = [
    "m1_chewie_2013-10-03",
    "m1_chewie_2013-12-19",
    "m1_mihi_2014-03-03",
    "m1_chewie_2016-10-11",
    "m1_dream_stevenson2011",
    "s1_area2_spykesml",
]
SEALED = "m1_dream_stevenson2011"
ROW = r"\| {} \| \d+ \| \d+ \| \d+ \| (-?\d\.\d{{3}}) \| (-?\d\.\d{{3}}) \|"  # units, trials, train s, valid, test


def test_primate_reaching_ships_as_a_small_data_only_file_with_a_card():
    assert available() == ["primate-reaching"]
    path = pretrained_path("pretrained:primate-reaching")
    assert path.parent == FOLDER and path.stat().st_size < 5_000_000
    assert pretrained_path("pretrained:m1-reaching") == path  # the name it replaced resolves to it
    tensors, meta = read_model_file(path)
    assert meta.format_version == FORMAT_VERSION
    assert set(PRIMATE) <= set(meta.session_ids)
    assert meta.tasks == {"hand_velocity": 2}
    model = spiketok.load("pretrained:primate-reaching")
    assert len(model.unit_emb) == len(meta.unit_ids) > 800
    card = model_card("primate-reaching")
    for sid in PRIMATE:  # one row per session, with its valid and test R²; the sealed one not scored
        found = re.search(ROW.format(sid), card)
        assert (found is None) == (sid == SEALED), sid
    assert f"| {SEALED} |" in card and "sealed: not scored" in card


def test_unknown_pretrained_name_is_one_error_line():
    with pytest.raises(ModelFileError, match="available: pretrained:primate-reaching"):
        spiketok.load("pretrained:no-such-model")
    code, out = cli("model-info", "pretrained:no-such-model")
    assert code == 2 and out.strip().startswith("error: no pretrained model named 'no-such-model'")


def test_pretrained_command_lists_and_prints_the_card():
    code, out = cli("pretrained")
    assert code == 0 and "pretrained:primate-reaching" in out.split()
    assert "pretrained:m1-reaching (now pretrained:primate-reaching)" in out
    code, out = cli("pretrained", "m1-reaching")
    assert code == 0 and "m1_mihi_2014-03-03" in out and "Apache-2.0" in out and "CRCNS DREAM" in out
    code, out = cli("model-info", "pretrained:primate-reaching")
    assert code == 0 and "units / sessions in vocabulary" in out


def test_card_r2_is_what_the_shipped_weights_score(tmp_path):
    """Decode Mihi's test split with the shipped weights: the card's R² for it, to the printed digit."""
    nwb = DATA / "m1_mihi_2014-03-03.nwb"
    if not nwb.exists():
        pytest.skip(f"real recording {nwb} is absent (the shared data folder is not mounted here)")
    code, out = cli("prepare", nwb, "--out", tmp_path, "--behavior", "hand_velocity")
    assert code == 0, out
    code, out = cli(
        "evaluate",
        "pretrained:primate-reaching",
        "--data",
        tmp_path / "m1_mihi_2014-03-03.h5",
        "--json",
        tmp_path / "eval.json",
    )
    assert code == 0, out
    r2 = json.loads((tmp_path / "eval.json").read_text())["sessions"]["m1_mihi_2014-03-03"]["r2"]
    carded = float(re.search(ROW.format("m1_mihi_2014-03-03"), model_card("primate-reaching")).group(2))
    assert r2 == pytest.approx(carded, abs=6e-4)


@pytest.mark.slow
def test_demo_adapt_uses_the_shipped_model_without_pretraining(tmp_path):
    """`demo --adapt`: the shipped model learns a new simulated session's units from 10 trials."""
    code, out = cli("demo", "--adapt", "--trials", "10", "--steps", "100", "--out", tmp_path, "--no-progress")
    assert code == 0, out
    scores = {m: float(v) for m, v in re.findall(r"(unit-id|scratch) R² = (-?\d\.\d{3})", out)}
    assert set(scores) == {"unit-id", "scratch"}
    assert scores["unit-id"] > 0.5  # a new animal's units placed in the pretrained space from 10 reaches
    assert (tmp_path / "fewshot.png").stat().st_size > 10_000
    rows = (tmp_path / "fewshot_runs.csv").read_text().splitlines()
    assert len(rows) == 3 and all(",10," in r for r in rows[1:])


@pytest.mark.slow
def test_train_init_from_the_shipped_model_learns_a_target_it_never_decoded(track_1d, tmp_path):
    """`train --init pretrained:primate-reaching` on a rat-like 1-D position (no --target): the session's only
    signal gets a readout of its own, the units are identified, everything fine-tunes, and it decodes."""
    code, out = cli("prepare", track_1d["a"], "--out", tmp_path / "p")
    assert code == 0, out
    data = tmp_path / "p" / "track_a.h5"
    code, out = cli(
        "train",
        "--data",
        data,
        "--init",
        "pretrained:primate-reaching",
        "--out",
        tmp_path / "run",
        "--no-progress",
        "max_steps=50",
        "init_lr_factor=1",
        "init_unit_id_restarts=1",
    )
    assert code == 0, out
    tensors, meta = read_model_file(tmp_path / "run" / "model.ckpt")
    assert meta.tasks == {"hand_velocity": 2, "pos": 1} and meta.targets["track_a"] == "pos"
    code, out = cli("evaluate", tmp_path / "run" / "model.ckpt", "--data", data, "--json", tmp_path / "eval.json")
    assert code == 0, out
    assert json.loads((tmp_path / "eval.json").read_text())["mean_r2"] > 0.5  # measured 0.70 (0.90 at 150 steps)
