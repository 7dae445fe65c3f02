"""Wilson intervals and detector precision / recall / F1."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

from core.stats import percentiles_ms, precision_recall_f1, wilson_interval
from core.steps_to_go import DetectorCounts

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
    # METHOD.md: 300 seeds at ~50% give about +-5.6 points half width (~0.056)
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
