"""First run: the admin, the demo task and the preparation chain, whose job params the
worker accepts (core/worker/runner.py check_params)."""
from __future__ import annotations

import pytest

from storage import init_db, repo
from ui import actions, bootstrap


@pytest.fixture
def fresh(tmp_path):
    return init_db(str(tmp_path / "fresh.sqlite"))


def test_admin_once_generated_or_from_env(fresh):
    with fresh.write() as s:
        pw = bootstrap.ensure_admin(s, None)
        assert pw and len(pw) >= 12
        assert bootstrap.ensure_admin(s, "another-password") is None  # users exist: nothing happens
    with fresh.write() as s:
        assert repo.authenticate(s, "admin", pw).role == "admin"


def test_admin_from_given_password(fresh):
    with fresh.write() as s:
        assert bootstrap.ensure_admin(s, "from-the-env-1") is None
        assert repo.authenticate(s, "admin", "from-the-env-1") is not None


def _finish(db, job_id, result):
    with db.write() as s:
        job = repo.claim_job(s, "test-worker")
        assert job.id == job_id
        repo.finish_job(s, job.id, "test-worker", result=result)


def test_preparation_chain_one_job_at_a_time(fresh, tmp_path):
    from core.worker.params import check_params

    cfg = bootstrap.PrepConfig(demos=10, epochs=1, sft_minutes=1, fleet_size=2)
    with fresh.write() as s:
        task = bootstrap.seed_demo_task(s)
        assert bootstrap.seed_demo_task(s).id == task.id  # idempotent
        assert bootstrap.needs_preparation(s, task.id)
        assert bootstrap.advance_preparation(s, task.id, tmp_path, cfg) is None  # not started
        assert bootstrap.advance_preparation(s, task.id, tmp_path, cfg, start=True) == "enqueued demos"
        assert bootstrap.advance_preparation(s, task.id, tmp_path, cfg) is None  # demos not done yet
        assert not bootstrap.needs_preparation(s, task.id)
        demos = repo.list_jobs(s, kind="demos")[0]
    check_params("demos", demos.params)
    _finish(fresh, demos.id, {"dataset": str(tmp_path / "demos"), "episodes": 10})
    with fresh.write() as s:
        assert bootstrap.advance_preparation(s, task.id, tmp_path, cfg) == "enqueued sft"
        sft = repo.list_jobs(s, kind="sft")[0]
    assert sft.params["demos_job"] == demos.id
    check_params("sft", sft.params)
    _finish(fresh, sft.id, {"checkpoint_id": 7, "promoted": True})
    with fresh.write() as s:
        assert bootstrap.advance_preparation(s, task.id, tmp_path, cfg) == "enqueued practice"
        assert bootstrap.advance_preparation(s, task.id, tmp_path, cfg) is None
        practice = repo.list_jobs(s, kind="practice")[0]
        steps = bootstrap.preparation_status(s, task.id)
    assert practice.session_id is not None and practice.params["checkpoint_id"] == 7
    assert (practice.params["eval_every"], practice.params["eval_episodes"], practice.params["lr"]) == (
        cfg.eval_every, cfg.eval_episodes, cfg.lr)
    check_params("practice", practice.params)
    assert [p["status"] for p in steps] == ["done", "done", "queued"]


def test_ui_practice_params_are_the_workers(seeded):
    from core.worker.params import check_params

    db = init_db(seeded.url)
    with db.read() as s:
        params = actions.practice_params(s, seeded.task_id, 3)
    check_params("practice", params)
    assert params["fleet"] == {"kind": "process", "size": 3}


def test_no_promoted_checkpoint_refuses_with_the_fix(fresh):
    with fresh.write() as s:
        task = bootstrap.seed_demo_task(s)
    with fresh.read() as s:
        with pytest.raises(actions.NoCheckpoint, match="wait for Stage-1 training"):
            actions.practice_params(s, task.id, 2)


def test_extra_practice_params_merge_and_validate(seeded):
    from core.worker.params import check_params

    assert actions.parse_extra("") == {}
    with pytest.raises(ValueError, match="JSON object"):
        actions.parse_extra("[1, 2]")
    with pytest.raises(ValueError, match="JSON object"):
        actions.parse_extra("{check_episodes: 0}")
    db = init_db(seeded.url)
    with db.read() as s:
        sup = repo.get_user(s, "supervisor")
    with db.write() as s:
        ps = actions.start_practice(s, seeded.task_id, fleet_size=3, actor=sup,
                                    extra=actions.parse_extra('{"check_episodes": 0, "fleet": {"kind": "local"}}'))
        job = repo.list_jobs(s, session_id=ps.id)[0]
    assert job.params["fleet"] == {"kind": "local", "size": 3} and job.params["check_episodes"] == 0
    check_params("practice", job.params)
    with db.write() as s:
        repo.stop_session(s, ps.id, actor=sup)


def test_a_remote_robot_task_practises_on_connected_robots(seeded):
    db = init_db(seeded.url)
    with db.write() as s:
        t = repo.create_task(s, "arm-remote", "remote", {"camera": {"height": 64, "width": 64}, "action": {"dim": 2}})
        ck = repo.add_checkpoint(s, "sft", "/x/arm.pt", task_id=t.id)  # never evaluated: no simulator
        params = actions.practice_params(s, t.id, 2)
    assert params["fleet"] == {"kind": "remote", "size": 2} and params["checkpoint_id"] == ck.id
