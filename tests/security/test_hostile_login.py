"""Hostile log-in (security issue, item 6): "20 wrong passwords in 5.8 s were all answered and
the next right one worked; unknown names skip the password hash, so response time tells
which names exist". Replayed against storage.auth.authenticate with an injected clock (no
sleeping through delays), and once through the log-in page.
"""
from __future__ import annotations

import datetime as dt
import shutil
import sys
from pathlib import Path

import pytest

from storage import auth, init_db, repo

ROOT = Path(__file__).resolve().parents[2]
T0 = dt.datetime(2026, 1, 1, 9, 0, tzinfo=dt.timezone.utc)
PASSWORD = "right-password-1"


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    """Migrated once, with users alice (enabled) and bob (disabled); each test gets a copy."""
    path = tmp_path_factory.mktemp("hostile") / "dojo.sqlite"
    db = init_db(path)
    with db.write() as s:
        repo.create_user(s, "alice", PASSWORD, "admin")
        bob = repo.create_user(s, "bob", PASSWORD, "viewer")
        bob.disabled = True
    db.dispose()
    return path


@pytest.fixture
def db(template, tmp_path):
    path = tmp_path / "dojo.sqlite"
    shutil.copyfile(template, path)
    database = init_db(path)
    yield database
    database.dispose()


def attempt(db, username, password, *, at=0.0, client="203.0.113.7"):
    """One log-in at T0 + ``at`` s: the user, None (wrong), or the LoginThrottled raised."""
    with db.write() as s:
        try:
            user = auth.authenticate(s, username, password, client, now=T0 + dt.timedelta(seconds=at))
            return None if user is None else user.username
        except auth.LoginThrottled as e:
            return e


def test_twenty_wrong_passwords_in_5_8_s_are_not_all_answered(db):
    outcomes = [attempt(db, "alice", f"guess-{i}", at=i * 5.8 / 20) for i in range(20)]
    judged = [i for i, o in enumerate(outcomes) if o is None]
    refused = [o for o in outcomes if isinstance(o, auth.LoginThrottled)]
    assert judged[:3] == [0, 1, 2] and 3 not in judged  # the 4th onwards waits
    assert len(judged) == 5 and len(refused) == 15      # 1 s, then 2 s between judged guesses
    assert max(r.retry_after_s for r in refused) > 1
    # The right password right after the burst is refused too.
    assert isinstance(attempt(db, "alice", PASSWORD, at=5.8), auth.LoginThrottled)


def test_an_attacker_who_waits_gets_growing_delays_then_a_lock_out(db):
    at, waits = 0.0, []
    for i in range(20):
        out = attempt(db, "alice", f"guess-{i}", at=at)
        if isinstance(out, auth.LoginThrottled):
            waits.append(out.retry_after_s)
            if out.retry_after_s >= auth.USER_THROTTLE.lock_s:
                break
            at += out.retry_after_s
            assert attempt(db, "alice", f"guess-{i}", at=at) is None
    assert waits == [1, 2, 4, 8, 16, 30, 30, 15 * 60]
    during = attempt(db, "alice", PASSWORD, at=at + 14 * 60)  # the right password, locked out
    assert isinstance(during, auth.LoginThrottled) and during.retry_after_s == 60
    assert attempt(db, "alice", PASSWORD, at=at + 15 * 60) == "alice"
    with db.read() as s:
        rows = repo.audit_log(s, action="login_throttled", limit=100)
    assert len(rows) == 9 and all(r.details["key"] == "user" for r in rows)
    assert all(PASSWORD not in str(r.details) and "guess" not in str(r.details) for r in rows)


def test_one_address_is_throttled_across_user_names(db):
    rule = auth.CLIENT_THROTTLE
    for i in range(rule.free_failures):
        assert attempt(db, f"user{i}", "x-password", client="198.51.100.1") is None
    refused = attempt(db, "alice", PASSWORD, client="198.51.100.1")
    assert isinstance(refused, auth.LoginThrottled)
    with db.read() as s:
        assert repo.audit_log(s, action="login_throttled", limit=1)[0].details["key"] == "client"
    assert attempt(db, "alice", PASSWORD, client="198.51.100.2") == "alice"


class CountingHasher:
    """Wraps the PasswordHasher (it has __slots__, so its methods cannot be patched)."""

    def __init__(self, real):
        self.real, self.calls = real, {"verify": 0, "hash": 0}

    def verify(self, *a, **k):
        self.calls["verify"] += 1
        return self.real.verify(*a, **k)

    def hash(self, *a, **k):
        self.calls["hash"] += 1
        return self.real.hash(*a, **k)

    def check_needs_rehash(self, *a, **k):
        return self.real.check_needs_rehash(*a, **k)


@pytest.fixture
def argon2_calls(monkeypatch):
    """Counts argon2 verifications and hashes. The dummy hash is made beforehand: that
    happens once per process, on the first attempt that needs it."""
    auth._dummy_hash()
    counting = CountingHasher(auth._hasher)
    monkeypatch.setattr(auth, "_hasher", counting)
    return counting.calls


@pytest.mark.parametrize("name", ["alice", "bob", "nobody"])
def test_every_judged_attempt_costs_one_argon2_verification(db, argon2_calls, name):
    for i in range(3):
        assert attempt(db, name, f"wrong-{i}", client=None) is None
    assert argon2_calls == {"verify": 3, "hash": 0}
    assert isinstance(attempt(db, name, "wrong-3", client=None), auth.LoginThrottled)
    assert argon2_calls == {"verify": 3, "hash": 0}  # refused: the password is not looked at


def test_a_throttled_answer_does_not_tell_whether_the_name_exists(db):
    answers = {}
    for name in ("alice", "bob", "nobody"):
        outs = [attempt(db, name, "wrong-password", at=0.25 * i) for i in range(6)]
        assert outs[:3] == [None] * 3
        answers[name] = [(type(o), str(o), o.retry_after_s) for o in outs[3:]]
    assert answers["alice"] == answers["bob"] == answers["nobody"]
    assert answers["alice"][0][1] == "Too many failed log-in attempts. Try again in 1 second."


def test_login_page_shows_the_throttle_message(template, tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    path = tmp_path / "ui.sqlite"
    shutil.copyfile(template, path)
    # AppTest leaves the page in sys.modules["__main__"]; put the real one back afterwards.
    monkeypatch.setitem(sys.modules, "__main__", sys.modules["__main__"])
    monkeypatch.setenv("DOJO_DB", f"sqlite:///{path}")
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.setenv("DOJO_DATA", str(tmp_path / "data"))
    monkeypatch.setattr(auth, "clock", lambda: T0)  # AppTest runs the page in this process
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=30).run()
    errors = []
    for name in ("nobody", "alice", "alice", "alice", "alice"):  # unknown, then wrong passwords
        at.text_input[0].input(name)
        at.text_input[1].input("wrong-password")
        at.button[0].click().run()
        assert not at.exception, [e.value for e in at.exception]
        errors.append([e.value for e in at.error])
    wrong = ["Wrong username or password, or the account is disabled."]
    assert errors[:4] == [wrong] * 4  # the same answer for the unknown name
    assert errors[4] == ["Too many failed log-in attempts. Try again in 1 second."]
    at.text_input[1].input(PASSWORD)
    at.button[0].click().run()
    assert [e.value for e in at.error] == errors[4]
    assert [t.value for t in at.title] == ["Dojo"]  # still the log-in page
    with init_db(path).read() as s:
        throttled = repo.audit_log(s, action="login_throttled", limit=5)
    assert throttled and throttled[0].details["client"] == "local"
