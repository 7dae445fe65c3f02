"""Users, password hashing, the permission table and the audit log."""
from __future__ import annotations

import pytest

from storage import repo
from storage.auth import PERMISSIONS, can


def test_passwords_are_hashed_and_checked(db, users):
    with db.read() as s:
        u = repo.get_user(s, "rev")
        assert u.password_hash.startswith("$argon2id$") and "rev-password" not in u.password_hash
    with db.write() as s:
        assert repo.authenticate(s, "rev", "rev-password").username == "rev"
        assert repo.authenticate(s, "rev", "wrong-password") is None
        assert repo.authenticate(s, "nobody", "whatever1") is None
    with db.read() as s:
        assert repo.get_user(s, "rev").last_login_at is not None
        assert [e.action for e in repo.audit_log(s, limit=3)] == ["login_failed", "login_failed", "login"]
    with pytest.raises(repo.AuthError, match="8 characters"), db.write() as s:
        repo.create_user(s, "x", "short", "viewer")
    with pytest.raises(repo.AuthError, match="already exists"), db.write() as s:
        repo.create_user(s, "rev", "another-password", "viewer")


def test_permission_table_is_ordered_by_role():
    expect = {
        "viewer": {"read"},
        "reviewer": {"read", "label", "compute_quality"},
        "supervisor": {"read", "label", "compute_quality", "start_session", "pause_session", "resume_session",
                       "stop_session", "control_robot", "override", "enqueue_job", "cancel_job", "promote",
                       "rollback", "edit_task"},
        "admin": set(PERMISSIONS),
    }
    for role, allowed in expect.items():
        assert {a for a in PERMISSIONS if can(role, a)} == allowed, role
    with pytest.raises(repo.AuthError, match="unknown action"):
        can("admin", "launch_rockets")


def test_require_role_names_the_needed_role(users):
    repo.require_role(users["supervisor"], "stop_session")
    with pytest.raises(repo.PermissionDenied, match="needs role supervisor"):
        repo.require_role(users["reviewer"], "stop_session")
    with pytest.raises(repo.PermissionDenied):
        repo.require_role(None, "read")


def test_repository_functions_enforce_roles(db, task_id, users):
    with pytest.raises(repo.PermissionDenied), db.write() as s:
        repo.start_session(s, task_id, actor=users["viewer"])
    with pytest.raises(repo.PermissionDenied), db.write() as s:
        repo.enqueue_job(s, "sft", actor=users["reviewer"])
    with pytest.raises(repo.PermissionDenied), db.write() as s:
        repo.create_user(s, "eve", "eve-password", "admin", actor=users["supervisor"])
    with db.write() as s:
        sid = repo.start_session(s, task_id, actor=users["supervisor"]).id
        repo.create_user(s, "new", "new-password", "viewer", actor=users["admin"])
    with db.read() as s:
        assert repo.get_session(s, sid).created_by == "sup"
        assert repo.audit_log(s, action="create_user")[0].username == "adm"


def test_role_changes_disable_and_last_admin(db, users):
    with db.write() as s:
        repo.set_role(s, users["viewer"].id, "reviewer", actor=users["admin"])
    with db.read() as s:
        assert repo.get_user(s, "view").role == "reviewer"
        assert repo.audit_log(s, action="set_role")[0].details == {"from": "viewer", "to": "reviewer"}
    with pytest.raises(repo.AuthError, match="last enabled admin"), db.write() as s:
        repo.set_role(s, users["admin"].id, "viewer", actor=users["admin"])
    with db.write() as s:
        repo.set_disabled(s, users["supervisor"].id, True, actor=users["admin"])
    with db.write() as s:
        assert repo.authenticate(s, "sup", "sup-password") is None
        sup = repo.get_user(s, "sup")
        assert not can(sup, "read")
    with db.write() as s:  # everyone may change their own password, not someone else's
        repo.set_password(s, users["reviewer"].id, "brand-new-pass", actor=users["reviewer"])
        with pytest.raises(repo.PermissionDenied):
            repo.set_password(s, users["admin"].id, "hijacked-pass", actor=users["reviewer"])
    with db.write() as s:
        assert repo.authenticate(s, "rev", "brand-new-pass") is not None


def test_audit_log_filters_and_paging(db, users):
    with db.write() as s:
        for i in range(5):
            repo.audit(s, users["admin"], "note", ("thing", i), {"i": i})
    with db.read() as s:
        page1 = repo.audit_log(s, action="note", limit=3)
        assert [e.details["i"] for e in page1] == [4, 3, 2]
        page2 = repo.audit_log(s, action="note", limit=3, before_id=page1[-1].id)
        assert [e.details["i"] for e in page2] == [1, 0]
        assert [e.target_id for e in repo.audit_log(s, target_type="thing", target_id=3)] == ["3"]
        assert all(e.at.tzinfo is not None for e in page1)
