"""Wilson intervals, paired gains (Newcombe interval, exact McNemar) and detector precision / recall / F1."""
from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest

from core.method.stats import mcnemar_exact_p, paired_gain, percentiles_ms, precision_recall_f1, wilson_interval
from core.method.detector import DetectorCounts

Z2 = 1.96 ** 2


def test_wilson_known_value():
    lo, hi = wilson_interval(45, 100)
    assert lo == pytest.approx(0.3561, abs=1e-4)
    assert hi == pytest.approx(0.5475, abs=1e-4)


def test_wilson_zero_successes():
    lo, hi = wilson_interval(0, 10)
    assert lo == pytest.approx(0.0, abs=1e-12)
    assert hi == pytest.approx(Z2 / (10 + Z2))  # closed form at p = 0: 0.2775


def test_wilson_all_successes():
    lo, hi = wilson_interval(10, 10)
    assert lo == pytest.approx(10 / (10 + Z2))  # 0.7225
    assert hi == pytest.approx(1.0, abs=1e-12)


def test_wilson_is_symmetric_and_contains_the_rate():
    for k, n in [(1, 7), (13, 40), (150, 300), (299, 300)]:
        lo, hi = wilson_interval(k, n)
        assert 0.0 <= lo < k / n < hi <= 1.0
        lo2, hi2 = wilson_interval(n - k, n)
        assert lo2 == pytest.approx(1 - hi) and hi2 == pytest.approx(1 - lo)


def test_wilson_narrows_with_more_trials():
    w100 = wilson_interval(50, 100)
    w300 = wilson_interval(150, 300)
    assert (w300[1] - w300[0]) < (w100[1] - w100[0])
    # docs/method.md, "Statistics and seed ranges": 300 seeds at ~50% give about +-5.6 points half width (~0.056)
    assert (w300[1] - w300[0]) / 2 == pytest.approx(0.0562, abs=2e-3)


def test_wilson_no_trials_is_the_whole_range():
    assert wilson_interval(0, 0) == (0.0, 1.0)


@pytest.mark.parametrize("k, n", [(11, 10), (-1, 10)])
def test_wilson_bad_counts_raise(k, n):
    with pytest.raises(ValueError, match=f"{k} of {n}"):
        wilson_interval(k, n)


def test_precision_recall_f1_hand_values():
    p, r, f1 = precision_recall_f1(DetectorCounts(tp=3, fp=1, fn=2, tn=100))
    assert p == pytest.approx(0.75)
    assert r == pytest.approx(0.6)
    assert f1 == pytest.approx(2 * 0.75 * 0.6 / 1.35)  # 0.6667


def test_precision_recall_f1_perfect():
    assert precision_recall_f1(DetectorCounts(tp=5)) == (1.0, 1.0, 1.0)


@pytest.mark.parametrize("tp, fp, fn, expected", [
    (0, 0, 0, (0.0, 0.0, 0.0)),   # nothing at all
    (0, 2, 0, (0.0, 0.0, 0.0)),   # only false alarms
    (0, 0, 3, (0.0, 0.0, 0.0)),   # never fired
    (2, 0, 2, (1.0, 0.5, 2 / 3)),  # never wrong, misses half
])
def test_precision_recall_f1_zero_division_cases(tp, fp, fn, expected):
    assert precision_recall_f1(SimpleNamespace(tp=tp, fp=fp, fn=fn)) == pytest.approx(expected)


def test_percentiles_ms():
    out = percentiles_ms([0.001, 0.002, 0.003, 0.004, 0.005], qs=(50, 100))
    assert out == {"p50": pytest.approx(3.0), "p100": pytest.approx(5.0)}


# --- paired gain (same seeds before and after) -------------------------------------------

def test_mcnemar_exact_hand_values():
    assert mcnemar_exact_p(0, 0) == 1.0
    assert mcnemar_exact_p(6, 1) == pytest.approx(2 * (1 + 7) / 2 ** 7)  # 0.125
    assert mcnemar_exact_p(1, 6) == mcnemar_exact_p(6, 1)
    assert mcnemar_exact_p(10, 0) == pytest.approx(2 / 2 ** 10)
    assert mcnemar_exact_p(3, 3) == 1.0
    with pytest.raises(ValueError):
        mcnemar_exact_p(-1, 2)


def test_paired_gain_hand_value():
    # 21 seeds: 1 succeed both times, 7 only after, 1 only before, 12 never (gain 6/21).
    before = [1] * 1 + [0] * 7 + [1] * 1 + [0] * 12
    after = [1] * 1 + [1] * 7 + [0] * 1 + [0] * 12
    g = paired_gain(before, after)
    assert (g["n"], g["gained"], g["lost"]) == (21, 7, 1)
    assert g["gain"] == pytest.approx(6 / 21)
    # Wilson limits of 8/21 and 2/21, phi = (1*12 - 7*1) / sqrt(8*13*2*19), worked by hand:
    l1, u1 = wilson_interval(8, 21)
    l2, u2 = wilson_interval(2, 21)
    phi = 5 / math.sqrt(8 * 13 * 2 * 19)
    p1, p2 = 8 / 21, 2 / 21
    lo = 6 / 21 - math.sqrt((p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2)
    hi = 6 / 21 + math.sqrt((u1 - p1) ** 2 - 2 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2) ** 2)
    assert g["ci"] == pytest.approx((lo, hi))
    assert 0.03 < g["ci"][0] < 0.04 and 0.50 < g["ci"][1] < 0.51
    assert g["p"] == pytest.approx(mcnemar_exact_p(7, 1))


def test_paired_gain_no_change_and_edges():
    same = [1, 0, 1, 1, 0] * 20
    g = paired_gain(same, same)
    assert g["gain"] == 0 and g["p"] == 1.0 and g["ci"][0] < 0 < g["ci"][1]
    assert paired_gain([], [])["ci"] == (-1.0, 1.0)
    g = paired_gain([0] * 50, [1] * 50)
    assert g["gain"] == 1.0 and g["ci"][1] == 1.0 and g["ci"][0] > 0.8
    with pytest.raises(ValueError, match="same seeds"):
        paired_gain([1, 0], [1])


def test_paired_gain_covers_the_true_gain_and_beats_unpaired_width():
    # Seeds differ in difficulty (shared by both evaluations); practice lifts every seed a bit.
    rng = np.random.default_rng(0)
    n, reps = 100, 1500
    difficulty = rng.uniform(0, 1, size=(reps, n))
    p_before = np.clip(difficulty * 0.8, 0, 1)
    p_after = np.clip(difficulty * 0.8 + 0.1, 0, 1)
    true_gain = float(np.mean(p_after - p_before))
    hits, paired_w, unpaired_w = 0, [], []
    for r in range(reps):
        u = rng.uniform(size=n)  # one draw per seed: correlated outcomes, as on a fixed seed
        before, after = u < p_before[r], u < p_after[r]
        g = paired_gain(before, after)
        hits += g["ci"][0] <= true_gain <= g["ci"][1]
        paired_w.append(g["ci"][1] - g["ci"][0])
        l1, u1 = wilson_interval(int(after.sum()), n)
        l2, u2 = wilson_interval(int(before.sum()), n)
        unpaired_w.append(math.hypot(after.mean() - l1, u2 - before.mean())
                          + math.hypot(u1 - after.mean(), before.mean() - l2))
    assert 0.93 <= hits / reps <= 0.99
    assert np.mean(paired_w) < 0.8 * np.mean(unpaired_w)


def test_format_points_keeps_the_sign_near_zero():
    from core.method.stats import format_points

    assert format_points(0.1) == "+10" and format_points(-0.034) == "-3"
    assert format_points(-0.004) == "-0.4" and format_points(0.0) == "+0.0"
