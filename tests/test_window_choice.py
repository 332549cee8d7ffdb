"""The recipe's window rule on known pilot curves: a pilot's window wins only when it is clear of the noise."""

import pytest

from spiketok.train.recipe import DEFAULT_WINDOW, PilotScore, choose_window


def pilots(**curves: tuple[float, ...]) -> dict[str, PilotScore]:
    return {name.removeprefix("w").replace("_", "."): PilotScore(curve) for name, curve in curves.items()}


def test_a_clear_winner_is_taken():
    window, why = choose_window(pilots(w0_5=(0.2, 0.40, 0.42), w1=(0.3, 0.50, 0.52), w2=(0.4, 0.70, 0.71)))
    assert window == 2.0  # 0.71 - 0.52 = 0.19 > spreads of 0.02 and 0.01
    assert "by 0.190" in why and "spread of 0.020" in why


def test_a_gain_within_the_spread_keeps_the_default():
    window, why = choose_window(pilots(w0_5=(0.1, 0.3), w1=(0.45, 0.60), w2=(0.50, 0.62)))
    assert window == DEFAULT_WINDOW == 1.0  # 0.62 - 0.60 = 0.02 < the last checks' change of 0.15 and 0.12
    assert why.startswith("the default: the best pilot (2 s) beats it by 0.020, within the pilots' spread of 0.150")


def test_pilots_still_in_warm_up_decide_nothing():
    # the case: both pilots below 0 (worse than the mean), so their order is noise
    window, why = choose_window(pilots(w0_5=(-0.9, -0.61), w1=(-1.2, -0.64), w2=(-0.8, -0.24)))
    assert window == 1.0 and "still in warm-up" in why and "2 and 1 s pilots are" in why


def test_the_default_winning_and_ties_keep_the_default():
    assert choose_window(pilots(w0_5=(0.5, 0.6), w1=(0.6, 0.7)))[0] == 1.0
    assert choose_window(pilots(w1=(0.6, 0.7), w2=(0.7, 0.7)))[0] == 1.0  # the same best R²: the shorter window


def test_pilot_spread_and_best_are_read_from_the_curve():
    p = PilotScore((0.1, 0.5, 0.4))
    assert p.best == 0.5 and p.spread == pytest.approx(0.1)
    assert PilotScore((0.3,)).spread is None and PilotScore(()).best is None
    assert choose_window(pilots(w0_5=(0.9,), w1=()))[0] == 1.0  # the default has no score: it stands
    with pytest.raises(ValueError, match="must include the default 1 s window"):
        choose_window(pilots(w0_5=(0.5,), w2=(0.6,)))
