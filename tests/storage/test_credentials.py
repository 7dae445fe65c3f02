"""The websocket credentials (storage/credentials.py): the worker secret, viewer tickets and
robot tokens, on SQLite and PostgreSQL."""
from __future__ import annotations

import os
import stat
from concurrent.futures import ThreadPoolExecutor

import pytest

from storage import repo
from storage.credentials import (SECRET_ENV, SECRET_FILE_ENV, TICKET_TTL_S, CredentialError, check_robot_name,
                                 check_robot_token, load_worker_secret, mint_viewer_ticket, revoked_among,
                                 verify_viewer_ticket)
from storage.models import RobotToken

SECRET = "s" * 48


@pytest.fixture(autouse=True)
def _no_secret_env(monkeypatch):
    monkeypatch.delenv(SECRET_ENV, raising=False)
    monkeypatch.delenv(SECRET_FILE_ENV, raising=False)


def test_the_worker_secret_is_made_once_0600_and_shared_by_concurrent_starters(tmp_path):
    with ThreadPoolExecutor(8) as ex:
        got = set(ex.map(lambda _: load_worker_secret(tmp_path), range(8)))
    assert len(got) == 1 and len(got.pop()) >= 48
    assert stat.S_IMODE(os.stat(tmp_path / "worker.secret").st_mode) == 0o600


def test_the_worker_secret_from_the_environment_or_a_named_file(tmp_path, monkeypatch):
    monkeypatch.setenv(SECRET_ENV, "e" * 40)
    assert load_worker_secret(tmp_path) == "e" * 40
    monkeypatch.setenv(SECRET_ENV, "short")
    with pytest.raises(CredentialError, match="at least 32"):
        load_worker_secret(tmp_path)
    monkeypatch.delenv(SECRET_ENV)
    monkeypatch.setenv(SECRET_FILE_ENV, str(tmp_path / "missing"))
    with pytest.raises(CredentialError, match="no worker secret at .*missing"):
        load_worker_secret(tmp_path)
    assert not (tmp_path / "worker.secret").exists()  # a named file is never made up


def test_a_viewer_ticket_is_read_only_short_lived_and_signed():
    t = mint_viewer_ticket(SECRET, "alice", "sess-1", now=1000.0)
    claims = verify_viewer_ticket(SECRET, t, now=1000.0 + TICKET_TTL_S - 1)
    assert (claims.user, claims.session) == ("alice", "sess-1")
    with pytest.raises(CredentialError, match="expired 1 min ago"):
        verify_viewer_ticket(SECRET, t, now=1000.0 + TICKET_TTL_S + 60)
    with pytest.raises(CredentialError, match="signature"):
        verify_viewer_ticket("x" * 48, t, now=1000.0)
    version, payload, sig = t.split(".")
    forged = mint_viewer_ticket(SECRET, "mallory", "s", now=1000.0).split(".")[1]
    with pytest.raises(CredentialError, match="signature"):  # claims swapped under a valid signature
        verify_viewer_ticket(SECRET, f"{version}.{forged}.{sig}", now=1000.0)
    for junk in (None, 5, "", "a.b", "a.b.c.d", "v1..", "x" * 5000, SECRET):
        with pytest.raises(CredentialError):
            verify_viewer_ticket(SECRET, junk, now=1000.0)


@pytest.mark.parametrize("name", ["arm-1", "lab2:ur5", "A", "x" * 64, "r.b_2"])
def test_robot_names_in_the_documented_set_pass(name):
    assert check_robot_name(name) == name


@pytest.mark.parametrize("name", ["", "-arm", "x" * 65, "arm 1", "<img src=x onerror=alert(1)>", "__CFG__x",
                                  "arm/1", "ärm", "arm\n", None, 7, ["a"]])
def test_other_robot_names_are_refused_with_the_rule(name):
    with pytest.raises(CredentialError, match="letters A-Z a-z, digits"):
        check_robot_name(name)


def test_robot_tokens_are_shown_once_stored_hashed_bound_and_revocable(db, users):
    with db.write() as s:
        fleet, fleet_token = repo.create_robot_token(s, "lab fleet", actor=users["supervisor"])
        one, one_token = repo.create_robot_token(s, "arm-1 PC", robot_name="arm-1", actor=users["supervisor"])
        ids = fleet.id, one.id
    with db.read() as s:
        rows = s.query(RobotToken).all()
        assert all(fleet_token not in (r.token_sha256, r.prefix, r.label) for r in rows)
        assert {r.created_by for r in rows} == {"sup"}
    with db.write() as s:
        assert check_robot_token(s, fleet_token, "any-name") == ids[0]
        assert check_robot_token(s, one_token, "arm-1") == ids[1]
        with pytest.raises(CredentialError, match="for robot 'arm-1' only"):
            check_robot_token(s, one_token, "arm-2")
        with pytest.raises(CredentialError, match="unknown robot token"):
            check_robot_token(s, fleet_token[:-2] + "xx", "arm-1")
        with pytest.raises(CredentialError, match="a robot token is required"):
            check_robot_token(s, SECRET, "arm-1")  # the worker secret is no robot token
    with db.write() as s:
        repo.revoke_robot_token(s, ids[0], actor=users["supervisor"])
    with db.write() as s:
        with pytest.raises(CredentialError, match="was revoked"):
            check_robot_token(s, fleet_token, "arm-1")
        assert revoked_among(s, [ids[0], ids[1], 999]) == {ids[0], 999}
        assert s.get(RobotToken, ids[1]).last_used_at is not None
    with db.read() as s:
        actions = [e.action for e in repo.audit_log(s, limit=5)]
    assert actions[:3] == ["revoke_robot_token", "create_robot_token", "create_robot_token"]


def test_only_a_supervisor_makes_or_revokes_robot_tokens(db, users):
    for role in ("viewer", "reviewer"):
        with pytest.raises(repo.PermissionDenied, match="needs role supervisor"), db.write() as s:
            repo.create_robot_token(s, "x", actor=users[role])
    with db.write() as s:
        row, _ = repo.create_robot_token(s, "x", actor=users["supervisor"])
        rid = row.id
    with pytest.raises(repo.PermissionDenied), db.write() as s:
        repo.revoke_robot_token(s, rid, actor=users["viewer"])
    with pytest.raises(CredentialError, match="label of 1-100"), db.write() as s:
        repo.create_robot_token(s, "  ", actor=users["supervisor"])
    with pytest.raises(CredentialError, match="not allowed"), db.write() as s:
        repo.create_robot_token(s, "x", robot_name="<b>", actor=users["supervisor"])
