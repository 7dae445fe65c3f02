"""Steps-to-go bins and d(o, g) (core.method.steps_to_go), against hand-computed values."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from core.method import steps_to_go as S


# ------------------------------------------------------------------ bins
@pytest.mark.parametrize("cap, width, expected", [
    (10, 2, 6), (60, 1, 61), (100, 2, 51), (4, 2, 3), (5, 2, 3), (0, 1, 1), (3, 5, 1)])
def test_num_bins(cap, width, expected):
    assert S.num_bins(cap, width) == expected


@pytest.mark.parametrize("cap, width", [(-1, 1), (10, 0), (10, -2)])
def test_num_bins_rejects_bad_arguments(cap, width):
    with pytest.raises(ValueError, match=str(cap) if cap < 0 else str(width)):
        S.num_bins(cap, width)


def test_stg_to_bin_numpy_hand_values():
    out = S.stg_to_bin(np.array([0, 1, 2, 9, 10, 57]), cap=10, bin_width=2)
    np.testing.assert_array_equal(out, [0, 0, 1, 4, 5, 5])
    # the last bin is the last valid index
    assert out.max() == S.num_bins(10, 2) - 1


def test_stg_to_bin_width_one_clips_at_cap():
    np.testing.assert_array_equal(S.stg_to_bin([0, 3, 60, 61, 1000], cap=60), [0, 3, 60, 60, 60])


def test_stg_to_bin_torch_matches_numpy():
    labels = [0, 1, 2, 9, 10, 57]
    out = S.stg_to_bin(torch.tensor(labels), cap=10, bin_width=2)
    assert isinstance(out, torch.Tensor)
    assert out.tolist() == [0, 0, 1, 4, 5, 5]
    rng = np.random.default_rng(0)
    many = rng.integers(0, 200, 500)
    np.testing.assert_array_equal(S.stg_to_bin(torch.from_numpy(many), 60, 3).numpy(),
                                  S.stg_to_bin(many, 60, 3))


def test_stg_to_bin_scalar():
    assert int(S.stg_to_bin(7, cap=10, bin_width=2)) == 3


@pytest.mark.parametrize("labels", [np.array([3, -1, 2]), torch.tensor([3, -1, 2])])
def test_stg_to_bin_negative_label_raises(labels):
    with pytest.raises(ValueError, match="-1"):
        S.stg_to_bin(labels, cap=10, bin_width=2)


@pytest.mark.parametrize("cap, width, expected", [
    (5, 1, [0, 1, 2, 3, 4, 5]),
    (5, 2, [0.5, 2.5, 4.5]),
    (4, 2, [0.5, 2.5, 4.0]),  # last bin holds only {4}
    (10, 3, [1.0, 4.0, 7.0, 9.5]),  # last bin holds {9, 10}
    (0, 1, [0.0]),
])
def test_bin_centers(cap, width, expected):
    c = S.bin_centers(cap, width)
    assert c.dtype == np.float32
    np.testing.assert_allclose(c, expected)
    assert len(c) == S.num_bins(cap, width)


def test_bin_centers_are_the_mean_label_of_each_bin():
    cap, width = 23, 4
    labels = np.arange(cap + 1)
    bins = S.stg_to_bin(labels, cap, width)
    centers = S.bin_centers(cap, width)
    for k in range(len(centers)):
        assert centers[k] == pytest.approx(labels[bins == k].mean())


# ------------------------------------------------------------------ d(o, g)
def test_expected_steps_to_go_one_hot_returns_its_centre():
    centers = S.bin_centers(5, 2)  # [0.5, 2.5, 4.5]
    for k, c in enumerate(centers):
        p = np.zeros(3)
        p[k] = 1.0
        assert S.expected_steps_to_go(p, centers, from_logits=False) == pytest.approx(c)
        assert float(S.expected_steps_to_go(torch.tensor(p), centers, from_logits=False)) \
            == pytest.approx(c)


def test_expected_steps_to_go_uniform_returns_mean_centre():
    centers = S.bin_centers(4, 2)  # [0.5, 2.5, 4.0]
    p = np.full(3, 1 / 3)
    assert S.expected_steps_to_go(p, centers, from_logits=False) == pytest.approx(7.0 / 3)
    # uniform logits (any constant) give the same
    assert S.expected_steps_to_go(np.full(3, 5.0), centers) == pytest.approx(7.0 / 3)
    assert float(S.expected_steps_to_go(torch.zeros(3), centers)) == pytest.approx(7.0 / 3)


def test_expected_steps_to_go_hand_mixture():
    centers = np.array([0.0, 1.0, 2.0, 3.0])
    p = np.array([0.1, 0.2, 0.3, 0.4])
    assert S.expected_steps_to_go(p, centers, from_logits=False) == pytest.approx(2.0)
    # log-probabilities as logits: softmax recovers p
    assert S.expected_steps_to_go(np.log(p), centers) == pytest.approx(2.0)


def test_expected_steps_to_go_numpy_and_torch_agree_on_batches():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(4, 5, 31)) * 3
    centers = S.bin_centers(60, 2)
    d_np = S.expected_steps_to_go(logits, centers)
    d_t = S.expected_steps_to_go(torch.from_numpy(logits), centers)
    assert d_np.shape == (4, 5) and tuple(d_t.shape) == (4, 5)
    np.testing.assert_allclose(d_t.numpy(), d_np, rtol=1e-10)
    assert np.all(d_np >= 0) and np.all(d_np <= 60)
    probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    np.testing.assert_allclose(S.expected_steps_to_go(probs, centers, from_logits=False), d_np)


def test_expected_steps_to_go_from_large_logits_is_stable():
    centers = S.bin_centers(3)
    logits = np.array([0.0, 0.0, 1000.0, 0.0])
    assert S.expected_steps_to_go(logits, centers) == pytest.approx(2.0)
    assert float(S.expected_steps_to_go(torch.tensor(logits), centers)) == pytest.approx(2.0)


# ------------------------------------------------------------------ detector
