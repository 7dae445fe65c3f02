"""Refining the reward model on labeled rollouts: targets, the censored loss, and that it
separates goal frames from failure frames the demonstrations never showed."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from core.method import detector as D
from core.learning.policy import DojoPolicy
from core.learning.refine import (LabeledEpisode, RefineConfig, censored_stg_nll, default_fail_floor, episode_d,
                         from_record, labeled_stg_loss, refine_reward, rollout_targets)
from core.learning.rollout import EpisodeRecord
from tests.core.learning.helpers import INSTRUCTIONS, tiny_config


def test_success_frames_count_down_to_the_goal_and_later_frames_are_dropped():
    labels, censored = rollout_targets(6, True, 3, fail_floor=4)
    assert labels.tolist() == [3, 2, 1, 0] and not censored.any()
    labels, _ = rollout_targets(3, True, None, fail_floor=4)  # goal = last frame
    assert labels.tolist() == [2, 1, 0]
    with pytest.raises(ValueError, match="outside"):
        rollout_targets(3, True, 5, fail_floor=4)


def test_failed_frames_get_a_lower_bound_from_the_steps_left_and_the_floor():
    labels, censored = rollout_targets(5, False, None, fail_floor=3)
    # frame t of 5 (last T=4): steps-to-go > T - t, i.e. >= 5 - t; never below the floor.
    assert labels.tolist() == [5, 4, 3, 3, 3] and censored.all()


def test_default_floor_sits_well_above_the_threshold():
    assert default_fail_floor(0.5) == 3 and default_fail_floor(2.5) == 5 and default_fail_floor(4.0) == 8


def test_censored_nll_is_minus_log_of_the_mass_at_or_above_the_bound():
    probs = torch.tensor([[0.5, 0.25, 0.25]])
    logits = probs.log()
    nll = lambda lower: float(censored_stg_nll(logits, torch.tensor([lower]), cap=2, bin_width=1))  # noqa: E731
    assert nll(0) == pytest.approx(0.0, abs=1e-6)
    assert nll(1) == pytest.approx(-math.log(0.5))
    assert nll(2) == pytest.approx(-math.log(0.25))
    assert nll(9) == pytest.approx(-math.log(0.25))  # above the cap: the last bin
    # bins of width 2 over 0..4: bound 3 falls in bin 1 (labels 2-3)
    logits2 = torch.tensor([[0.2, 0.3, 0.5]]).log()
    assert float(censored_stg_nll(logits2, torch.tensor([3]), cap=4, bin_width=2)) == pytest.approx(-math.log(0.8))


def test_labeled_loss_averages_exact_cross_entropy_and_censored_nll():
    logits = torch.tensor([[0.5, 0.25, 0.25], [0.1, 0.2, 0.7]]).log()
    loss = labeled_stg_loss(logits, torch.tensor([0, 1]), torch.tensor([False, True]), cap=2, bin_width=1)
    assert float(loss) == pytest.approx((-math.log(0.5) - math.log(0.9)) / 2)


def test_from_record_labels_by_the_first_ground_truth_success():
    frames = [np.full((8, 8, 3), i, np.uint8) for i in range(4)]
    rec = EpisodeRecord(seed=1, instruction=INSTRUCTIONS[0], gt=[False, False, True, True],
                        frames=frames, proprio=[np.zeros(2, np.float32)] * 4)
    lab = from_record(rec)
    assert lab.success and lab.goal_index == 2 and lab.frames.shape == (4, 8, 8, 3)
    rec.gt = [False] * 4
    assert not from_record(rec).success
    with pytest.raises(ValueError, match="keep_frames"):
        from_record(EpisodeRecord(seed=2, instruction="x"))


def _episodes(size: int, n: int = 6, T: int = 6) -> list[LabeledEpisode]:
    """Successes end on a bright frame; failures hover on a dim one the model must learn to
    tell apart (the near-miss); earlier frames are mid-grey in both."""
    out = []
    for k in range(n):
        ok = k % 2 == 0
        frames = np.full((T + 1, size, size, 3), 120, np.uint8)
        frames[-1] = 250 if ok else 10
        if not ok:
            frames[T // 2:] = 10
        prop = np.zeros((T + 1, 2), np.float32)
        out.append(LabeledEpisode(frames, prop, INSTRUCTIONS[0], ok, T if ok else None, seed=k))
    return out


def test_refining_pushes_failure_frames_above_the_threshold_and_keeps_the_goal_below():
    torch.manual_seed(0)
    model = DojoPolicy(tiny_config(image_size=16, stg_cap=10, stg_bin_width=1))
    eps = _episodes(16)
    s = 1.0
    stats = refine_reward(model, eps, s, RefineConfig(steps=150, lr=3e-3, train_vision=True))
    ds = episode_d(model, eps)
    goal = [d[-1] for d, e in zip(ds, eps) if e.success]
    fail = [d.min() for d, e in zip(ds, eps) if not e.success]
    assert max(goal) <= s < min(fail), (goal, fail)
    assert stats["after"]["d_fail_min_mean"] > stats["before"]["d_fail_min_mean"]
    assert stats["labeled_success"] == 3 and stats["labeled_failure"] == 3 and stats["fail_floor"] == 3
    # the detector now separates them: a true positive on every success, no false positive
    counts = D.DetectorCounts()
    for d, e in zip(ds, eps):
        gt = [False] * (len(d) - 1) + [e.success]
        counts = counts + D.score_episode(d, gt, s)
    assert counts.fp == 0 and counts.tp == 3


def test_refining_leaves_the_action_head_and_frozen_vision_alone():
    torch.manual_seed(0)
    model = DojoPolicy(tiny_config(image_size=16))
    act = model.action_head.weight.detach().clone()
    vision = [p.detach().clone() for m in model.vision_modules() for p in m.parameters()]
    refine_reward(model, _episodes(16, n=2), 1.0, RefineConfig(steps=3, lr=1e-2))
    assert torch.equal(model.action_head.weight, act)
    assert all(torch.equal(a, p) for a, p in zip(vision, [p for m in model.vision_modules() for p in m.parameters()]))
    assert not model.training
    with pytest.raises(ValueError, match="at least one"):
        refine_reward(model, [], 1.0)


def test_fail_tail_trains_on_the_last_frames_of_a_failure_only():
    from core.learning.refine import _table

    eps = _episodes(16, n=2, T=6)  # one success (7 frames, cut at its goal), one failure (7 frames)
    table, cens, keep = _table(eps, 3)
    assert keep.all() and len(table) == 14
    table, cens, keep = _table(eps, 3, fail_tail=2)
    assert list(keep[:7]) == [True] * 7  # the success: every frame
    assert list(keep[7:]) == [False] * 5 + [True] * 2 and cens[7:].all()
    torch.manual_seed(0)
    model = DojoPolicy(tiny_config(image_size=16))
    stats = refine_reward(model, eps, 1.0, RefineConfig(steps=2, fail_tail=2))
    assert stats["labeled_failure"] == 1


def test_anchor_keeps_d_where_it_was_on_the_failures_earlier_frames():
    eps = _episodes(16, n=4, T=6)
    early = [LabeledEpisode(e.frames[:4], e.proprio[:4], e.instruction, False, None) for e in eps if not e.success]

    def moved(anchor: float) -> float:
        torch.manual_seed(0)
        model = DojoPolicy(tiny_config(image_size=16, stg_cap=10, stg_bin_width=1))
        before = np.concatenate(episode_d(model, early))
        stats = refine_reward(model, eps, 1.0, RefineConfig(steps=60, lr=3e-3, train_vision=True, fail_tail=2,
                                                             anchor=anchor))
        assert stats["anchor"] == anchor and stats["fail_tail"] == 2
        return float(np.abs(np.concatenate(episode_d(model, early)) - before).mean())

    free, anchored = moved(0.0), moved(10.0)
    assert anchored < 0.5 * free, (anchored, free)
