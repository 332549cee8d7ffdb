"""Scores and stitching against values worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from spiketok.evaluate.metrics import r2_per_dim
from spiketok.evaluate.stitching import Stitcher


def test_r2_per_dim_hand_computed() -> None:
    # column 0: y = 1,2,3,4 (mean 2.5, SST = 2.25+0.25+0.25+2.25 = 5); errors 0,0,0,1 -> SSE 1 -> R² = 1 - 1/5 = 0.8
    # column 1: y = 0,0,2,2 (mean 1, SST 4); prediction = the mean 1 everywhere -> SSE 4 -> R² = 0
    y = np.array([[1.0, 0.0], [2.0, 0.0], [3.0, 2.0], [4.0, 2.0]])
    p = np.array([[1.0, 1.0], [2.0, 1.0], [3.0, 1.0], [5.0, 1.0]])
    np.testing.assert_allclose(r2_per_dim(y, p), [0.8, 0.0])
    # a perfect column, and a constant-offset column: y = 1,2,3,4, p = y + 1 -> SSE 4, SST 5 -> 0.2
    np.testing.assert_allclose(r2_per_dim(y[:, :1], y[:, :1]), [1.0])
    np.testing.assert_allclose(r2_per_dim(y[:, 0], y[:, 0] + 1), [0.2])  # 1-D input is one column


def test_r2_per_dim_drops_weight_zero_and_non_finite_samples() -> None:
    # the last two samples are dropped (weight 0; NaN truth): left y = 1,2,3 (mean 2, SST 2), p = 1,2,4 -> SSE 1 -> 0.5
    y = np.array([1.0, 2.0, 3.0, 100.0, np.nan])
    p = np.array([1.0, 2.0, 4.0, -100.0, 0.0])
    w = np.array([1.0, 1.0, 1.0, 0.0, 1.0])
    np.testing.assert_allclose(r2_per_dim(y, p, w), [0.5])
    assert np.isnan(r2_per_dim(y[:1], p[:1])).all()  # fewer than 2 samples: no score


def test_stitcher_averages_overlapping_windows_per_sample() -> None:
    st = Stitcher(np.array([0.0, 0.1, 0.2, 0.3]), dim=2)
    st.add(np.array([0.0, 0.1, 0.2]), np.array([[1.0, 10.0], [2.0, 20.0], [3.0, 30.0]]))  # window 1
    st.add(np.array([0.1, 0.2]), np.array([[4.0, 40.0], [5.0, 50.0]]))  # window 2 overlaps at 0.1 and 0.2
    st.add(np.array([0.2 + 1e-7, 7.0]), np.array([[7.0, 70.0], [9.0, 90.0]]))  # 0.2 within tolerance; 7.0 no sample
    out, covered = st.result()
    np.testing.assert_array_equal(covered, [True, True, True, False])
    np.testing.assert_allclose(out[:3], [[1.0, 10.0], [3.0, 30.0], [5.0, 50.0]])  # (2+4)/2, (3+5+7)/3
    assert np.isnan(out[3]).all()


def test_stitcher_ignores_times_between_samples() -> None:
    st = Stitcher(np.array([0.0, 1.0]), dim=1)
    st.add(np.array([0.5, 1.0]), np.array([[8.0], [2.0]]))
    out, covered = st.result()
    np.testing.assert_array_equal(covered, [False, True])
    assert out[1, 0] == pytest.approx(2.0)
