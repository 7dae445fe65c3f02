"""Steps-to-go bins, d(o, g) and the success detector, against hand-computed values."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from core import steps_to_go as S


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
def test_is_success_boundary_is_inclusive():
    assert S.is_success(2.0, 2.0)
    assert S.is_success(1.999, 2.0)
    assert not S.is_success(2.0001, 2.0)
    np.testing.assert_array_equal(S.is_success(np.array([1.0, 2.0, 3.0]), 2.0), [True, True, False])
    assert S.is_success(torch.tensor([2.0, 2.5]), 2.0).tolist() == [True, False]


D_SEQ = [5.0, 3.0, 2.0, 4.0, 1.0, 1.0, 0.0]


@pytest.mark.parametrize("patience, expected", [(1, 2), (2, 5), (3, 6), (4, None)])
def test_first_detection_with_patience(patience, expected):
    assert S.first_detection(D_SEQ, 2.0, patience) == expected


def test_first_detection_threshold_is_inclusive_and_empty_is_none():
    assert S.first_detection([3.0, 2.0], 2.0) == 1
    assert S.first_detection([3.0, 2.01], 2.0) is None
    assert S.first_detection([], 2.0) is None
    assert S.first_detection(np.array([0.5]), 1.0) == 0


def test_first_detection_run_restarts_after_a_miss():
    # two below-threshold steps separated by a miss never make a run of 2
    assert S.first_detection([1.0, 9.0, 1.0, 9.0], 2.0, patience=2) is None


@pytest.mark.parametrize("patience", [0, -1])
def test_first_detection_bad_patience(patience):
    with pytest.raises(ValueError, match=str(patience)):
        S.first_detection([1.0], 2.0, patience)


def test_score_episode_true_positive():
    assert S.score_episode([9.0, 5.0, 1.0], [False, False, True], 2.0) == S.DetectorCounts(tp=1)


def test_score_episode_fires_before_ground_truth_is_false_positive():
    assert S.score_episode([9.0, 1.0, 0.0], [False, False, True], 2.0) == S.DetectorCounts(fp=1)


def test_score_episode_fires_on_failed_episode_is_false_positive():
    assert S.score_episode([9.0, 1.0], [False, False], 2.0) == S.DetectorCounts(fp=1)


def test_score_episode_never_fires_on_success_is_false_negative():
    assert S.score_episode([9.0, 5.0, 3.0], [False, False, True], 2.0) == S.DetectorCounts(fn=1)


def test_score_episode_never_fires_on_failure_is_true_negative():
    assert S.score_episode([9.0, 5.0, 3.0], [False, False, False], 2.0) == S.DetectorCounts(tn=1)


def test_score_episode_patience_turns_early_fire_into_true_positive():
    d = [9.0, 1.0, 5.0, 1.0, 0.0]
    gt = [False, False, False, False, True]
    assert S.score_episode(d, gt, 2.0, patience=1) == S.DetectorCounts(fp=1)
    assert S.score_episode(d, gt, 2.0, patience=2) == S.DetectorCounts(tp=1)
    assert S.score_episode(d, gt, 2.0, patience=3) == S.DetectorCounts(fn=1)


def test_score_episode_length_mismatch_raises():
    with pytest.raises(ValueError, match="3.*2"):
        S.score_episode([1.0, 2.0, 3.0], [False, True], 2.0)


def test_detector_counts_add():
    total = S.DetectorCounts(tp=1) + S.DetectorCounts(fp=2) + S.DetectorCounts(fn=3, tn=4)
    assert total == S.DetectorCounts(1, 2, 3, 4)


# Two demonstration-like episodes, positive only at the last frame.
EP1 = ([10.0, 6.0, 3.0, 1.0], [False, False, False, True])
EP2 = ([8.0, 5.0, 2.5, 1.5], [False, False, False, True])
# s < 1: fires nowhere (F1 0); s in [1, 1.5): EP1 TP, EP2 FN (F1 2/3);
# s in [1.5, 2.5): both TP (F1 1); s in [2.5, 3): EP2 fires early (FP); s >= 3: both FP.


def test_calibrate_threshold_picks_the_f1_optimal_s():
    s, counts = S.calibrate_threshold([EP1, EP2], candidates=[0.5, 1.0, 1.5, 2.0, 2.5, 3.0])
    assert s == 1.5
    assert counts == S.DetectorCounts(tp=2)


def test_calibrate_threshold_default_candidates():
    s, counts = S.calibrate_threshold([EP1, EP2])
    assert s == 1.5
    assert counts == S.DetectorCounts(tp=2)


def test_calibrate_threshold_when_only_a_larger_s_works():
    s, counts = S.calibrate_threshold([EP1], candidates=[0.5, 1.0, 2.0])
    assert s == 1.0 and counts == S.DetectorCounts(tp=1)
    s, _ = S.calibrate_threshold([([5.0, 4.0], [False, True])], candidates=[1.0, 2.0, 4.0, 5.0])
    assert s == 4.0


def test_calibrate_threshold_prefers_the_smaller_s_on_ties():
    # 1.5 and 2.0 both give F1 = 1.0
    s, _ = S.calibrate_threshold([EP1, EP2], candidates=[1.5, 2.0])
    assert s == 1.5


def test_calibrate_threshold_prefers_the_smaller_s_on_ties_whatever_the_order():
    # The docstring promises "ties go to the smaller s"; candidates need not be sorted.
    s, _ = S.calibrate_threshold([EP1, EP2], candidates=[2.0, 1.5])
    assert s == 1.5


def test_calibrate_threshold_uses_patience():
    ep = ([9.0, 1.0, 5.0, 1.0, 0.0], [False, False, False, False, True])
    # patience 1: any s >= 1 fires at t=1 (FP); s < 1 never before t=4 fires there (TP at s >= 0)
    s1, c1 = S.calibrate_threshold([ep], candidates=[0.0, 1.0], patience=1)
    assert (s1, c1) == (0.0, S.DetectorCounts(tp=1))
    # patience 2: s = 1 needs two consecutive frames <= 1: frames 3, 4 -> TP at t=4
    s2, c2 = S.calibrate_threshold([ep], candidates=[1.0], patience=2)
    assert (s2, c2) == (1.0, S.DetectorCounts(tp=1))


def test_calibrate_threshold_needs_episodes():
    with pytest.raises(ValueError, match="at least one"):
        S.calibrate_threshold([])


def test_score_episode_tolerance_accepts_a_firing_just_before_the_goal():
    d = [9.0, 5.0, 1.0, 0.5, 0.2]
    gt = [False, False, False, False, True]
    # fires at t=2 (d=1.0 <= 1.5); the goal is reached 2 steps later
    assert S.score_episode(d, gt, 1.5, tolerance=0) == S.DetectorCounts(fp=1)
    assert S.score_episode(d, gt, 1.5, tolerance=1) == S.DetectorCounts(fp=1)
    assert S.score_episode(d, gt, 1.5, tolerance=2) == S.DetectorCounts(tp=1)
    with pytest.raises(ValueError, match="tolerance"):
        S.score_episode(d, gt, 1.5, tolerance=-1)


def test_f_beta_against_hand_computed_values():
    from core.stats import f_beta

    assert f_beta(0.5, 1.0, 1.0) == pytest.approx(2 * 0.5 / 1.5)
    # beta = 0.5: (1 + 0.25) * P * R / (0.25 * P + R)
    assert f_beta(0.5, 1.0, 0.5) == pytest.approx(1.25 * 0.5 / (0.125 + 1.0))
    assert f_beta(0.0, 0.0, 0.5) == 0.0
    with pytest.raises(ValueError, match="beta"):
        f_beta(0.5, 0.5, 0.0)


# Rollouts where most episodes succeed: s = 6 fires in every episode, precision 0.75, recall 1
# (F1 0.857, F0.5 0.789); s = 1 catches 2 of 3 successes with no false positive (F1 0.8, F0.5 0.909).
ROLLOUTS = [([9.0, 8.0, 7.0, 0.5], [False, False, False, True]),
            ([9.0, 8.0, 7.0, 0.5], [False, False, False, True]),
            ([9.0, 8.0, 7.0, 2.0], [False, False, False, True]),
            ([9.0, 8.0, 7.0, 4.0], [False, False, False, False])]


def test_calibrate_threshold_beta_below_one_prefers_the_precise_detector():
    s1, c1 = S.calibrate_threshold(ROLLOUTS, candidates=[1.0, 6.0])
    assert (s1, c1) == (6.0, S.DetectorCounts(tp=3, fp=1))
    s05, c05 = S.calibrate_threshold(ROLLOUTS, candidates=[1.0, 6.0], beta=0.5)
    assert (s05, c05) == (1.0, S.DetectorCounts(tp=2, fn=1, tn=1))


def test_calibrate_threshold_middle_tie_keeps_the_margin_on_both_sides():
    # Rollouts of a refined reward model: successes read d 0.5 and 3.5 at the goal, the
    # failure's lowest d is 12. Every s in [3.5, 11.5] scores F1 = 1 on these.
    eps = [([20.0, 9.0, 0.5], [False, False, True]),
           ([20.0, 9.0, 3.5], [False, False, True]),
           ([30.0, 12.0, 12.0], [False, False, False])]
    cands = [float(x) for x in range(1, 16)]  # 1..15
    s_small, c_small = S.calibrate_threshold(eps, candidates=cands)
    assert s_small == 4.0 and c_small == S.DetectorCounts(tp=2, tn=1)
    # d 9.0 at t=1 of the successes fires for s >= 9 before the goal (FP): the tied run is 4..8
    s_mid, c_mid = S.calibrate_threshold(eps, candidates=cands, tie="middle")
    assert s_mid == 6.0 and c_mid == S.DetectorCounts(tp=2, tn=1)
    # a success that reads d = 5 at the goal, unseen at calibration: only the middle catches it
    new = ([20.0, 9.5, 5.0], [False, False, True])
    assert S.score_episode(*new, s_small) == S.DetectorCounts(fn=1)
    assert S.score_episode(*new, s_mid) == S.DetectorCounts(tp=1)
    # a lone best s is chosen either way
    assert S.calibrate_threshold([EP1, EP2], candidates=[1.0, 1.5, 2.5], tie="middle")[0] == 1.5
    with pytest.raises(ValueError, match="tie"):
        S.calibrate_threshold([EP1], tie="largest")
