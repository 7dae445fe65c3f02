"""Users, password hashing, the permission table and the audit log."""
from __future__ import annotations

import datetime as dt
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import select

from storage import auth, repo
from storage.auth import PERMISSIONS, can
from storage.models import LoginThrottle


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


# --- log-in throttle (storage/auth.py docstring has the rule) ---------------------------------

T0 = dt.datetime(2026, 1, 1, 9, 0, tzinfo=dt.timezone.utc)


def _try(db, username, password, client=None, at=0.0):
    """authenticate at T0 + ``at`` s: the user, None, or the LoginThrottled raised (kept
    inside the transaction so that its audit row is committed, as ui.app_state.login does)."""
    with db.write() as s:
        try:
            return auth.authenticate(s, username, password, client, now=T0 + dt.timedelta(seconds=at))
        except auth.LoginThrottled as e:
            return e


def test_failures_grow_the_delay_then_lock_the_name(db, users):
    assert [_try(db, "rev", "wrong-password") for _ in range(3)] == [None] * 3  # free
    at, delays = 0.0, []
    for _ in range(7):  # failures 4..10: each waits out the delay, then fails again
        refused = _try(db, "rev", "rev-password", at=at)  # even the right password must wait
        assert isinstance(refused, auth.LoginThrottled)
        delays.append(refused.retry_after_s)
        at += refused.retry_after_s
        assert _try(db, "rev", "wrong-password", at=at) is None
    assert delays == [1, 2, 4, 8, 16, 30, 30]
    locked = _try(db, "rev", "rev-password", at=at + 899)
    assert isinstance(locked, auth.LoginThrottled) and locked.retry_after_s == 1
    assert "Try again in 1 second." in str(locked)
    assert _try(db, "rev", "rev-password", at=at).retry_after_s == 15 * 60
    assert "15 minutes" in str(_try(db, "rev", "rev-password", at=at))
    assert _try(db, "rev", "rev-password", at=at + 900).username == "rev"
    with db.read() as s:
        assert s.get(LoginThrottle, "user:rev") is None  # a success clears the name
        rows = repo.audit_log(s, action="login_throttled", limit=100)
    assert len(rows) == 10 and {r.details["key"] for r in rows} == {"user"}
    assert all("password" not in str(r.details) for r in rows)


def test_the_count_lapses_15_minutes_after_the_last_failure(db, users):
    for _ in range(3):
        _try(db, "rev", "wrong-password")
    assert isinstance(_try(db, "rev", "wrong-password", at=0.5), auth.LoginThrottled)
    assert _try(db, "rev", "wrong-password", at=900) is None  # a fresh count: 1 failure
    assert _try(db, "rev", "wrong-password", at=900) is None
    assert _try(db, "rev", "rev-password", at=900).username == "rev"


def test_the_client_is_throttled_across_names_and_a_success_does_not_clear_it(db, users):
    rule = auth.CLIENT_THROTTLE
    for i in range(rule.free_failures):  # a fresh name each time: no user key ever waits
        assert _try(db, f"guess{i}", "wrong-password", client="10.0.0.9") is None
    refused = _try(db, "view", "view-password", client="10.0.0.9")
    assert isinstance(refused, auth.LoginThrottled) and refused.retry_after_s == 1
    assert _try(db, "view", "view-password", client="10.0.0.8").username == "view"  # another address
    assert _try(db, "view", "view-password", client="10.0.0.9", at=1).username == "view"
    assert isinstance(_try(db, "guess-x", "wrong-password", client="10.0.0.9", at=1), type(None))
    assert isinstance(_try(db, "guess-y", "wrong-password", client="10.0.0.9", at=1), auth.LoginThrottled)
    with db.read() as s:
        assert s.get(LoginThrottle, "client:10.0.0.9").failures == rule.free_failures + 1
        last = repo.audit_log(s, action="login_throttled", limit=1)[0]
    assert last.details == {"key": "client", "retry_after_s": 2.0, "client": "10.0.0.9"}


def test_the_client_locks_at_its_own_limit(db, users):
    rule, at = auth.CLIENT_THROTTLE, 0.0
    for i in range(rule.lock_at):
        out = _try(db, f"n{i}", "wrong-password", client="lab", at=at)
        if isinstance(out, auth.LoginThrottled):
            at += out.retry_after_s
            out = _try(db, f"n{i}", "wrong-password", client="lab", at=at)
        assert out is None
    assert _try(db, "adm", "adm-password", client="lab", at=at).retry_after_s == rule.lock_s
    assert _try(db, "adm", "adm-password", client="lab", at=at + rule.lock_s).username == "adm"


def test_parallel_guesses_are_counted_one_by_one(db, users):
    """Eight simultaneous wrong passwords at one instant: only the free three are judged,
    on SQLite (one writer at a time) and PostgreSQL (an advisory lock per key)."""
    with ThreadPoolExecutor(8) as pool:
        out = list(pool.map(lambda _: _try(db, "sup", "wrong-password", client="1.1.1.1"), range(8)))
    assert sum(o is None for o in out) == 3
    assert sum(isinstance(o, auth.LoginThrottled) for o in out) == 5
    with db.read() as s:
        assert s.get(LoginThrottle, "user:sup").failures == 3
        assert s.get(LoginThrottle, "client:1.1.1.1").failures == 3


def test_long_names_are_keyed_by_their_hash_and_lapsed_rows_pruned(db, users):
    long_name = "x" * 500
    assert _try(db, long_name, "wrong-password", client="y" * 500) is None
    with db.read() as s:
        keys = sorted(r.key for r in s.scalars(select(LoginThrottle)))
    assert [k.split(":")[:2] for k in keys] == [["client", "sha256"], ["user", "sha256"]]
    assert all(len(k) <= 200 for k in keys)
    with db.read() as s:  # the audit row fits audit_log.target_id (PostgreSQL refused it)
        assert len(repo.audit_log(s, action="login_failed", limit=1)[0].target_id) == 64
    with db.write() as s:
        assert auth.prune_login_throttle(s, now=T0 + dt.timedelta(seconds=899)) == 0
        assert auth.prune_login_throttle(s, now=T0 + dt.timedelta(seconds=901)) == 2
