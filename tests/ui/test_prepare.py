"""Preparing any task (ui/prepare.py): what the task lacks, the next step, and the jobs queued
for it, on a real SQLite database."""
from __future__ import annotations

import datetime as dt

import pytest

from storage import init_db, repo
from storage.models import utcnow
from ui import prepare


@pytest.fixture
def db(tmp_path):
    return init_db(str(tmp_path / "dojo.sqlite"))


@pytest.fixture
def task_and_sup(db):
    with db.write() as s:
        t = repo.create_task(s, "drawer", "metaworld", {"task": "drawer-close-v3"})
        sup = repo.create_user(s, "sup", "sup-password", "supervisor")
        return t.id, sup.id


def _user(s, uid):
    from storage.models import User

    return s.get(User, uid)


def test_a_fresh_task_asks_for_demonstrations_then_each_step_in_turn(db, task_and_sup):
    tid, uid = task_and_sup
    with db.read() as s:
        r = prepare.readiness(s, tid)
    assert r.next_step == "demonstrations" and "no demonstrations yet" in r.missing
    with db.write() as s:
        job = prepare.enqueue_demos(s, tid, 20, actor=_user(s, uid))
        assert job.params == {"n": 20, "workers": 1} and job.task_id == tid  # the task's backend and config
        job.status, job.result = "done", {"dataset": "/data/demos/job1", "episodes": 20}
        jid = job.id
    with db.read() as s:
        r = prepare.readiness(s, tid)
    assert r.next_step == "Stage 1" and r.demos_jobs == [{"id": jid, "dataset": "/data/demos/job1", "episodes": 20}]
    with db.write() as s:
        sft = prepare.enqueue_sft(s, tid, jid, epochs=3, max_minutes=5, policy={"d_model": 32}, actor=_user(s, uid))
        assert sft.params == {"demos_job": jid, "epochs": 3, "max_minutes": 5.0, "policy": {"d_model": 32}}
        repo.add_checkpoint(s, "sft", "/x/best_policy.pt", task_id=tid)
    with db.read() as s:
        r = prepare.readiness(s, tid)
    assert r.next_step == "evaluation" and [st.done for st in r.steps] == [True, True, False, False]
    with db.write() as s:
        ck = repo.list_checkpoints(s, task_id=tid)[0]
        ck.eval_success = 0.4
    with db.read() as s:
        r = prepare.readiness(s, tid)
    assert r.next_step == "practice" and r.missing.startswith("ready")
    assert "40%" in r.steps[2].detail


def test_bad_requests_are_refused(db, task_and_sup):
    tid, uid = task_and_sup
    with db.write() as s:
        other = repo.create_task(s, "other", "tabletop", {"family": "block2block"})
        j = repo.enqueue_job(s, "demos", {"n": 1}, task_id=other.id)
        j.status = "done"
        jid, oid = j.id, other.id
    with pytest.raises(ValueError, match="not a finished demonstrations job of this task"), db.write() as s:
        prepare.enqueue_sft(s, tid, jid, epochs=3, max_minutes=5, actor=_user(s, uid))
    with pytest.raises(ValueError, match="1..100000"), db.write() as s:
        prepare.enqueue_demos(s, tid, 0, actor=_user(s, uid))
    with pytest.raises(repo.PermissionDenied), db.write() as s:
        viewer = repo.create_user(s, "v", "viewer-password", "viewer")
        prepare.enqueue_demos(s, oid, 5, actor=viewer)


def test_time_left_is_extrapolated_from_progress():
    now = utcnow()
    job = {"status": "running", "progress": 0.25, "started": now - dt.timedelta(seconds=60)}
    assert prepare.time_left_s(job, now) == pytest.approx(180)
    assert prepare.time_left_s({**job, "progress": 0.0}, now) is None
    assert prepare.time_left_s({**job, "status": "queued"}, now) is None


def test_a_remote_task_prepares_from_imported_demonstrations(db, task_and_sup):
    """No scripted expert for real robots: generating is refused with the way out, a dataset
    imported for the task (its audit entry) counts and trains Stage 1."""
    _tid, uid = task_and_sup
    with db.write() as s:
        t = repo.create_task(s, "arm", "remote", {"camera": {"height": 64, "width": 64}, "action": {"dim": 2}})
        tid = t.id
        repo.audit(s, "sup", "import_dataset", ("dataset", "arm-demos"),
                   {"file": "arm.zip", "episodes": 12, "task_id": tid, "path": "/data/datasets/arm-demos"})
    with db.read() as s:
        r = prepare.readiness(s, tid)
    assert not r.can_generate and r.imported == [{"path": "/data/datasets/arm-demos", "episodes": 12,
                                                  "file": "arm.zip"}]
    assert r.next_step == "Stage 1"
    with pytest.raises(ValueError, match="no scripted expert"), db.write() as s:
        prepare.enqueue_demos(s, tid, 10, actor=_user(s, uid))
    with db.write() as s:
        job = prepare.enqueue_sft(s, tid, data="/data/datasets/arm-demos", epochs=2, max_minutes=3, actor=_user(s, uid))
        assert job.params["data"] == "/data/datasets/arm-demos" and "demos_job" not in job.params
        assert job.params["eval_episodes"] == 0  # nothing to evaluate in but the robots
    with pytest.raises(ValueError, match="not a dataset imported for this task"), db.write() as s:
        prepare.enqueue_sft(s, tid, data="/etc", epochs=2, max_minutes=3, actor=_user(s, uid))
