"""Tasks, robots and practice sessions: the controls the worker obeys."""
from __future__ import annotations

import pytest

from storage import repo


def test_tasks(db):
    with db.write() as s:
        t = repo.create_task(s, "loc", "tabletop", {"family": "location"}, instruction_family="location",
                             detector_threshold=3.0, detector_patience=2, calibration={"precision": 0.9},
                             fleet_size=8)
        assert repo.get_or_create_task(s, "loc", "tabletop").id == t.id
    with db.write() as s:
        repo.update_task(s, t.id, detector_threshold=2.5)
        with pytest.raises(ValueError, match="cannot update"):
            repo.update_task(s, t.id, name="renamed")
    with db.read() as s:
        got = repo.get_task(s, "loc")
        assert (got.detector_threshold, got.detector_patience, got.fleet_size) == (2.5, 2, 8)
        assert got.env_config == {"family": "location"} and got.calibration == {"precision": 0.9}
    with pytest.raises(repo.NotFound), db.read() as s:
        repo.get_task(s, "missing")


def test_robots_register_and_status(db, task_id, users):
    with db.write() as s:
        r = repo.register_robot(s, "sim-0", "sim", task_id=task_id, worker="host:0")
        remote = repo.register_robot(s, "arm-1", "remote", spec={"camera": [96, 96, 3], "action_dim": 2})
    assert r.status == "online" and r.last_seen is not None
    with db.write() as s:
        repo.set_robot_status(s, r.id, "stopped", actor=users["supervisor"])
        repo.set_robot_status(s, remote.id, "offline")
    with db.write() as s:  # a reconnect does not undo a supervisor's stop; it does bring back offline ones
        assert repo.register_robot(s, "sim-0").status == "stopped"
        assert repo.register_robot(s, "arm-1", "remote").status == "online"
    with db.read() as s:
        assert [r.name for r in repo.list_robots(s, worker="host:0")] == ["sim-0"]
    with pytest.raises(repo.PermissionDenied), db.write() as s:
        repo.set_robot_status(s, r.id, "online", actor=users["reviewer"])


def test_session_lifecycle_and_control_state(db, task_id, users):
    sup = users["supervisor"]
    with db.write() as s:
        ps = repo.start_session(s, task_id, name="practice 1", params={"robots": 4}, actor=sup)
        robot = repo.register_robot(s, "sim-0", task_id=task_id)
    with db.read() as s:
        c = repo.control_state(s, ps.id, robot.id)
        assert c.run and not c.pause and not c.stop
    with db.write() as s:
        repo.pause_session(s, ps.id, actor=sup)
    with db.read() as s:
        assert repo.control_state(s, ps.id, robot.id).pause
    with db.write() as s:
        repo.resume_session(s, ps.id, actor=sup)
        repo.set_robot_status(s, robot.id, "paused", actor=sup)
    with db.read() as s:
        assert repo.control_state(s, ps.id, robot.id).pause  # one robot paused, session running
        assert repo.control_state(s, ps.id, None).run
    with db.write() as s:
        repo.stop_session(s, ps.id, actor=sup)
    with db.read() as s:
        assert repo.control_state(s, ps.id, robot.id).stop
        assert repo.get_session(s, ps.id).ended_at is not None
        assert [e.action for e in repo.audit_log(s, target_type="session")] == [
            "stop_session", "resume_session", "pause_session", "start_session"]
    with pytest.raises(repo.InvalidTransition, match="start a new session"), db.write() as s:
        repo.resume_session(s, ps.id, actor=sup)
