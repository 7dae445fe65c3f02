"""The rollout loop: lock-step and pipelined (robot groups), on real simulator processes."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from core.learning.fleets import LocalFleet, ProcessFleet, RobotFailure, SplitPhase
from core.learning.policy import DojoPolicy
from core.method.detector import DetectorSpec
from core.learning.rollout import (END_ABORTED, END_STOPPED, RolloutHooks, rollout_batch, rollout_groups,
                          run_episodes)
from sim_backends.registry import make_env
from tests.core.learning.helpers import tiny_config

ENV = {"family": "block2block", "image_size": 32, "max_steps": 12, "terminate_on_success": False}


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    policy = DojoPolicy(tiny_config())
    torch.manual_seed(1)
    reward = DojoPolicy(tiny_config())
    return policy, reward


@pytest.fixture(scope="module")
def fleet():
    f = ProcessFleet("tabletop", ENV, 4)
    yield f
    f.close()


def _roll(policy, reward, fleet, seeds, groups, discard_on_stop=False, **hooks):
    return run_episodes(policy, None, seeds, fleet=fleet, greedy=False, reward_model=reward,
                        stop_on_ground_truth=False, detector=DetectorSpec(4.0, 2),
                        generator=torch.Generator().manual_seed(3), groups=groups, discard_on_stop=discard_on_stop,
                        hooks=RolloutHooks(**hooks))


def _key(recs):
    return [(r.seed, r.end_reason, r.length, np.round(r.d, 5).tolist(), np.round(np.array(r.actions), 6).tolist())
            for r in recs]


def test_pipelined_rollouts_do_not_depend_on_timing(models, fleet):
    """Groups of simulator processes stepping while the learner works give exactly the episodes
    of the same groups run one command at a time in this process (no overlap, no timing)."""
    policy, reward = models
    seeds = list(range(100, 110))
    piped = _roll(policy, reward, fleet, seeds, 2)
    local = LocalFleet(lambda: make_env("tabletop", ENV), 4)
    try:
        assert not SplitPhase(local).native and SplitPhase(fleet).native
        serial = _roll(policy, reward, local, seeds, 2)
    finally:
        local.close()
    assert [r.seed for r in piped] == seeds
    assert _key(piped) == _key(serial)
    assert _key(_roll(policy, reward, fleet, seeds, 2)) == _key(piped)  # and again: same run
    assert sum(r.length for r in piped) > len(seeds)  # episodes ran


def test_groups_change_the_timing_not_the_episodes(models, fleet):
    """Groups take their turns in robot order and draw actions from the one sampling stream in
    that order, so a pipelined rollout gives the lock-step rollout's episodes: pipelining is a
    speed setting, not a change of the practice run (the quick tabletop bench reproduced the
    lock-step result to the last episode)."""
    policy, reward = models
    seeds = list(range(200, 210))
    lock = _roll(policy, reward, fleet, seeds, 1)
    for groups in (2, 3, 4):
        piped = _roll(policy, reward, fleet, seeds, groups)
        assert [(r.seed, r.end_reason, r.length) for r in piped] == [(r.seed, r.end_reason, r.length) for r in lock]
        for a, b in zip(lock, piped):
            np.testing.assert_array_equal(np.array(a.actions), np.array(b.actions))
            np.testing.assert_allclose(a.d, b.d, atol=1e-4)  # batch sizes differ: float rounding only


def test_a_stop_raised_mid_rollout_leaves_no_reply_behind_for_the_next_rollout(models, fleet):
    """A worker's stop raises out of ``control`` while the other group's steps are out; the
    next rollout on the same fleet must not read those stale replies."""
    policy, reward = models
    calls = {"n": 0}

    def control(_robot, _rec):
        calls["n"] += 1
        if calls["n"] == 7:
            raise KeyboardInterrupt("stop")

    with pytest.raises(KeyboardInterrupt):
        _roll(policy, reward, fleet, list(range(300, 308)), 2, control=control)
    seeds = list(range(400, 406))
    after = _roll(policy, reward, fleet, seeds, 2)
    fresh = ProcessFleet("tabletop", ENV, 4)
    try:
        assert _key(after) == _key(_roll(policy, reward, fresh, seeds, 2))
    finally:
        fresh.close()


def test_a_robot_that_fails_mid_episode_is_aborted_and_the_rest_go_on(models):
    """A simulator process killed while its step is out: that episode is aborted, the other
    robots finish theirs (the dead robot's later resets fail: the worker's fleet parks it)."""
    policy, reward = models
    f = ProcessFleet("tabletop", ENV, 4)
    try:
        def control(robot, rec):
            if robot == 1 and rec.length == 3:
                f.procs[1].kill()
                f.procs[1].join(5)
            return None

        recs = _roll(policy, reward, f, list(range(500, 508)), 2, control=control)
    finally:
        f.close()
    aborted = [r for r in recs if r.end_reason == END_ABORTED]
    assert aborted and all("died" in r.error for r in aborted)
    assert [r.length for r in aborted if r.length] == [3]  # the episode under way when it died
    assert len(recs) == 8 and sum(r.end_reason != END_ABORTED for r in recs) >= 3  # the others finished


def test_a_stop_verdict_ends_only_that_robots_episode_in_a_pipelined_rollout(models, fleet):
    policy, reward = models

    def control(robot, rec):
        return END_STOPPED if robot == 3 and rec.length == 2 else None

    recs = _roll(policy, reward, fleet, list(range(600, 606)), 2, control=control)
    stopped = [r for r in recs if r.end_reason == END_STOPPED]
    assert stopped and all(r.length == 2 for r in stopped)
    assert any(r.end_reason != END_STOPPED and r.length > 2 for r in recs)


def test_how_many_groups(monkeypatch, fleet):
    local = LocalFleet(lambda: make_env("tabletop", ENV), 4)
    try:
        monkeypatch.delenv("DOJO_ROLLOUT_GROUPS", raising=False)
        assert rollout_groups(fleet) == 2 and rollout_batch(fleet) == 2  # 4 processes: pipelined
        assert rollout_groups(local) == 1 and rollout_batch(local) == 4  # in-process: nothing to overlap
        assert rollout_groups(fleet, 3) == 3 and rollout_batch(fleet, 3) == 2
        assert rollout_groups(fleet, 9) == 4  # never more groups than robots
        monkeypatch.setenv("DOJO_ROLLOUT_GROUPS", "1")
        assert rollout_groups(fleet) == 1 and rollout_groups(fleet, 2) == 2  # the argument wins
        monkeypatch.setenv("DOJO_ROLLOUT_GROUPS", "two")
        with pytest.raises(ValueError, match="DOJO_ROLLOUT_GROUPS='two'.*whole number"):
            rollout_groups(fleet)
    finally:
        local.close()


def test_split_phase_runs_a_plain_fleets_commands_at_collect(fleet):
    local = LocalFleet(lambda: make_env("tabletop", ENV), 2)
    try:
        ops = SplitPhase(local)
        ops.submit({0: ("reset", 5), 1: ("reset", 5)})
        got = ops.collect([1, 0])
        assert list(got) == [1, 0] and np.array_equal(got[0][0]["image"], got[1][0]["image"])
        ops.submit({0: ("step", np.zeros(2, np.float32)), 1: ("step", np.zeros(3, np.float32))})
        res = ops.collect([0, 1])
        assert not isinstance(res[0], RobotFailure) and isinstance(res[1], RobotFailure)
        ops.submit({0: ("step", np.zeros(2, np.float32))})
        ops.discard([0])  # forgotten, never run
        assert ops.collect([]) == {}
    finally:
        local.close()


def test_a_discarding_stop_drops_the_episodes_under_way_and_leaves_nothing_behind(models, fleet):
    """``discard_on_stop``: once ``on_episode`` says stop, the episodes under way are dropped at
    the end of that round (each reported once) instead of running on; the same for any group
    count; the next rollout on the fleet is a fresh one."""
    policy, reward = models
    seeds = list(range(700, 720))

    def run(groups, discard):
        ended, dropped = [], []

        def on_episode(rec):
            ended.append(rec.seed)
            return len(ended) < 3

        def control(robot, rec):  # robot 0's first episode is stopped early: the robots fall out of step
            return END_STOPPED if rec.seed == seeds[0] and rec.length == 3 else None

        recs = _roll(policy, reward, fleet, seeds, groups, on_episode=on_episode, discard_on_stop=discard,
                     control=control,
                     on_discard=lambda i, rec: dropped.append((i, rec.seed, rec.end_reason, rec.length)))
        return recs, dropped

    kept, dropped = run(1, True)
    assert len(kept) >= 3 and dropped and all(reason == "discarded" for _, _, reason, _ in dropped)
    assert {seed for _, seed, _, _ in dropped}.isdisjoint(r.seed for r in kept)
    assert all(0 < length < ENV["max_steps"] for *_, length in dropped)  # cut short, not finished
    assert len({i for i, *_ in dropped}) == len(dropped)  # one per robot
    finished, none = run(1, False)
    assert not none and {seed for _, seed, _, _ in dropped} <= {r.seed for r in finished}  # the default lets
    assert len(finished) > len(kept)  # them (and any reset already out) run to their end
    assert [r.seed for r in finished][: len(kept)] == [r.seed for r in kept]
    kept2, dropped2 = run(2, True)
    assert dropped2 == dropped and [(r.seed, r.length, r.end_reason) for r in kept2] == \
        [(r.seed, r.length, r.end_reason) for r in kept]
    for a, b in zip(kept, kept2):
        np.testing.assert_array_equal(np.array(a.actions), np.array(b.actions))
        np.testing.assert_allclose(a.d, b.d, atol=1e-4)
    after = _roll(policy, reward, fleet, [900, 901], 2)
    fresh = ProcessFleet("tabletop", ENV, 4)
    try:
        assert _key(after) == _key(_roll(policy, reward, fresh, [900, 901], 2))
    finally:
        fresh.close()


def test_may_start_holds_robots_back_the_same_way_for_any_group_count(models, fleet):
    """``may_start`` is asked, once per round, before each new episode with the steps of the
    episodes under way; a robot it refuses waits and is asked again later. The decisions do
    not depend on the group count (same episodes), and a fleet with nothing under way always
    starts one (no stall, even under a predicate that always says no)."""
    policy, reward = models
    seeds = list(range(800, 812))

    def run(groups, rule):
        asked = []

        def may_start(steps):
            asked.append(tuple(steps))
            return rule(steps)

        recs = _roll(policy, reward, fleet, seeds, groups, may_start=may_start)
        return recs, asked

    at_most_two = lambda steps: len(steps) < 2  # noqa: E731 - two robots of four at a time
    lock, asked = run(1, at_most_two)
    assert [r.seed for r in lock] == seeds and all(r.length > 0 for r in lock)
    assert asked and max(len(a) for a in asked) <= 2  # never more than two under way when asked
    for groups in (2, 4):
        piped, asked_p = run(groups, at_most_two)
        assert asked_p == asked
        assert [(r.seed, r.length, r.end_reason) for r in piped] == [(r.seed, r.length, r.end_reason) for r in lock]
    never, _ = run(2, lambda steps: False)  # one robot at a time, but every seed still runs
    assert [r.seed for r in never] == seeds
    free, _ = run(1, lambda steps: True)  # a predicate that always allows = no predicate
    plain = _roll(policy, reward, fleet, seeds, 1)
    assert [(r.seed, r.length) for r in free] == [(r.seed, r.length) for r in plain]


class _Recording:
    """A tabletop env that remembers the actions it was sent."""

    def __init__(self):
        self.env = make_env("tabletop", ENV)
        self.max_steps, self.sent = self.env.max_steps, []

    def reset(self, seed):
        return self.env.reset(seed=seed)

    def step(self, a):
        self.sent.append(np.asarray(a, np.float64))
        return self.env.step(np.clip(a, -1, 1))

    def close(self):
        self.env.close()


def test_a_policy_with_action_bounds_sends_robot_units_and_records_its_own():
    """The checkpoint's bounds (an imported dataset's units) map each action on its way to the
    robot; the episode keeps the policy's [-1, 1] action, which REINFORCE's log-probability needs."""
    from core.method.action_units import unit_to_bounds

    low, high = (-0.05, 10.0), (0.05, 20.0)
    torch.manual_seed(0)
    policy = DojoPolicy(tiny_config(action_low=low, action_high=high))
    envs = []

    def make():
        envs.append(_Recording())
        return envs[-1]

    recs = run_episodes(policy, make, [7], n_envs=1, greedy=True, stop_on_ground_truth=False)
    sent, recorded = np.array(envs[0].sent), np.array(recs[0].actions)
    assert len(sent) == len(recorded) == recs[0].length > 0
    assert recorded.min() >= -1 and recorded.max() <= 1
    np.testing.assert_allclose(sent, unit_to_bounds(recorded, low, high))
    assert sent[:, 1].min() >= 10.0 and np.abs(sent[:, 0]).max() <= 0.05


def test_policy_config_keeps_the_bounds_through_json_and_refuses_bad_ones():
    from core.learning.policy import PolicyConfig

    cfg = tiny_config(action_low=[-2, 0], action_high=[2, 1])
    back = PolicyConfig.from_dict(__import__("json").loads(cfg.to_json()))
    assert back.action_low == (-2.0, 0.0) and back.action_high == (2.0, 1.0) and back == cfg
    assert tiny_config().to_robot_units(np.array([0.5, -1.0])).tolist() == [0.5, -1.0]  # no bounds: [-1, 1] itself
    with pytest.raises(ValueError, match="need 2 values"):
        tiny_config(action_low=[0.0], action_high=[1.0])
    with pytest.raises(ValueError, match="both"):
        tiny_config(action_low=[0.0, 0.0])
