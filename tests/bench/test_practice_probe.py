"""The practice probe's weightings (bench/practice_probe.py): hand-computed values."""
from __future__ import annotations

import numpy as np
import pytest

from bench.practice_probe import VARIANTS, dbin_baseline, weights


def test_dbin_baseline_is_the_leave_one_out_mean_of_the_same_d_bin():
    r = np.array([1.0, 3.0, 5.0, 10.0, 7.0])
    d = np.array([0.5, 1.5, 1.9, 8.0, 30.0])  # bins of 2 steps: {0, 0, 0}, {4}, {15}
    b = dbin_baseline(r, d)
    assert b[:3] == pytest.approx([4.0, 3.0, 2.0])  # mean of the other two in bin 0
    # alone in its bin: the mean of all the other tuples
    assert b[3] == pytest.approx((1 + 3 + 5 + 7) / 4) and b[4] == pytest.approx((1 + 3 + 5 + 10) / 4)


def test_weights_per_variant():
    rng = np.random.default_rng(0)
    r, d = np.array([2.0, 4.0, 6.0, 8.0]), np.array([0.0, 0.5, 10.0, 10.5])
    assert weights("method", r, d, rng) == pytest.approx(r)
    assert weights("mean", r, d, rng) == pytest.approx(r - 5.0)
    assert weights("dbin", r, d, rng) == pytest.approx([-2.0, 2.0, -2.0, 2.0])
    assert weights("const", r, d, rng) == pytest.approx([5.0] * 4)
    noise = weights("noise", np.arange(1000.0), np.zeros(1000), rng)
    assert abs(noise.std() - np.arange(1000.0).std()) < 0.1 * np.arange(1000.0).std()
    assert set(VARIANTS) == {"method", "mean", "dbin", "noise", "const"}
    with pytest.raises(ValueError, match="unknown variant"):
        weights("critic", r, d, rng)
