"""Stage-2 progress rewards and discounted returns, against hand-computed values."""
from __future__ import annotations

import numpy as np
import pytest

from core.method.rewards import discounted_returns, progress_rewards


def test_progress_rewards_hand_values():
    np.testing.assert_allclose(progress_rewards([10, 8, 8.5, 3]), [2.0, -0.5, 5.5])


def test_progress_rewards_length_and_dtype():
    r = progress_rewards(np.array([4.0, 3.0], dtype=np.float32))
    assert r.dtype == np.float64 and r.shape == (1,)
    assert progress_rewards([7.0]).shape == (0,)  # one frame, no step, no reward


@pytest.mark.parametrize("bad", [[], [[1.0, 2.0], [3.0, 4.0]], 5.0])
def test_progress_rewards_rejects_non_1d_or_empty(bad):
    with pytest.raises(ValueError, match="shape"):
        progress_rewards(bad)


def test_progress_rewards_telescope():
    d = np.random.default_rng(0).uniform(0, 60, size=37)
    r = progress_rewards(d)
    assert len(r) == len(d) - 1
    assert r.sum() == pytest.approx(d[0] - d[-1])


def test_discounted_returns_hand_values():
    np.testing.assert_allclose(discounted_returns([1.0, 0.0, 2.0], gamma=0.9),
                               [1.0 + 0.0 + 0.81 * 2.0, 0.0 + 0.9 * 2.0, 2.0])


def test_discounted_returns_default_gamma_is_the_papers_0_9():
    np.testing.assert_allclose(discounted_returns([0.0, 1.0]), [0.9, 1.0])


def test_discounted_returns_gamma_zero_is_the_reward():
    r = [3.0, -1.0, 2.5]
    np.testing.assert_allclose(discounted_returns(r, gamma=0.0), r)


def test_discounted_returns_gamma_one_is_reverse_cumsum():
    r = np.array([1.0, -2.0, 0.5, 4.0])
    np.testing.assert_allclose(discounted_returns(r, gamma=1.0), [3.5, 2.5, 4.5, 4.0])


def test_undiscounted_return_of_progress_rewards_is_remaining_progress():
    d = np.array([12.0, 9.0, 9.5, 4.0, 0.5])
    np.testing.assert_allclose(discounted_returns(progress_rewards(d), gamma=1.0), d[:-1] - d[-1])


def test_discounted_returns_satisfy_the_recursion():
    r = np.random.default_rng(3).normal(size=20)
    R = discounted_returns(r, 0.9)
    np.testing.assert_allclose(R[:-1], r[:-1] + 0.9 * R[1:])
    assert R[-1] == pytest.approx(r[-1])


def test_discounted_returns_empty():
    assert discounted_returns([], 0.9).shape == (0,)


@pytest.mark.parametrize("gamma", [-0.1, 1.01, 2.0, float("nan")])
def test_discounted_returns_bad_gamma_raises(gamma):
    with pytest.raises(ValueError, match="gamma"):
        discounted_returns([1.0], gamma)
