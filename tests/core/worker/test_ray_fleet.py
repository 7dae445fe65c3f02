"""The fleet as Ray actors on a real local Ray cluster of two nodes (two raylets on loopback,
started here with Ray's own ``ray.cluster_utils.Cluster``), each offering ``dojo_robot`` slots:
robots on both nodes, the same episodes as the process fleet, a node lost mid-iteration (its
processes killed) with practice going on on the other, and a robot rejoining when a node comes
back. About a minute on 2 cores."""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import ray  # pinned in requirements.txt: missing, these tests must fail, not skip
import torch

from core.learning.fleets import ProcessFleet, RobotFailure
from core.learning.ray_fleet import ROBOT_RESOURCE, RayClusterError, RayFleet, connect_ray

ENV = {"family": "block2block", "image_size": 32, "max_steps": 12, "terminate_on_success": False}
# A lost node is noticed in about a second instead of Ray's default 15 s.
FAST_HEALTH = {"health_check_initial_delay_ms": 0, "health_check_period_ms": 300, "health_check_failure_threshold": 3}


@pytest.fixture(scope="module")
def cluster():
    from ray.cluster_utils import Cluster

    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "resources": {ROBOT_RESOURCE: 2},
                                                      "include_dashboard": False, "_system_config": FAST_HEALTH})
    c.add_node(num_cpus=1, resources={ROBOT_RESOURCE: 2})
    c.wait_for_nodes()
    connect_ray(c.address)
    yield c
    ray.shutdown()
    c.shutdown()


def _robot_node(c):
    """A node with two robot slots, added to the cluster (to be lost later)."""
    node = c.add_node(num_cpus=1, resources={ROBOT_RESOURCE: 2})
    c.wait_for_nodes()
    return node


def _lose(c, node):
    """The node dies as a machine does: its raylet, its object store and every worker process on
    it (Ray's remove_node leaves the workers to notice their raylet is gone)."""
    import os
    import signal

    from bench.common import descendants

    raylet = node.all_processes["raylet"][0].process.pid
    workers = descendants(raylet)
    c.remove_node(node, allow_graceful=False)
    for pid in workers:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_robots_spread_over_both_nodes_and_roll_out_the_process_fleets_episodes(cluster):
    from core.learning.policy import DojoPolicy
    from core.learning.rollout import run_episodes
    from tests.core.learning.helpers import tiny_config

    fleet = RayFleet("tabletop", ENV, 4, address=cluster.address)
    procs = ProcessFleet("tabletop", ENV, 4)
    try:
        assert len(set(fleet.node_ids)) == 2  # two dojo_robot slots a node: both nodes host robots
        torch.manual_seed(0)
        policy = DojoPolicy(tiny_config())

        def key(recs):
            return [(r.seed, r.end_reason, r.length, np.round(np.array(r.actions), 6).tolist()) for r in recs]

        runs = [run_episodes(policy, None, list(range(10)), fleet=f, greedy=False, groups=2,
                             generator=torch.Generator().manual_seed(3)) for f in (fleet, procs)]
        assert key(runs[0]) == key(runs[1]) and len(runs[0]) == 10
    finally:
        fleet.close()
        procs.close()


def test_a_lost_node_fails_only_its_robots_and_they_rejoin_when_a_node_comes_back(cluster):
    node = _robot_node(cluster)
    fleet = RayFleet("tabletop", ENV, 6, address=cluster.address)  # 2 + 2 + 2 slots: one robot pair per node
    try:
        lost_id = node.node_id[:8]
        on_lost = [i for i in range(6) if fleet.node_ids[i] == lost_id]
        assert len(on_lost) == 2
        for i in range(6):
            assert not isinstance(fleet.reset(i, i), RobotFailure)
        _lose(cluster, node)
        out = fleet.step({i: np.zeros(2, np.float32) for i in range(6)})
        failed = sorted(i for i, r in out.items() if isinstance(r, RobotFailure))
        assert failed == on_lost and all("died" in out[i].message for i in failed)
        assert not any(fleet.available(i) for i in on_lost)  # restarting: no room until a node comes back
        back = _robot_node(cluster)
        end = time.monotonic() + 90
        while not all(fleet.available(i) for i in on_lost) and time.monotonic() < end:
            time.sleep(0.3)
        assert all(fleet.available(i) for i in on_lost)
        assert {fleet.node_ids[i] for i in on_lost} == {back.node_id[:8]}  # restarted on the new node
        for i in on_lost:
            assert not isinstance(fleet.reset(i, 100 + i), RobotFailure)  # a fresh simulator, serving again
        _lose(cluster, back)
    finally:
        fleet.close()


def test_practice_goes_on_when_a_node_is_lost_mid_iteration(tmp_path, cluster, stage1):
    """The worker's practice job on a Ray fleet over three nodes; one node is lost while episodes
    run: its robots' episodes are aborted, its robots show offline, practice finishes its budget
    on the others, and every committed episode is whole and recorded once."""
    from sqlalchemy import func, select

    from core.worker.runner import Worker
    from storage import init_db, repo
    from storage.models import Episode, Robot, Step
    from tests.core.worker.conftest import practice_params

    node = _robot_node(cluster)
    db = init_db(tmp_path / "dojo.sqlite")
    with db.write() as s:
        job_id = repo.enqueue_job(s, "practice", practice_params(
            stage1, fleet={"kind": "ray", "size": 6, "address": cluster.address}, max_episodes=30,
            eval_every=0, tuples_per_iteration=48)).id
    w = Worker(db, name="wray", data_dir=tmp_path, poll_s=0.1)
    lost_at: dict[str, int] = {}

    def lose_mid_iteration():
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            with db.read() as s:
                done = s.scalar(select(func.count()).select_from(Episode).where(
                    Episode.job_id == job_id, Episode.status == "finished"))
                running = s.scalar(select(func.count()).select_from(Episode).where(
                    Episode.job_id == job_id, Episode.status == "running"))
            if done >= 4 and running >= 3:
                with db.read() as s:
                    lost_at["last_id"] = s.scalar(select(func.max(Episode.id)).where(Episode.job_id == job_id))
                _lose(cluster, node)
                return
            time.sleep(0.1)

    killer = threading.Thread(target=lose_mid_iteration, daemon=True)
    killer.start()
    assert w.run(exit_when_idle=True) == 1
    killer.join(5)
    with db.read() as s:
        job = repo.get_job(s, job_id)
        eps = s.scalars(select(Episode).where(Episode.job_id == job_id)).all()
        robots = {r.id: r for r in s.scalars(select(Robot)).all()}
        steps = dict(s.execute(select(Step.episode_id, func.count()).group_by(Step.episode_id)).all())
    assert job.status == "done", job.error
    assert lost_at, "the node was never lost: practice ended first"
    lost_node = node.node_id[:8]
    on_lost = {rid for rid, r in robots.items() if (r.spec or {}).get("node", "").endswith(lost_node)}
    assert len(on_lost) == 2 and all(robots[r].status == "offline" for r in on_lost)
    died = [e for e in eps if e.status == "aborted" and "died" in (e.abort_reason or "")]
    assert died and {e.robot_id for e in died} <= on_lost
    finished = [e for e in eps if e.status == "finished"]
    assert len({e.uid for e in eps}) == len(eps)  # nothing recorded twice
    assert all(steps.get(e.id) == e.length + 1 for e in finished)  # every committed episode whole
    after = [e for e in finished if e.id > lost_at["last_id"]]  # episodes started after the loss
    assert after and not {e.robot_id for e in after} & on_lost  # went on, on the other nodes only
    assert job.result["iterations"] >= 1 and job.result["episodes_recorded"] >= len(finished)


def test_a_cluster_that_cannot_be_reached_is_refused_with_the_address_and_the_fix():
    import subprocess
    import sys

    code = ("from core.learning.ray_fleet import RayFleet, RayClusterError\n"
            "try:\n    RayFleet('tabletop', {}, 1, address='127.0.0.1:1')\n"
            "except RayClusterError as e:\n    print('REFUSED', e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         cwd=str(__import__("pathlib").Path(__file__).resolve().parents[3]))
    assert "REFUSED" in out.stdout, out.stderr[-2000:]
    assert "127.0.0.1:1" in out.stdout and "ray start --head" in out.stdout and "docs/cluster.md" in out.stdout
    assert RayClusterError.__doc__


def test_nothing_imports_ray_unless_a_ray_fleet_is_asked_for():
    """The worker, its practice job, the CLI and the practice loop load without Ray (it costs
    seconds and starts nothing then, but a process fleet must not depend on it)."""
    import subprocess
    import sys

    code = ("import sys\nimport core.worker.runner, core.worker.jobs.practice, core.cli, core.learning.practice.loop\n"
            "import core.learning.ray_fleet\nprint('ray' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         cwd=str(__import__("pathlib").Path(__file__).resolve().parents[3]))
    assert out.stdout.strip() == "False", out.stderr[-2000:]
