"""Continuous actions <-> per-dimension bins."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from core.learning.action_bins import action_bin_centers, action_to_bins, bins_to_action


@pytest.mark.parametrize("n_bins", [2, 9, 21, 256])
def test_bin_centres_round_trip_exactly(n_bins):
    centres = action_bin_centers(n_bins)
    assert centres[0] == -1.0 and centres[-1] == 1.0 and len(centres) == n_bins
    bins = action_to_bins(centres, n_bins)
    np.testing.assert_array_equal(bins, np.arange(n_bins))
    back = bins_to_action(bins, n_bins)
    assert back.dtype == np.float32
    np.testing.assert_allclose(back, centres, atol=1e-6)


def test_nine_bin_centres_hand_values():
    np.testing.assert_allclose(action_bin_centers(9), [-1, -0.75, -0.5, -0.25, 0, 0.25, 0.5, 0.75, 1])
    np.testing.assert_array_equal(action_to_bins([[-0.8, 0.1], [0.62, -0.13]], 9), [[1, 4], [6, 3]])


def test_action_bin_centers_needs_two_bins():
    with pytest.raises(ValueError, match="1"):
        action_bin_centers(1)


def test_values_outside_range_are_clipped():
    np.testing.assert_array_equal(action_to_bins([-5.0, -1.0001, 1.2, 1e9], 9), [0, 0, 8, 8])
    assert action_to_bins(torch.tensor([-5.0, 1.2]), 9).tolist() == [0, 8]


def test_custom_range():
    np.testing.assert_array_equal(action_to_bins([0.0, 1.0, 2.0], 3, low=0.0, high=2.0), [0, 1, 2])
    np.testing.assert_allclose(bins_to_action([0, 1, 2], 3, low=0.0, high=2.0), [0.0, 1.0, 2.0])


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_actions_raise(bad):
    with pytest.raises(ValueError, match="NaN or inf"):
        action_to_bins(np.array([[0.0, bad]]), 9)


def test_torch_path_agrees_with_numpy():
    a = np.random.default_rng(0).uniform(-1.5, 1.5, size=(200, 2))
    b_np = action_to_bins(a, 9)
    b_t = action_to_bins(torch.from_numpy(a), 9)
    assert b_t.dtype == torch.int64
    np.testing.assert_array_equal(b_t.numpy(), b_np)
    np.testing.assert_allclose(bins_to_action(b_t, 9).numpy(), bins_to_action(b_np, 9), atol=1e-6)


def test_torch_path_rejects_nan_like_numpy():
    # The numpy path raises on NaN; the torch path must not turn NaN into a garbage bin index.
    with pytest.raises(ValueError):
        action_to_bins(torch.tensor([[0.0, float("nan")]]), 9)


def test_rounding_error_is_at_most_half_a_bin():
    a = np.random.default_rng(1).uniform(-1, 1, size=1000)
    err = np.abs(bins_to_action(action_to_bins(a, 9), 9) - a)
    assert err.max() <= 0.125 + 1e-6
