"""Role enforcement behind the buttons: a disabled button is only the first line; the
actions themselves refuse (ui.app_state.act, and storage's actor checks underneath)."""
from __future__ import annotations

from pathlib import Path

import pytest

from storage import init_db, repo
from storage.models import Episode, User
from ui import actions
from ui.app_state import act


@pytest.fixture
def db(seeded):
    return init_db(seeded.url)


def _user(db, seeded, role) -> User:
    with db.read() as s:
        return s.get(User, seeded.user_ids[role])


def test_reviewer_cannot_start_a_session(db, seeded, tmp_path):
    reviewer = _user(db, seeded, "reviewer")
    with db.read() as s:
        before = len(repo.list_sessions(s))
    with pytest.raises(repo.PermissionDenied, match="needs role supervisor"):
        with db.write() as s:
            actions.start_practice(s, seeded.task_id, fleet_size=2, actor=reviewer)
    assert act(reviewer, "start_session", actions.start_practice, seeded.task_id, fleet_size=2) is None
    with db.read() as s:
        assert len(repo.list_sessions(s)) == before
        assert not [j for j in repo.list_jobs(s) if j.created_by == "reviewer"]


def test_viewer_cannot_override_or_stop(db, seeded):
    viewer = _user(db, seeded, "viewer")
    robot = seeded.robot_ids[2]
    with pytest.raises(repo.PermissionDenied):
        with db.write() as s:
            actions.override_running(s, robot, True, actor=viewer)
    assert act(viewer, "override", actions.override_running, robot, True) is None
    assert act(viewer, "control_robot", repo.set_robot_status, robot, "stopped") is None
    with db.read() as s:
        assert s.get(Episode, seeded.running_ids[2]).override_success is None
        assert repo.get_robot(s, robot).status == "online"


def test_reviewer_labels_but_viewer_cannot(db, seeded):
    viewer, reviewer = _user(db, seeded, "viewer"), _user(db, seeded, "reviewer")
    eid = seeded.episode_ids[5]
    assert act(viewer, "label", repo.label_episode, eid, True) is None
    assert act(reviewer, "label", repo.label_episode, eid, False) is not None
    with db.read() as s:
        ep = s.get(Episode, eid)
        log = repo.audit_log(s, action="label", limit=5)
    assert ep.label_success is False and ep.label_by == "reviewer"
    assert log[0].username == "reviewer" and log[0].target_id == str(eid)


def test_only_admins_manage_users(db, seeded):
    sup = _user(db, seeded, "supervisor")
    assert act(sup, "manage_users", repo.create_user, "mallory", "password123", "admin") is None
    with db.read() as s:
        assert repo.get_user(s, "mallory") is None


def test_a_disabled_account_loses_its_rights(db, seeded):
    admin = _user(db, seeded, "admin")
    with db.write() as s:
        u = repo.create_user(s, "temp-sup", "password123", "supervisor", actor=admin)
        repo.set_disabled(s, u.id, True, actor=admin)
    with db.read() as s:
        u = repo.get_user(s, "temp-sup")
    assert act(u, "override", actions.override_running, seeded.robot_ids[0], True) is None
