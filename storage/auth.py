"""Users, roles, permissions and the audit log.

Roles are ordered: viewer < reviewer < supervisor < admin, each able to do everything the
ones before it can. ``PERMISSIONS`` maps an action to the least role allowed to do it; the
UI calls ``require_role(user, action)`` before acting (and repository functions that take
an ``actor`` call it for you). ``actor=None`` means the system itself (the worker, the CLI):
it is recorded as "system" and not checked.
"""
from __future__ import annotations

from typing import Any, Optional, Union

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy import select
from sqlalchemy.orm import Session

from storage.models import ROLES, AuditEntry, User, utcnow

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


class PermissionDenied(PermissionError):
    """The user's role does not allow the action; the message says which role would."""


class AuthError(ValueError):
    pass


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


def authenticate(s: Session, username: str, password: str) -> Optional[User]:
    """The user if the password matches and the account is enabled, else None. Upgrades the
    stored hash when the hashing parameters changed. Failed attempts are audited."""
    user = get_user(s, username)
    if user is None or user.disabled:
        audit(s, None, "login_failed", ("user", username), {"reason": "unknown or disabled"})
        return None
    try:
        _hasher.verify(user.password_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        audit(s, None, "login_failed", user, {"reason": "bad password"})
        return None
    if _hasher.check_needs_rehash(user.password_hash):
        user.password_hash = _hasher.hash(password)
    user.last_login_at = utcnow()
    audit(s, user, "login", user)
    return user


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
