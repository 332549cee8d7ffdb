"""Baseline decoders on binned spikes: binning inside intervals, weights, ridge/GRU/MLP fits, the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import spiketok.cli.baseline_command  # noqa: F401  (registers the commands)
import spiketok.cli.data_commands  # noqa: F401
from spiketok.cli import app
from spiketok.data.session import Behavior, Intervals, Session
from spiketok.data.simulate import simulate_to_folder
from spiketok.data.storage import SessionDataset, StoredSession, write_session
from spiketok.evaluate.baselines import (
    BaselineConfig,
    Chunks,
    Layout,
    SplitBins,
    Standardizer,
    bin_split,
    fit_session,
    run_baseline,
    window_features,
)

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
runner = CliRunner()


@pytest.fixture(scope="module")
def sim(tmp_path_factory) -> Path:
    """Two simulated sessions, 40 units, 60 s each."""
    out = tmp_path_factory.mktemp("sim")
    simulate_to_folder(out, n_animals=1, sessions_per_animal=2, n_units=40, duration=60.0, seed=3)
    return out


def _hand_session(tmp_path: Path) -> StoredSession:
    """Two intervals [0, 1) and [2, 3) per split, known spikes (one in the gap), 10 Hz behaviour."""
    spikes = {"a": np.array([0.005, 0.015, 0.95, 1.5, 2.001]), "b": np.array([0.5, 2.5])}
    ts = np.arange(0, 3, 0.1)
    values = np.stack([ts, -ts], 1)
    weights = np.ones(len(ts), np.float32)
    weights[5] = 0.0
    iv = Intervals([0.0, 2.0], [1.0, 3.0])
    splits = {"train": iv, "valid": iv, "test": iv}
    s = Session.from_unit_spikes(
        "hand", spikes, behaviors={"v": Behavior("v", ts, values, weights=weights)}, splits=splits, start=0.0, end=3.0
    )
    return StoredSession(write_session(s, tmp_path / "hand.h5"))


def test_bins_stay_inside_intervals(tmp_path):
    s = _hand_session(tmp_path)
    cfg = BaselineConfig(model="ridge", bin=0.1, history=0.3, lags="causal")
    b = bin_split(s, "v", "test", cfg)
    h = b.pad_h
    assert h == 3 and b.pad_la == 0 and b.rows.shape == (2 * (h - 1 + 10), 2)
    # interval 1: unit a has 2 spikes in bin 0 and 1 in bin 9; unit b one in bin 5; the gap spike (1.5 s) is gone
    first = b.rows[h - 1 : h - 1 + 10]
    assert first[:, 0].tolist() == [2, 0, 0, 0, 0, 0, 0, 0, 0, 1] and first[5, 1] == 1
    second = b.rows[2 * (h - 1) + 10 :]
    assert second[:, 0].sum() == 1 and second[5, 1] == 1  # 2.001 s and 2.5 s, nothing from the gap
    assert b.rows.sum() == 6  # 7 spikes, one in the gap
    assert not b.real[: h - 1].any() and b.real[h - 1 : h - 1 + 10].all()
    # the first sample of each interval sees only empty padding before its own bin
    window = b.rows[b.first[0] : b.first[0] + h]
    assert window[:-1].sum() == 0 and window[-1, 0] == 2
    assert len(b.times) == 20 and np.allclose(b.times[10:], np.arange(2.0, 3.0, 0.1))
    assert b.weights[5] == 0 and b.weights.sum() == 19


def test_gru_chunks_score_each_sample_once_at_its_bin():
    n_bins, h = 23, 4
    layout = Layout.make("causal", 0.4, 0.1, lookahead=0.1)
    assert (layout.h, layout.la, layout.rows) == (h, 1, h + 1)
    x = np.arange(2 * (h - 1 + n_bins + 1), dtype=np.float32)[:, None].repeat(2, 1)  # row r holds value r
    sample_interval = np.r_[np.zeros(n_bins, int), np.ones(n_bins, int)]
    starts = [h - 1, 2 * (h - 1) + n_bins + 1]
    bins = SplitBins(
        x,
        np.ones(len(x), bool),
        [(starts[0], n_bins), (starts[1], n_bins)],
        np.zeros(2 * n_bins, int),
        sample_interval,
        np.r_[np.arange(n_bins), np.arange(n_bins)],
        np.zeros(2 * n_bins),
        np.zeros((2 * n_bins, 1), np.float32),
        np.ones(2 * n_bins, np.float32),
    )
    ch = Chunks.build(x, bins, layout)
    assert ch.x.shape[1] == 2 * (h + 1)
    got = ch.x[ch.sample_chunk, ch.sample_pos, 0].numpy()
    want = np.array(starts)[sample_interval] + bins.sample_bin + 1  # the bin one lookahead after the sample's
    assert np.array_equal(got, want)
    later = bins.sample_bin + 1 >= 2 * (h + 1)
    assert (ch.sample_pos[later] >= h + 1).all()  # at least the whole window's bins behind every scored output


def test_ridge_ignores_weight_zero_samples(tmp_path, sim):
    src = StoredSession(sorted(sim.glob("*.h5"))[0]).load()
    b = src.behavior("hand_velocity")
    rng = np.random.default_rng(0)
    drop = rng.uniform(size=len(b.timestamps)) < 0.2
    weights = np.where(drop, 0.0, 1.0).astype(np.float32)
    cfg = BaselineConfig(model="ridge", bin=0.02, history=0.2, alphas=(10.0, 1000.0))
    fits = []
    for garbage in (False, True):
        values = b.values.copy()
        if garbage:
            values[drop] = 1e4 * rng.normal(size=(drop.sum(), 2))
        src.behaviors = {"hand_velocity": Behavior("hand_velocity", b.timestamps, values, b.unit, b.dims, weights)}
        path = write_session(src, tmp_path / f"w{int(garbage)}" / "s.h5")
        fits.append(fit_session(StoredSession(path), "hand_velocity", cfg))
    clean, dirty = fits
    assert np.allclose(clean.r2(), dirty.r2()) and clean.info["alpha"] == dirty.info["alpha"]
    assert clean.r2().mean() > 0.5
    assert (clean.weights > 0).sum() == (~drop & StoredSession(path).splits["test"].contains(b.timestamps)).sum()


def test_standardizer_uses_training_bins_only():
    """Hand-made bins: padding rows and weight-0 samples must not enter the statistics."""
    rows = np.array([[16.0, 16.0], [4.0, 1.0], [1.0, 1.0], [9.0, 1.0]], np.float32)  # row 0 is padding
    values = np.array([[1.0], [3.0], [100.0]])  # the third sample has weight 0
    bins = SplitBins(
        rows=rows,
        real=np.array([False, True, True, True]),
        interval_rows=[(1, 3)],
        first=np.array([0, 1, 2]),
        sample_interval=np.zeros(3, int),
        sample_bin=np.arange(3),
        times=np.array([0.1, 0.2, 0.3]),
        values=values,
        weights=np.array([1.0, 1.0, 0.0]),
    )
    std = Standardizer.fit(bins)
    # sqrt counts of the real rows: unit 0 -> 2, 1, 3 (mean 2, std sqrt(2/3));
    # unit 1 -> 1, 1, 1 (std 0, floored to 0.05)
    np.testing.assert_allclose(std.x_mean, [2.0, 1.0])
    np.testing.assert_allclose(std.x_std, [np.sqrt(2 / 3), 0.05], rtol=1e-6)
    # targets of the weighted samples: 1 and 3 -> mean 2, std 1
    np.testing.assert_allclose(std.y_mean, [2.0])
    np.testing.assert_allclose(std.y_std, [1.0], rtol=1e-5)
    z = std.inputs(bins)
    np.testing.assert_allclose(z[3], [1 / np.sqrt(2 / 3), 0.0], rtol=1e-5)  # sqrt(9) = 3 is one std above 2
    np.testing.assert_allclose(std.targets(np.array([[4.0]])), [[2.0]], rtol=1e-5)
    np.testing.assert_allclose(std.untarget(np.array([[2.0]])), [[4.0]], rtol=1e-5)


@pytest.mark.parametrize("model", ["gru", "mlp"])
def test_neural_baselines_learn(sim, model):
    cfg = BaselineConfig(model=model, bin=0.05, history=0.5, hidden=32, max_steps=150, eval_every=50, patience=2)
    data = SessionDataset(sorted(sim.glob("*.h5"))[:1])
    results, fits = run_baseline(data, cfg, target="hand_velocity", progress=False)
    r = next(iter(results["sessions"].values()))
    assert r["r2"] > 0.3, r
    assert r["fit"]["steps"] <= 150 and 0 < r["fit"]["best_step"] <= r["fit"]["steps"]
    fit = next(iter(fits.values()))
    assert np.isfinite(fit.y_pred).all() and fit.y_pred.shape == fit.y_true.shape


def test_cli_ridge_json(sim, tmp_path):
    out = tmp_path / "ridge.json"
    result = runner.invoke(
        app,
        [
            "baseline",
            "--model",
            "ridge",
            "--data",
            str(sim),
            "--target",
            "hand_velocity",
            "--history",
            "0.3",
            "--json",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    res = json.loads(out.read_text())
    assert set(res["sessions"]) == {"sim_a0_s0", "sim_a0_s1"}
    for r in res["sessions"].values():
        assert len(r["r2_per_dim"]) == 2 and r["r2"] == pytest.approx(np.mean(r["r2_per_dim"]))
        assert r["r2"] > 0.6  # cosine-tuned units: a linear decoder does well
    assert res["mean_r2"] == pytest.approx(np.mean([r["r2"] for r in res["sessions"].values()]))
    assert "mean" in result.output


def test_cli_user_errors(sim, tmp_path):
    result = runner.invoke(app, ["baseline", "--model", "svm", "--data", str(sim)])
    assert result.exit_code == 2 and "unknown baseline 'svm'" in result.output
    result = runner.invoke(app, ["baseline", "--data", str(sim), "--target", "pupil"])
    assert result.exit_code == 2 and "no behaviour 'pupil'" in result.output
    result = runner.invoke(app, ["baseline", "--data", str(tmp_path / "nothing")])
    assert result.exit_code == 2 and "no such file" in result.output
    result = runner.invoke(app, ["baseline", "--data", str(sim), "--lags", "sideways"])
    assert result.exit_code == 2 and "unknown lags 'sideways'" in result.output
    result = runner.invoke(app, ["baseline", "--data", str(sim), "--history", "0.001"])
    assert result.exit_code == 2 and "history must cover at least one bin" in result.output


def test_ridge_on_real_macaque_near_floor(tmp_path):
    path = DATA / "m1_chewie_2013-12-19.nwb"
    if not path.exists():
        pytest.skip(f"real recording {path} is absent (the shared data folder is not mounted here)")
    prepared = tmp_path / "prepared"
    result = runner.invoke(app, ["prepare", str(path), "--out", str(prepared), "--behavior", "hand_velocity"])
    assert result.exit_code == 0, result.output
    cfg = BaselineConfig(model="ridge", bin=0.1, history=0.5)
    results, _ = run_baseline(SessionDataset(prepared), cfg, progress=False)
    # the README's floor for this file is 0.77 (ridge, 100 ms bins, 5 bins, penalty picked on the test blocks)
    assert results["mean_r2"] > 0.7


def test_unusable_valid_split_falls_back_to_end_of_train(tmp_path, sim):
    """A valid split with no weighted samples (a rat parked through it) must not pick the first candidate."""
    src = StoredSession(sorted(sim.glob("*.h5"))[0]).load()
    b = src.behavior("hand_velocity")
    weights = np.where(src.splits["valid"].contains(b.timestamps), 0.0, 1.0).astype(np.float32)
    src.behaviors = {"hand_velocity": Behavior("hand_velocity", b.timestamps, b.values, b.unit, b.dims, weights)}
    path = write_session(src, tmp_path / "s.h5")
    cfg = BaselineConfig(model="ridge", bin=0.02, history=0.2, alphas=(1e-1, 1e2, 1e5))
    fit = fit_session(StoredSession(path), "hand_velocity", cfg)
    assert fit.info["validation"].startswith("last tenth") and np.isfinite(fit.info["valid_mse"])
    assert fit.info["alpha"] != 1e-1 or fit.info["valid_mse"] > 0  # chosen on real errors, not on an empty set
    assert fit.r2().mean() > 0.5


# --- what validation chooses ---------------------------------------------------------------------


def _lagged_session(
    path: Path, lag: float, splits: dict[str, tuple[float, float]], seed: int = 0, noise: float = 0.05
) -> StoredSession:
    """10 Poisson units (20 Hz) and a behaviour sampled every 20 ms (mid-bin) that is a fixed weighted sum
    of the spikes in [t - lag - 0.01, t - lag + 0.01): it depends on the spikes `lag` seconds earlier
    (later, for a negative lag), and on nothing else but noise (`noise` times its std)."""
    rng = np.random.default_rng(seed)
    end = max(e for _, e in splits.values())
    spikes = {str(u): np.sort(rng.uniform(0, end, rng.poisson(20 * end))) for u in range(10)}
    ts = np.arange(0.01, end, 0.02)
    gain = rng.normal(size=10)
    y = np.zeros(len(ts))
    for u, t in spikes.items():
        lo, hi = np.searchsorted(t, ts - lag - 0.01), np.searchsorted(t, ts - lag + 0.01)
        y += gain[int(u)] * (hi - lo)
    y += noise * y.std() * rng.normal(size=len(ts))
    s = Session.from_unit_spikes(
        "lagged",
        spikes,
        behaviors={"y": Behavior("y", ts, y)},
        start=0.0,
        end=end,
        splits={k: Intervals([a], [b]) for k, (a, b) in splits.items()},
    )
    return StoredSession(write_session(s, path))


SPLITS = {"train": (0.0, 60.0), "valid": (60.0, 75.0), "test": (75.0, 90.0)}


def test_ridge_window_covers_a_known_lag(tmp_path):
    """y(t) depends on the spikes 0.16 s before t: the chosen window must reach 8 bins back, and windows
    that stop short of that must score far worse on the valid split."""
    s = _lagged_session(tmp_path / "lag.h5", 0.16, SPLITS)
    fit = fit_session(s, "y", BaselineConfig(model="ridge"))
    info = fit.info
    assert info["bins_before"] >= 8, info
    assert fit.r2()[0] > 0.8 and info["valid_r2"] > 0.8
    short = [g["valid_mse"] for g in info["grid"] if g["bins_before"] < 7]
    assert len(short) >= 5 and min(short) > 0.5 > 0.2 > info["valid_mse"], info["grid"]
    assert info["valid_mse"] == min(g["valid_mse"] for g in info["grid"])  # the best of the grid, on valid
    assert {g["lags"] for g in info["grid"]} == {"causal", "centred"} and len(info["grid"]) == 13


def test_centred_windows_win_when_behaviour_follows_the_spikes(tmp_path):
    """y(t) depends on spikes 0.1 s *after* t: only a centred window can see them; a causal one cannot."""
    s = _lagged_session(tmp_path / "lead.h5", -0.1, SPLITS)
    auto = fit_session(s, "y", BaselineConfig(model="ridge"))
    assert auto.info["lags"] == "centred" and auto.info["bins_after"] >= 5, auto.info
    assert auto.r2()[0] > 0.8
    causal = fit_session(s, "y", BaselineConfig(model="ridge", lags="causal"))
    assert causal.info["lags"] == "causal" and causal.r2()[0] < 0.2
    # the MLP tries its default (causal 0.5 s) and the window a ridge probe prefers, and keeps the centred one
    mlp = fit_session(s, "y", BaselineConfig(model="mlp", hidden=64, max_steps=300, eval_every=50))
    probe, grid = mlp.info["ridge_probe"], mlp.info["grid"]
    assert (probe["lags"], probe["history"]) == (auto.info["lags"], auto.info["history"])
    assert [(g["lags"], g["history"]) for g in grid] == [("causal", 0.5), (probe["lags"], probe["history"])]
    assert mlp.info["lags"] == "centred" and grid[1]["valid_mse"] < 0.5 * grid[0]["valid_mse"], grid
    assert mlp.r2()[0] > 0.6


def test_early_stopping_restores_the_best_validation_step(tmp_path):
    """An MLP that memorises 4 s of noisy training data: its valid error bottoms out early; training stops
    `patience` evaluations later, and the returned model is the one of the lowest valid error."""
    s = _lagged_session(
        tmp_path / "small.h5", 0.1, {"train": (0.0, 4.0), "valid": (10.0, 20.0), "test": (20.0, 30.0)}, noise=0.5
    )
    cfg = BaselineConfig(
        model="mlp",
        lags="causal",
        history=0.2,
        hidden=512,
        dropout=0.0,
        lr=1e-3,
        weight_decay=0.0,
        batch_size=64,
        max_steps=600,
        eval_every=10,
        patience=10,
    )
    fit = fit_session(s, "y", cfg, split="valid")
    info, curve = fit.info, np.array(fit.info["curve"])
    k = int(np.argmin(curve[:, 1]))
    assert info["best_step"] == int(curve[k, 0]) and info["valid_mse"] == pytest.approx(curve[k, 1])
    assert info["steps"] == int(curve[-1, 0]) < 600 and len(curve) - 1 - k == cfg.patience  # stopped early
    assert curve[0, 1] > 1.1 * curve[k, 1] and info["valid_r2"] > 0.3  # it learned before it memorised
    # the valid predictions returned are those of the best step's weights, not the last step's
    std = Standardizer.fit(bin_split(s, "y", "train", cfg))
    err = np.average(((std.targets(fit.y_true) - std.targets(fit.y_pred)) ** 2).mean(1), weights=fit.weights)
    assert err == pytest.approx(info["valid_mse"], rel=1e-5)
    assert abs(err - curve[-1, 1]) > 1e-3 * err, (err, curve[-1, 1])


def test_ridge_routes_agree_with_sklearn(tmp_path, monkeypatch):
    """The SVD route (fewer samples than features), the shared Gram matrix and one Gram matrix per window
    choose the same window and penalty and predict the same, and that equals sklearn's Ridge refitted
    with the chosen window and penalty."""
    from sklearn.linear_model import Ridge

    from spiketok.evaluate.baselines import ridge as bl  # the module whose limits pick the route

    s = _lagged_session(
        tmp_path / "lag.h5", 0.06, {"train": (0.0, 4.0), "valid": (4.0, 10.0), "test": (10.0, 16.0)}, noise=0.5
    )
    cfg = BaselineConfig(model="ridge", history_choices=(0.02, 0.1, 0.3), alphas=(1.0, 30.0, 1000.0))
    fits = {}
    for route, (svd, gram) in {"svd": (10**9, 10**9), "gram": (0, 10**9), "per-window": (0, 0)}.items():
        monkeypatch.setattr(bl, "MAX_SVD_VALUES", svd)
        monkeypatch.setattr(bl, "MAX_GRAM_FEATURES", gram)
        fits[route] = fit_session(s, "y", cfg)
    info = fits["svd"].info
    assert info["n_train_samples"] == 200 and len(info["grid"]) == 5  # 22 lags x 10 units = 220 features > 200
    for route in ("gram", "per-window"):
        other = fits[route].info
        assert (other["lags"], other["history"], other["alpha"]) == (info["lags"], info["history"], info["alpha"])
        assert np.allclose([g["valid_mse"] for g in other["grid"]], [g["valid_mse"] for g in info["grid"]], rtol=1e-6)
        assert np.allclose(fits[route].y_pred, fits["svd"].y_pred, rtol=1e-5, atol=1e-6)
    lay = Layout.make(info["lags"], info["history"], cfg.bin)
    train, test = (bin_split(s, "y", name, cfg) for name in ("train", "test"))
    std = Standardizer.fit(train)
    keep = train.weights > 0
    x = window_features(std.inputs(train), train.window_start(lay)[keep], lay.rows)
    ref = Ridge(alpha=info["alpha"]).fit(x, std.targets(train.values[keep]), sample_weight=train.weights[keep])
    want = std.untarget(ref.predict(window_features(std.inputs(test), test.window_start(lay), lay.rows)).reshape(-1, 1))
    assert np.allclose(fits["svd"].y_pred, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


def test_ridge_window_choices_follow_the_bin_width():
    """With 50 ms bins the 20 ms window cannot be built: it is left out, not an error (found by the quick benchmark)."""
    from spiketok.evaluate.baselines import BaselineConfig

    cfg = BaselineConfig(model="ridge", bin=0.05)
    assert min(cfg.history_choices) >= 0.05 and 0.02 not in cfg.history_choices
    assert all(lay.rows >= 1 for lay in cfg.layouts())
    with pytest.raises(ValueError, match="at least one bin"):
        BaselineConfig(model="ridge", bin=0.05, history=0.02)
