"""Several workers, one record: two worker processes (``python -m core.worker``, as on two
machines) claim jobs from one PostgreSQL database and run two practice sessions of two tasks at
the same time; each job's progress, robots and episodes stay its own. Needs the test PostgreSQL
(scripts/test.sh starts one; skipped, saying so, without it). About 40 s on 2 cores."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from sqlalchemy import select

from storage import init_db, repo
from storage.models import Episode, Robot
from tests.core.worker.conftest import practice_params
from tests.storage.conftest import pg_server  # noqa: F401 - the session's test PostgreSQL

ROOT = Path(__file__).resolve().parents[3]
B2B = {"family": "block2block", "image_size": 32, "max_steps": 30}
B2L = {"family": "block2location", "image_size": 32, "max_steps": 30}


def test_two_workers_on_one_postgresql_run_two_practice_sessions_at_once(tmp_path, stage1, pg_server):  # noqa: F811
    url = pg_server.create()
    db = init_db(url)
    with db.write() as s:
        tasks = [repo.create_task(s, name, "tabletop", cfg).id for name, cfg in (("blocks", B2B), ("places", B2L))]
        jobs = [repo.enqueue_job(s, "practice", practice_params(stage1, env_config=cfg, max_episodes=12, eval_every=0),
                                 task_id=tid).id for tid, cfg in zip(tasks, (B2B, B2L))]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")}
    workers = [subprocess.Popen([sys.executable, "-m", "core.worker", "--db", url, "--data", str(tmp_path / name),
                                 "--name", name, "--no-server", "--max-jobs", "1", "--poll", "0.2", "--threads", "1",
                                 "--quiet"], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True) for name in ("machine-a", "machine-b")]
    outs = [w.communicate(timeout=400)[0] for w in workers]
    assert [w.returncode for w in workers] == [0, 0], [o[-3000:] for o in outs]
    with db.read() as s:
        rows = [repo.get_job(s, j) for j in jobs]
        robots = {r.id: r for r in s.scalars(select(Robot))}
        eps = {j: s.scalars(select(Episode).where(Episode.job_id == j)).all() for j in jobs}
    assert all(j.status == "done" for j in rows), [(j.id, j.status, j.error) for j in rows]
    assert {j.claimed_by for j in rows} == {"machine-a", "machine-b"}  # one job each
    a, b = rows
    assert a.started_at < b.finished_at and b.started_at < a.finished_at  # at the same time
    for job, tid in zip(rows, tasks):
        mine = eps[job.id]
        assert mine and all(e.task_id == tid and e.session_id == job.session_id for e in mine)
        assert {robots[e.robot_id].worker for e in mine} == {job.claimed_by}  # its own robots
        assert all(robots[e.robot_id].name.startswith(job.claimed_by + "/") for e in mine)
        assert job.progress == 1.0 and job.result["episodes_recorded"] == len([e for e in mine
                                                                              if e.status == "finished"])
    uids = [e.uid for es in eps.values() for e in es]
    assert len(uids) == len(set(uids))
    assert rows[0].session_id != rows[1].session_id
