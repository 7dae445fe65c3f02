"""Crash safety (issue target): the worker process is killed with SIGKILL at random points of a
practice job and restarted each time. Afterwards: no committed episode was lost or changed,
none is duplicated (each iteration holds exactly the episodes its learner used), every
episode running at a kill was marked aborted by the restart, and the job finished.

The default suite kills twice (once mid-episode, once anywhere; ~40 s); ``-m slow`` runs the
12-kill version (~3 minutes on a busy 2-core machine).
"""
from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import select

from storage import init_db, repo
from storage.models import Checkpoint, Episode, Step
from tests.core.worker.conftest import practice_params

ROOT = Path(__file__).resolve().parents[3]


def _snapshot(db, job_id):
    with db.read() as s:
        rows = s.execute(select(Episode.uid, Episode.id, Episode.status, Episode.length, Episode.total_return,
                                Episode.final_d).where(Episode.job_id == job_id)).all()
        nsteps = dict(s.execute(select(Step.episode_id, Step.t).where(Step.t == 0)).all())
    finished = {r.uid: (r.length, round(r.total_return, 6), round(r.final_d, 6)) for r in rows
                if r.status == "finished"}
    running = {r.id for r in rows if r.status == "running"}
    assert all(rows_id in nsteps for rows_id in (r.id for r in rows if r.status == "finished"))
    return finished, running


def _job(db, job_id):
    with db.read() as s:
        return repo.get_job(s, job_id)


def kill_test(stage1, tmp_path, kills: int, seed: int, max_episodes: int, anywhere_s: float = 6.0):
    db_path = tmp_path / "dojo.sqlite"
    db = init_db(db_path)
    with db.write() as s:
        job_id = repo.enqueue_job(s, "practice", practice_params(stage1, max_episodes=max_episodes, eval_every=2),
                                  max_attempts=kills + 10).id
    cmd = [sys.executable, "-m", "core.worker", "--db", str(db_path), "--data", str(tmp_path / "data"),
           "--name", "crashy", "--no-server", "--exit-when-idle", "--threads", "1", "--poll", "0.1", "--quiet"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    rng = random.Random(seed)
    committed: dict[str, tuple] = {}
    running_at_kill: list[set[int]] = []
    done_kills = 0
    t0 = time.monotonic()
    for k in range(kills):
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 90
        while _job(db, job_id).attempts < k + 1 and proc.poll() is None:  # wait for this life's claim
            assert time.monotonic() < deadline, "the restarted worker did not re-claim the job"
            time.sleep(0.05)
        if k % 2 == 0:  # mid-episode: once this life has an episode running, within half a second
            while not _snapshot(db, job_id)[1] and proc.poll() is None:
                assert time.monotonic() < deadline + 60, "no episode started"
                time.sleep(0.02)
            time.sleep(rng.uniform(0.0, 0.5))
        else:  # anywhere: loading, rolling out, training, evaluating, writing
            time.sleep(rng.uniform(0.3, anywhere_s))
        if proc.poll() is not None:  # the job finished before this kill
            assert proc.returncode == 0, proc.stderr.read().decode()[-3000:]
            break
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stderr.close()
        done_kills += 1
        finished, running = _snapshot(db, job_id)
        for uid, vals in committed.items():  # nothing committed is lost or rewritten
            assert finished.get(uid) == vals, f"episode {uid} changed or vanished after kill {done_kills}"
        committed.update(finished)
        running_at_kill.append(running)
    # the last life runs the job to its end
    res = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, timeout=300)
    assert res.returncode == 0, res.stderr.decode()[-3000:]
    job = _job(db, job_id)
    assert job.status == "done", job.error
    assert done_kills >= min(kills, 2), f"only {done_kills} kills landed before the job finished"
    assert any(running_at_kill), "no kill landed while an episode was running"

    finished, running = _snapshot(db, job_id)
    assert not running
    for uid, vals in committed.items():
        assert finished.get(uid) == vals, f"episode {uid} changed or vanished"
    # every episode running at a kill was marked aborted at the next start
    with db.read() as s:
        aborted_by_restart = set()
        for a in repo.audit_log(s, action="abort_episodes", limit=10_000):
            if "restarted" in (a.details or {}).get("reason", ""):
                aborted_by_restart.update(a.details["ids"])
    for ids in running_at_kill:
        assert ids <= aborted_by_restart
    # no duplicates: each completed iteration holds exactly the episodes its learner used
    from core.learning.checkpoint import read_checkpoint

    run_dir = tmp_path / "data" / "runs" / f"practice-job{job_id}"
    iters = sorted(int(p.stem.split("_")[1]) for p in run_dir.glob("iter_*.pt"))
    total = 0
    for it in iters:
        used = read_checkpoint(run_dir / f"iter_{it:04d}.pt")["meta"]["stats"]["episodes"]
        got = sum(uid.startswith(f"job{job_id}-it{it:04d}-") for uid in finished)
        assert got == used, f"iteration {it}: {got} episode rows for {used} episodes used"
        total += used
    assert len(finished) == total
    with db.read() as s:
        paths = s.scalars(select(Checkpoint.path).where(Checkpoint.stage == "si")).all()
    assert sorted(paths) == sorted(str(run_dir / f"iter_{it:04d}.pt") for it in iters)  # one row each
    print(f"{done_kills} kills, {len(iters)} iterations, {total} episodes, "
          f"{sum(len(r) for r in running_at_kill)} running episodes aborted, {time.monotonic() - t0:.0f} s")
    return done_kills


def test_killed_worker_loses_and_duplicates_nothing(stage1, tmp_path):
    # The second kill lands 0.3-3 s into its life: with up to 6 s (seed 1: 5.1 s) a fast run
    # had finished the 6-episode job first (CI, 2026-11-25).
    kill_test(stage1, tmp_path, kills=2, seed=1, max_episodes=8, anywhere_s=3.0)


@pytest.mark.slow
def test_killed_worker_12_times_loses_and_duplicates_nothing(stage1, tmp_path):
    assert kill_test(stage1, tmp_path, kills=12, seed=7, max_episodes=40) >= 10
