"""The one detector rule (core.method.detector): firing, scoring and calibrating s."""
from __future__ import annotations

import numpy as np
import pytest

from core.method import detector as D


D_SEQ = [5.0, 3.0, 2.0, 4.0, 1.0, 1.0, 0.0]


@pytest.mark.parametrize("patience, expected", [(1, 2), (2, 5), (3, 6), (4, None)])
def test_first_detection_with_patience(patience, expected):
    assert D.first_detection(D_SEQ, 2.0, patience) == expected


def test_first_detection_threshold_is_inclusive_and_empty_is_none():
    assert D.first_detection([3.0, 2.0], 2.0) == 1
    assert D.first_detection([3.0, 2.01], 2.0) is None
    assert D.first_detection([], 2.0) is None
    assert D.first_detection(np.array([0.5]), 1.0) == 0


def test_first_detection_run_restarts_after_a_miss():
    # two below-threshold steps separated by a miss never make a run of 2
    assert D.first_detection([1.0, 9.0, 1.0, 9.0], 2.0, patience=2) is None


@pytest.mark.parametrize("patience", [0, -1])
def test_first_detection_bad_patience(patience):
    with pytest.raises(ValueError, match=str(patience)):
        D.first_detection([1.0], 2.0, patience)


def test_score_episode_true_positive():
    assert D.score_episode([9.0, 5.0, 1.0], [False, False, True], 2.0) == D.DetectorCounts(tp=1)


def test_score_episode_fires_before_ground_truth_is_false_positive():
    assert D.score_episode([9.0, 1.0, 0.0], [False, False, True], 2.0) == D.DetectorCounts(fp=1)


def test_score_episode_fires_on_failed_episode_is_false_positive():
    assert D.score_episode([9.0, 1.0], [False, False], 2.0) == D.DetectorCounts(fp=1)


def test_score_episode_never_fires_on_success_is_false_negative():
    assert D.score_episode([9.0, 5.0, 3.0], [False, False, True], 2.0) == D.DetectorCounts(fn=1)


def test_score_episode_never_fires_on_failure_is_true_negative():
    assert D.score_episode([9.0, 5.0, 3.0], [False, False, False], 2.0) == D.DetectorCounts(tn=1)


def test_score_episode_patience_turns_early_fire_into_true_positive():
    d = [9.0, 1.0, 5.0, 1.0, 0.0]
    gt = [False, False, False, False, True]
    assert D.score_episode(d, gt, 2.0, patience=1) == D.DetectorCounts(fp=1)
    assert D.score_episode(d, gt, 2.0, patience=2) == D.DetectorCounts(tp=1)
    assert D.score_episode(d, gt, 2.0, patience=3) == D.DetectorCounts(fn=1)


def test_score_episode_length_mismatch_raises():
    with pytest.raises(ValueError, match="3.*2"):
        D.score_episode([1.0, 2.0, 3.0], [False, True], 2.0)


def test_detector_counts_add():
    total = D.DetectorCounts(tp=1) + D.DetectorCounts(fp=2) + D.DetectorCounts(fn=3, tn=4)
    assert total == D.DetectorCounts(1, 2, 3, 4)


# Two demonstration-like episodes, positive only at the last frame.
EP1 = ([10.0, 6.0, 3.0, 1.0], [False, False, False, True])
EP2 = ([8.0, 5.0, 2.5, 1.5], [False, False, False, True])
# s < 1: fires nowhere (F1 0); s in [1, 1.5): EP1 TP, EP2 FN (F1 2/3);
# s in [1.5, 2.5): both TP (F1 1); s in [2.5, 3): EP2 fires early (FP); s >= 3: both FP.


def test_calibrate_threshold_picks_the_f1_optimal_s():
    s, counts = D.calibrate_threshold([EP1, EP2], candidates=[0.5, 1.0, 1.5, 2.0, 2.5, 3.0])
    assert s == 1.5
    assert counts == D.DetectorCounts(tp=2)


def test_calibrate_threshold_default_candidates():
    s, counts = D.calibrate_threshold([EP1, EP2])
    assert s == 1.5
    assert counts == D.DetectorCounts(tp=2)


def test_calibrate_threshold_when_only_a_larger_s_works():
    s, counts = D.calibrate_threshold([EP1], candidates=[0.5, 1.0, 2.0])
    assert s == 1.0 and counts == D.DetectorCounts(tp=1)
    s, _ = D.calibrate_threshold([([5.0, 4.0], [False, True])], candidates=[1.0, 2.0, 4.0, 5.0])
    assert s == 4.0


def test_calibrate_threshold_prefers_the_smaller_s_on_ties():
    # 1.5 and 2.0 both give F1 = 1.0
    s, _ = D.calibrate_threshold([EP1, EP2], candidates=[1.5, 2.0])
    assert s == 1.5


def test_calibrate_threshold_prefers_the_smaller_s_on_ties_whatever_the_order():
    # The docstring promises "ties go to the smaller s"; candidates need not be sorted.
    s, _ = D.calibrate_threshold([EP1, EP2], candidates=[2.0, 1.5])
    assert s == 1.5


def test_calibrate_threshold_uses_patience():
    ep = ([9.0, 1.0, 5.0, 1.0, 0.0], [False, False, False, False, True])
    # patience 1: any s >= 1 fires at t=1 (FP); s < 1 never before t=4 fires there (TP at s >= 0)
    s1, c1 = D.calibrate_threshold([ep], candidates=[0.0, 1.0], patience=1)
    assert (s1, c1) == (0.0, D.DetectorCounts(tp=1))
    # patience 2: s = 1 needs two consecutive frames <= 1: frames 3, 4 -> TP at t=4
    s2, c2 = D.calibrate_threshold([ep], candidates=[1.0], patience=2)
    assert (s2, c2) == (1.0, D.DetectorCounts(tp=1))


def test_calibrate_threshold_needs_episodes():
    with pytest.raises(ValueError, match="at least one"):
        D.calibrate_threshold([])


def test_score_episode_tolerance_accepts_a_firing_just_before_the_goal():
    d = [9.0, 5.0, 1.0, 0.5, 0.2]
    gt = [False, False, False, False, True]
    # fires at t=2 (d=1.0 <= 1.5); the goal is reached 2 steps later
    assert D.score_episode(d, gt, 1.5, tolerance=0) == D.DetectorCounts(fp=1)
    assert D.score_episode(d, gt, 1.5, tolerance=1) == D.DetectorCounts(fp=1)
    assert D.score_episode(d, gt, 1.5, tolerance=2) == D.DetectorCounts(tp=1)
    with pytest.raises(ValueError, match="tolerance"):
        D.score_episode(d, gt, 1.5, tolerance=-1)


def test_f_beta_against_hand_computed_values():
    from core.method.stats import f_beta

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
    s1, c1 = D.calibrate_threshold(ROLLOUTS, candidates=[1.0, 6.0])
    assert (s1, c1) == (6.0, D.DetectorCounts(tp=3, fp=1))
    s05, c05 = D.calibrate_threshold(ROLLOUTS, candidates=[1.0, 6.0], beta=0.5)
    assert (s05, c05) == (1.0, D.DetectorCounts(tp=2, fn=1, tn=1))


def test_calibrate_threshold_middle_tie_keeps_the_margin_on_both_sides():
    # Rollouts of a refined reward model: successes read d 0.5 and 3.5 at the goal, the
    # failure's lowest d is 12. Every s in [3.5, 11.5] scores F1 = 1 on these.
    eps = [([20.0, 9.0, 0.5], [False, False, True]),
           ([20.0, 9.0, 3.5], [False, False, True]),
           ([30.0, 12.0, 12.0], [False, False, False])]
    cands = [float(x) for x in range(1, 16)]  # 1..15
    s_small, c_small = D.calibrate_threshold(eps, candidates=cands)
    assert s_small == 4.0 and c_small == D.DetectorCounts(tp=2, tn=1)
    # d 9.0 at t=1 of the successes fires for s >= 9 before the goal (FP): the tied run is 4..8
    s_mid, c_mid = D.calibrate_threshold(eps, candidates=cands, tie="middle")
    assert s_mid == 6.0 and c_mid == D.DetectorCounts(tp=2, tn=1)
    # a success that reads d = 5 at the goal, unseen at calibration: only the middle catches it
    new = ([20.0, 9.5, 5.0], [False, False, True])
    assert D.score_episode(*new, s_small) == D.DetectorCounts(fn=1)
    assert D.score_episode(*new, s_mid) == D.DetectorCounts(tp=1)
    # a lone best s is chosen either way
    assert D.calibrate_threshold([EP1, EP2], candidates=[1.0, 1.5, 2.5], tie="middle")[0] == 1.5
    with pytest.raises(ValueError, match="tie"):
        D.calibrate_threshold([EP1], tie="largest")


def test_detector_run_counts_frames_in_a_row_and_fires_once():
    run = D.DetectorRun(D.DetectorSpec(2.0, patience=2))
    counts = [run.update(d) for d in D_SEQ]
    assert counts == [0, 0, 1, 0, 1, 2, 3]
    assert run.fired_at == 5 == D.first_detection(D_SEQ, 2.0, 2)
    assert D.detector_counts(D_SEQ, D.DetectorSpec(2.0, 2)) == counts


def test_detector_run_retract_forgets_a_held_frame():
    run = D.DetectorRun(D.DetectorSpec(2.0, patience=2))
    run.update(1.0)
    run.update(1.0)  # would fire here...
    run.retract()  # ...but the frame was a paused robot's, not recorded
    assert run.count == 1 and not run.fired and run.frames == 1
    run.update(1.5)
    assert run.fired_at == 1


def test_missing_d_counts_as_above_the_threshold():
    assert D.detector_counts([1.0, None, 1.0], D.DetectorSpec(2.0)) == [1, 0, 1]
    assert D.first_detection([None, 1.0, 1.0], 2.0, 2) == 2


def test_detector_spec_rejects_bad_patience():
    with pytest.raises(ValueError, match="patience"):
        D.DetectorSpec(1.0, patience=0)
