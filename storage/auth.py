"""Users, roles, permissions and the audit log.

Roles are ordered: viewer < reviewer < supervisor < admin, each able to do everything the
ones before it can. ``PERMISSIONS`` maps an action to the least role allowed to do it; the
UI calls ``require_role(user, action)`` before acting (and repository functions that take
an ``actor`` call it for you). ``actor=None`` means the system itself (the worker, the CLI):
it is recorded as "system" and not checked.

Log-in throttle (``authenticate``; the numbers are ``USER_THROTTLE`` / ``CLIENT_THROTTLE``).
Failed log-ins are counted per key, "user:<name>" and "client:<address>", in the
login_throttle table, so every UI process (and a restarted one) sees the same counts:

* the first 3 failures of a user name are free; after failure n >= 3 the next attempt is
  refused, without looking at the password, until ``not_before`` = that failure +
  min(2 ** (n - 3), 30) s (1, 2, 4, 8, 16, 30, 30 s);
* at 10 failures the name is locked for 15 minutes;
* a key's count starts again 15 minutes after its last failure (so when a lock-out ends);
* per client the rule is looser (10 free, locked at 30) because a lab shares one address,
  and on localhost or behind a proxy every user shares "client:local" / the proxy's address;
* a successful log-in clears the user key but not the client key: otherwise anyone with one
  working account could log in between guesses to reset their address and keep guessing
  other people's passwords from it. The client count still lapses 15 minutes after its
  last failure.

A refused attempt raises ``LoginThrottled(retry_after_s)`` and is audited
("login_throttled", with the key kind and the wait). Unknown and disabled names are counted
and throttled exactly like real ones, and every judged attempt runs argon2 once (against a
fixed dummy hash when there is no usable account), so neither the answer, the message nor
the time tells which names exist.

Concurrency: on SQLite write transactions are serialised (BEGIN IMMEDIATE); on PostgreSQL
each key is held with a transaction-scoped advisory lock from the check to the commit, so
parallel guesses for one name or address queue instead of all reading the same count. If a
caller does not go through ``authenticate`` (no lock), the upsert means the last write wins:
two simultaneous failures may count as one, never as an error.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import math
import secrets
import threading
from dataclasses import dataclass
from typing import Any, Callable, Optional, Union

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy import delete, select, text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from storage.models import ROLES, AuditEntry, LoginThrottle, User, utcnow

# action -> least role allowed
PERMISSIONS: dict[str, str] = {
    "read": "viewer",
    "label": "reviewer",
    "start_session": "supervisor",
    "pause_session": "supervisor",
    "resume_session": "supervisor",
    "stop_session": "supervisor",
    "control_robot": "supervisor",  # pause/stop/resume one robot, register robots
    "override": "supervisor",
    "enqueue_job": "supervisor",
    "cancel_job": "supervisor",
    "promote": "supervisor",
    "rollback": "supervisor",
    "edit_task": "supervisor",
    "compute_quality": "reviewer",
    "manage_users": "admin",
    "view_audit": "admin",
}

SYSTEM = "system"
Actor = Optional[User]
# Cheaper than argon2's default (64 MiB, t=3) so that log-in stays fast on a 2-core box,
# still far above OWASP's minimum for argon2id (19 MiB, t=2).
_hasher = PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1)


@dataclass(frozen=True)
class ThrottleRule:
    free_failures: int     # failures allowed before any delay
    max_delay_s: float     # the growing delay 2 ** (failures - free_failures) s is capped here
    lock_at: int           # this many failures lock the key ...
    lock_s: float          # ... for this long
    reset_after_s: float   # the count starts again this long after the last failure (a lock
    #                        lasting longer would end here too: keep lock_s <= reset_after_s)


USER_THROTTLE = ThrottleRule(free_failures=3, max_delay_s=30, lock_at=10, lock_s=15 * 60, reset_after_s=15 * 60)
# A lab shares one address (and localhost / a proxy make everyone "local"): looser per client.
CLIENT_THROTTLE = ThrottleRule(free_failures=10, max_delay_s=30, lock_at=30, lock_s=15 * 60, reset_after_s=15 * 60)
THROTTLE_RULES = {"user": USER_THROTTLE, "client": CLIENT_THROTTLE}
_KEY_MAX = 200  # login_throttle.key is String(200); longer names/addresses are keyed by their hash
_AUDIT_ID_MAX = 64  # audit_log.target_id is String(64): a longer typed name is shortened there
_ADVISORY_NAMESPACE = 0x4C4F47  # "LOG": PostgreSQL advisory locks (class id) of this throttle

# Tests replace this (or pass now=) instead of sleeping through a delay.
clock: Callable[[], dt.datetime] = utcnow


class PermissionDenied(PermissionError):
    """The user's role does not allow the action; the message says which role would."""


class AuthError(ValueError):
    pass


class LoginThrottled(AuthError):
    """Too many failed log-ins for this name or from this client: the attempt was refused
    without checking the password. The message is the same whether the name exists.

    Raised after the "login_throttled" audit row was added to the caller's session: catch it
    inside the transaction (``with db.write() as s: try: ...``) to keep that row."""

    def __init__(self, retry_after_s: float):
        self.retry_after_s = retry_after_s
        wait = math.ceil(retry_after_s)
        when = (f"{wait} second{'s' if wait != 1 else ''}" if wait < 120
                else f"{math.ceil(wait / 60)} minutes")
        super().__init__(f"Too many failed log-in attempts. Try again in {when}.")


def role_rank(role: str) -> int:
    try:
        return ROLES.index(role)
    except ValueError:
        raise AuthError(f"unknown role {role!r}; roles are {', '.join(ROLES)}") from None


def can(user: Union[User, str, None], action: str) -> bool:
    """Whether ``user`` (a User or a role name) may do ``action``."""
    if action not in PERMISSIONS:
        raise AuthError(f"unknown action {action!r}; known actions: {', '.join(sorted(PERMISSIONS))}")
    if user is None:
        return False
    if isinstance(user, User):
        if user.disabled:
            return False
        role = user.role
    else:
        role = user
    return role_rank(role) >= role_rank(PERMISSIONS[action])


def require_role(user: Union[User, str, None], action: str) -> None:
    """Raise PermissionDenied unless ``user`` may do ``action``."""
    if not can(user, action):
        who = user.username if isinstance(user, User) else (user or "anonymous")
        role = user.role if isinstance(user, User) else user
        extra = " (account disabled)" if isinstance(user, User) and user.disabled else ""
        raise PermissionDenied(f"{who} (role {role}){extra} may not {action}: it needs role "
                               f"{PERMISSIONS[action]} or higher; an admin can change roles")


def check_actor(actor: Actor, action: str) -> str:
    """For repository functions: enforce the permission for a user, return the name to record."""
    if actor is None:
        return SYSTEM
    require_role(actor, action)
    return actor.username


# --- users ---------------------------------------------------------------------------------

def hash_password(password: str) -> str:
    if not isinstance(password, str) or len(password) < 8:
        raise AuthError("password must be a string of at least 8 characters")
    return _hasher.hash(password)


def create_user(s: Session, username: str, password: str, role: str = "viewer", *,
                actor: Actor = None) -> User:
    """Create a user (argon2id hash). ``actor`` must be an admin unless None (bootstrap/CLI)."""
    by = check_actor(actor, "manage_users")
    role_rank(role)
    username = username.strip()
    if not username:
        raise AuthError("username must not be empty")
    if s.scalar(select(User.id).where(User.username == username)) is not None:
        raise AuthError(f"user {username!r} already exists")
    user = User(username=username, role=role, password_hash=hash_password(password))
    s.add(user)
    s.flush()
    audit(s, actor, "create_user", user, {"role": role}, username=by)
    return user


def get_user(s: Session, username: str) -> Optional[User]:
    return s.scalar(select(User).where(User.username == username))


def list_users(s: Session) -> list[User]:
    return list(s.scalars(select(User).order_by(User.username)))


def authenticate(s: Session, username: str, password: str, client: Optional[str] = None, *,
                 now: Optional[dt.datetime] = None) -> Optional[User]:
    """The user if the password matches and the account is enabled, else None; raises
    LoginThrottled when the name or ``client`` (an address; None: an in-process caller such
    as the CLI, not counted per client) must wait (rule in the module docstring). Upgrades
    the stored hash when the hashing parameters changed. Failed and refused attempts are
    audited; the password never is. ``now`` (aware UTC) is for tests; default ``clock()``."""
    now = now or clock()
    keys = {"user": _throttle_key("user", username)}
    if client is not None:
        keys["client"] = _throttle_key("client", client)
    _lock_keys(s, keys.values())
    stored = {kind: s.get(LoginThrottle, key, populate_existing=True) for kind, key in keys.items()}
    rows = {kind: row if _counts(row, THROTTLE_RULES[kind], now) else None for kind, row in stored.items()}
    waits = {kind: (row.not_before - now).total_seconds() for kind, row in rows.items()
             if row is not None and row.not_before is not None and row.not_before > now}
    if waits:
        kind = max(waits, key=waits.get)
        audit(s, None, "login_throttled", _name_target(username),
              {"key": kind, "retry_after_s": round(waits[kind], 3), **_client_detail(client)})
        raise LoginThrottled(waits[kind])

    user = get_user(s, username)
    usable = user is not None and not user.disabled
    try:
        # Always one argon2 verification: an unknown name costs what a known one does.
        _hasher.verify(user.password_hash if usable else _dummy_hash(), password)
        ok = usable
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        ok = False
    if not ok:
        for kind, key in keys.items():
            _record_failure(s, key, rows[kind], THROTTLE_RULES[kind], now)
            if stored[kind] is not None:
                s.expire(stored[kind])  # the upsert went around the ORM
        reason = "bad password" if usable else "unknown or disabled"
        audit(s, None, "login_failed", user if usable else _name_target(username),
              {"reason": reason, **_client_detail(client)})
        return None
    # The client key stays: see the module docstring.
    s.execute(delete(LoginThrottle).where(LoginThrottle.key == keys["user"]))
    if _hasher.check_needs_rehash(user.password_hash):
        user.password_hash = _hasher.hash(password)
    user.last_login_at = now
    audit(s, user, "login", user)
    return user


_dummy: Optional[str] = None
_dummy_lock = threading.Lock()


def _dummy_hash() -> str:
    """A hash of a random secret made by ``_hasher`` (same parameters as real ones, so the
    same verification time); made once, on first need, since hashing costs what verifying does."""
    global _dummy
    with _dummy_lock:
        if _dummy is None:
            _dummy = _hasher.hash(secrets.token_urlsafe(32))
        return _dummy


def _throttle_key(kind: str, value: str) -> str:
    key = f"{kind}:{value}"
    if len(key) > _KEY_MAX:
        key = f"{kind}:sha256:{hashlib.sha256(value.encode('utf-8', 'surrogatepass')).hexdigest()}"
    return key


def _name_target(username: str) -> tuple[str, str]:
    """The audit target for a typed name, shortened (with a hash, so still distinct) to fit
    target_id: on PostgreSQL a longer unknown name made the insert fail, an error where a
    known name got a plain "wrong", so the answer told such names apart."""
    if len(username) <= _AUDIT_ID_MAX:
        return "user", username
    digest = hashlib.sha256(username.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    return "user", f"{username[:_AUDIT_ID_MAX - 17]}~{digest}"


def _client_detail(client: Optional[str]) -> dict[str, str]:
    return {} if client is None else {"client": client[:_KEY_MAX]}


def _lock_keys(s: Session, keys: Any) -> None:
    """PostgreSQL: hold each key until the caller's transaction ends, so parallel attempts
    for one key are judged one after the other. Locks are taken in one global order (by
    number), so two attempts cannot deadlock. SQLite already runs one writer at a time."""
    if s.get_bind().dialect.name != "postgresql":
        return
    ids = sorted({int.from_bytes(hashlib.sha256(k.encode()).digest()[:4], "big", signed=True) for k in keys})
    for i in ids:
        s.execute(text("SELECT pg_advisory_xact_lock(CAST(:ns AS integer), CAST(:id AS integer))"),
                  {"ns": _ADVISORY_NAMESPACE, "id": i})


def _counts(row: Optional[LoginThrottle], rule: ThrottleRule, now: dt.datetime) -> bool:
    """Whether the key's stored failures still count (they lapse, lock-out included,
    ``reset_after_s`` after the last one)."""
    return (row is not None and row.last_failure_at is not None
            and (now - row.last_failure_at).total_seconds() < rule.reset_after_s)


def _record_failure(s: Session, key: str, row: Optional[LoginThrottle], rule: ThrottleRule,
                    now: dt.datetime) -> None:
    failures = (row.failures if row is not None else 0) + 1
    if failures >= rule.lock_at:
        not_before: Optional[dt.datetime] = now + dt.timedelta(seconds=rule.lock_s)
    elif failures >= rule.free_failures:
        delay = min(2.0 ** (failures - rule.free_failures), rule.max_delay_s)
        not_before = now + dt.timedelta(seconds=delay)
    else:
        not_before = None
    values = {"key": key, "failures": failures, "last_failure_at": now, "not_before": not_before}
    # Upsert, not read-then-insert: a concurrent first failure for the same key must not
    # fail on the primary key (last write wins).
    insert = pg_insert if s.get_bind().dialect.name == "postgresql" else sqlite_insert
    stmt = insert(LoginThrottle).values(**values)
    s.execute(stmt.on_conflict_do_update(index_elements=[LoginThrottle.key],
                                         set_={k: stmt.excluded[k] for k in values if k != "key"}))


def prune_login_throttle(s: Session, now: Optional[dt.datetime] = None) -> int:
    """Delete rows whose count has lapsed (they change nothing); returns how many. For a
    periodic job: the log-in path itself never scans the table."""
    horizon = (now or clock()) - dt.timedelta(seconds=max(r.reset_after_s for r in THROTTLE_RULES.values()))
    return s.execute(delete(LoginThrottle).where(LoginThrottle.last_failure_at < horizon)).rowcount


def set_role(s: Session, user_id: int, role: str, *, actor: Actor) -> User:
    by = check_actor(actor, "manage_users")
    role_rank(role)
    user = s.get(User, user_id)
    if user is None:
        raise AuthError(f"no user with id {user_id}")
    old = user.role
    if old == "admin" and role != "admin":
        _ensure_other_admin(s, user)
    user.role = role
    audit(s, actor, "set_role", user, {"from": old, "to": role}, username=by)
    return user


def set_password(s: Session, user_id: int, password: str, *, actor: Actor) -> None:
    """Admins may reset anyone's password; every user may change their own."""
    user = s.get(User, user_id)
    if user is None:
        raise AuthError(f"no user with id {user_id}")
    if actor is not None and actor.id != user.id:
        check_actor(actor, "manage_users")
    user.password_hash = hash_password(password)
    audit(s, actor, "set_password", user)


def set_disabled(s: Session, user_id: int, disabled: bool, *, actor: Actor) -> User:
    check_actor(actor, "manage_users")
    user = s.get(User, user_id)
    if user is None:
        raise AuthError(f"no user with id {user_id}")
    if disabled and user.role == "admin":
        _ensure_other_admin(s, user)
    user.disabled = disabled
    audit(s, actor, "disable_user" if disabled else "enable_user", user)
    return user


def _ensure_other_admin(s: Session, user: User) -> None:
    others = s.scalar(select(User.id).where(User.role == "admin", User.id != user.id,
                                            User.disabled.is_(False)).limit(1))
    if others is None:
        raise AuthError(f"{user.username} is the last enabled admin; make another admin first")


# --- audit log ------------------------------------------------------------------------------

def _target(target: Any) -> tuple[Optional[str], Optional[str]]:
    if target is None:
        return None, None
    if isinstance(target, tuple):
        return str(target[0]), None if target[1] is None else str(target[1])
    table = getattr(target, "__tablename__", type(target).__name__).rstrip("s")
    return table, str(getattr(target, "id", None))


def audit(s: Session, actor: Union[User, str, None], action: str, target: Any = None,
          details: Optional[dict[str, Any]] = None, *, username: Optional[str] = None) -> AuditEntry:
    """Append to the audit log in the caller's transaction. ``target`` is a model object or
    a ``(type, id)`` tuple; ``actor`` a User, a name, or None for the system."""
    ttype, tid = _target(target)
    if isinstance(actor, User):
        uid, name = actor.id, actor.username
    else:
        uid, name = None, actor or SYSTEM
    entry = AuditEntry(user_id=uid, username=username or name, action=action, target_type=ttype,
                       target_id=tid, details=details)
    s.add(entry)
    return entry


def audit_log(s: Session, *, limit: int = 100, action: Optional[str] = None,
              username: Optional[str] = None, target_type: Optional[str] = None,
              target_id: Any = None, before_id: Optional[int] = None) -> list[AuditEntry]:
    """Newest first; ``before_id`` pages further back."""
    q = select(AuditEntry).order_by(AuditEntry.id.desc()).limit(limit)
    if action is not None:
        q = q.where(AuditEntry.action == action)
    if username is not None:
        q = q.where(AuditEntry.username == username)
    if target_type is not None:
        q = q.where(AuditEntry.target_type == target_type)
    if target_id is not None:
        q = q.where(AuditEntry.target_id == str(target_id))
    if before_id is not None:
        q = q.where(AuditEntry.id < before_id)
    return list(s.scalars(q))
