"""The job queue: atomic claims across processes, heartbeats, cancel, crash recovery."""
from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import update

from storage import repo
from storage.models import Job, utcnow
from tests.storage import procs


def test_claim_order_kinds_and_empty_queue(db):
    with db.write() as s:
        a = repo.enqueue_job(s, "practice", {"n": 1}).id
        b = repo.enqueue_job(s, "eval", priority=5).id
        c = repo.enqueue_job(s, "sft").id
    with db.write() as s:
        assert repo.claim_job(s, "w1").id == b  # priority first
    with db.write() as s:
        assert repo.claim_job(s, "w1", kinds=["sft"]).id == c
    with db.write() as s:
        job = repo.claim_job(s, "w2")
        assert (job.id, job.status, job.claimed_by, job.attempts) == (a, "running", "w2", 1)
        assert job.params == {"n": 1}
    with db.write() as s:
        assert repo.claim_job(s, "w1") is None


def test_two_processes_never_claim_the_same_job(db, db_url):
    n_jobs = 40
    with db.write() as s:
        for i in range(n_jobs):
            repo.enqueue_job(s, "eval", {"i": i})
    ctx = procs.CTX
    start, out = ctx.Event(), ctx.Queue()
    children = [ctx.Process(target=procs.claim_until_empty, args=(db_url, f"w{i}", start, out)) for i in range(2)]
    for p in children:
        p.start()
    start.set()
    results = [out.get(timeout=120) for _ in children]
    for p in children:
        p.join(30)
    claimed = [j for _, got, _ in results for j in got]
    assert [errs for _, _, errs in results] == [[], []]
    assert len(claimed) == len(set(claimed)) == n_jobs  # each job exactly once
    with db.read() as s:
        jobs = repo.list_jobs(s, limit=100)
        assert {j.status for j in jobs} == {"done"} and all(j.attempts == 1 for j in jobs)


def test_heartbeat_progress_finish_and_fail(db):
    with db.write() as s:
        a = repo.enqueue_job(s, "practice").id
        b = repo.enqueue_job(s, "sft").id
    with db.write() as s:
        repo.claim_job(s, "w1")
        repo.claim_job(s, "w1")
    with db.write() as s:
        assert repo.heartbeat(s, a, "w1", progress=0.4, message="iteration 2/5", state={"iteration": 2})
        assert not repo.heartbeat(s, a, "someone-else")  # not theirs
    with db.write() as s:
        assert repo.finish_job(s, a, "w1", result={"checkpoint_id": 3})
        assert repo.fail_job(s, b, "w1", "Traceback ...\nValueError: bad config")
    with db.read() as s:
        ja, jb = repo.get_job(s, a), repo.get_job(s, b)
        assert (ja.status, ja.progress, ja.state, ja.result) == ("done", 1.0, {"iteration": 2}, {"checkpoint_id": 3})
        assert ja.message == "iteration 2/5"
        assert jb.status == "failed" and "ValueError: bad config" in jb.error and jb.finished_at is not None
    with db.write() as s:  # a finished job cannot be touched by a late heartbeat
        assert not repo.heartbeat(s, a, "w1")


def test_fail_with_retry_requeues_until_attempts_run_out(db):
    with db.write() as s:
        jid = repo.enqueue_job(s, "eval", max_attempts=2).id
    for attempt, expect in ((1, "queued"), (2, "failed")):
        with db.write() as s:
            assert repo.claim_job(s, "w").attempts == attempt
            repo.fail_job(s, jid, "w", f"flaky {attempt}", retry=True)
        with db.read() as s:
            assert repo.get_job(s, jid).status == expect


def test_cancel_stops_a_running_job_at_its_next_heartbeat(db):
    with db.write() as s:
        jid = repo.enqueue_job(s, "practice").id
    with db.write() as s:
        repo.claim_job(s, "w1")
    with db.write() as s:
        repo.cancel_job(s, jid, reason="wrong task")
    with db.write() as s:
        assert repo.heartbeat(s, jid, "w1") is False
        assert repo.finish_job(s, jid, "w1") is False
        assert repo.get_job(s, jid).status == "cancelled"
    with db.write() as s, pytest.raises(repo.JobError, match="already cancelled"):
        repo.cancel_job(s, jid)
    with db.write() as s:
        assert repo.requeue_job(s, jid).status == "queued"


def test_stale_running_jobs_are_requeued_and_the_old_worker_is_told(db):
    with db.write() as s:
        stale = repo.enqueue_job(s, "practice").id
        fresh = repo.enqueue_job(s, "practice").id
        doomed = repo.enqueue_job(s, "practice", max_attempts=1).id
    with db.write() as s:
        for _ in range(3):
            repo.claim_job(s, "w-old")
    with db.write() as s:
        old = utcnow() - dt.timedelta(minutes=10)
        s.execute(update(Job).where(Job.id.in_([stale, doomed])).values(heartbeat_at=old))
    with db.write() as s:
        assert sorted(repo.requeue_stale_jobs(s, older_than_s=60)) == sorted([stale, doomed])
    with db.read() as s:
        assert repo.get_job(s, stale).status == "queued"
        assert repo.get_job(s, fresh).status == "running"
        d = repo.get_job(s, doomed)
        assert d.status == "failed" and "gave up after 1 attempts" in d.error
    with db.write() as s:
        assert repo.heartbeat(s, stale, "w-old") is False  # the stalled worker must stop
        job = repo.claim_job(s, "w-new")
        assert (job.id, job.attempts) == (stale, 2)


def test_worker_restart_requeues_its_jobs_and_aborts_its_episodes(db, task_id):
    with db.write() as s:
        jid = repo.enqueue_job(s, "practice").id
        other = repo.enqueue_job(s, "practice").id
    with db.write() as s:
        repo.claim_job(s, "host:0")
        repo.claim_job(s, "host:1")
    with db.write() as s:
        mine = repo.start_episode(s, uid="j1-r0-e0", task_id=task_id, job_id=jid, worker="host:0").id
        theirs = repo.start_episode(s, uid="j2-r0-e0", task_id=task_id, job_id=other, worker="host:1").id
        done = repo.finish_episode(s, uid="j1-r0-e-1", task_id=task_id, worker="host:0").episode.id
    with db.write() as s:
        out = repo.recover_worker(s, "host:0")
    assert out == {"requeued_jobs": [jid], "aborted_episodes": [mine]}
    with db.read() as s:
        assert repo.get_job(s, jid).status == "queued" and repo.get_job(s, other).status == "running"
        assert repo.get_episode(s, mine).status == "aborted"
        assert "restarted" in repo.get_episode(s, mine).abort_reason
        assert repo.get_episode(s, theirs).status == "running"  # another worker's live episode
        assert repo.get_episode(s, done).status == "finished"
