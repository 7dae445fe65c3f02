"""The worker's fleet wrapper in a pipelined rollout: steps go through to the simulator
processes' submit/collect; a robot that dies is reported and parked."""
from __future__ import annotations

import numpy as np
import torch

from core.learning.fleets import ProcessFleet
from core.learning.policy import DojoPolicy
from core.learning.rollout import END_ABORTED, RolloutHooks, rollout_groups, run_episodes
from core.worker.supervised_fleet import SupervisedFleet
from tests.core.learning.helpers import tiny_config

ENV = {"family": "block2block", "image_size": 32, "max_steps": 10, "terminate_on_success": False}


def test_the_supervised_fleet_pipelines_like_its_simulators_and_parks_a_dead_robot():
    torch.manual_seed(0)
    policy = DojoPolicy(tiny_config())
    inner = ProcessFleet("tabletop", ENV, 4)
    failures = []
    fleet = SupervisedFleet(inner, on_failure=lambda i, f: failures.append((i, f.message)))
    try:
        assert fleet.pipelined and rollout_groups(fleet) == 2
        seeds = list(range(10, 16))
        kw = dict(greedy=False, stop_on_ground_truth=False, groups=2)
        wrapped = run_episodes(policy, None, seeds, fleet=fleet, generator=torch.Generator().manual_seed(1), **kw)
        bare = run_episodes(policy, None, seeds, fleet=inner, generator=torch.Generator().manual_seed(1), **kw)
        assert [(r.seed, r.length, r.end_reason) for r in wrapped] == [(r.seed, r.length, r.end_reason) for r in bare]
        for a, b in zip(wrapped, bare):
            np.testing.assert_array_equal(np.array(a.actions), np.array(b.actions))

        def control(robot, rec):
            if robot == 2 and rec.length == 4 and inner.procs[2].is_alive():
                inner.procs[2].kill()
                inner.procs[2].join(5)

        recs = run_episodes(policy, None, list(range(20, 24)), fleet=fleet, hooks=RolloutHooks(control=control),
                            generator=torch.Generator().manual_seed(1), **kw)
        assert [i for i, _ in failures] == [2] and "died" in failures[0][1]
        dead = [r for r in recs if r.end_reason == END_ABORTED]
        assert len(dead) == 1 and dead[0].length == 4
        assert sum(r.length == ENV["max_steps"] for r in recs) == 3  # the other robots finished
        obs, info = fleet.reset(2, 99)  # parked: a placeholder, not a crash of the rollout
        assert fleet.parked[2] and "parked" in info and not obs["image"].any()
    finally:
        fleet.close()
