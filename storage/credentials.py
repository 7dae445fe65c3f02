"""The credentials of the worker's websocket endpoint (docs/security.md), one per job:

- **The worker secret** (``<data>/worker.secret``, mode 0600, or ``DOJO_WORKER_SECRET`` /
  ``DOJO_WORKER_SECRET_FILE``): held only by the worker and the web app's server process. It
  never reaches a browser, a robot or a command line; it only signs viewer tickets.
- **Viewer tickets**: the web app mints one per page render for the logged-in user
  (``mint_viewer_ticket``); it grants read-only ``/telemetry`` for ``TICKET_TTL_S`` seconds
  and nothing on ``/robot``. Stateless: an HMAC-SHA256 over (scope, user, session, expiry).
  An open feed is not cut when its ticket expires; a reconnect needs a fresh page.
- **Robot tokens**: created by a supervisor (the Live page, or ``python -m storage
  robot-token create``), shown once, stored as SHA-256 only, revocable. A token bound to a
  robot name registers only that name; an unbound one is a fleet token (any valid name).
  They are good on ``/robot`` only.

Storage knows no websocket: the worker's hub calls ``check_robot_token`` and the telemetry
endpoint ``verify_viewer_ticket``; both are pure functions of their inputs and the database.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from sqlalchemy import select
from sqlalchemy.orm import Session

from storage.auth import Actor, audit, check_actor
from storage.models import RobotToken, utcnow

SECRET_FILE = "worker.secret"
SECRET_ENV, SECRET_FILE_ENV = "DOJO_WORKER_SECRET", "DOJO_WORKER_SECRET_FILE"
MIN_SECRET_CHARS = 32
TICKET_TTL_S = 15 * 60  # short: a leaked ticket (a shared screenshot of devtools) is soon worthless
TICKET_SCOPE = "telemetry:read"
_TICKET_VERSION = "v1"
ROBOT_TOKEN_PREFIX = "dojo_rt_"
MAX_LABEL_CHARS = 100


# A remote robot's name: shown on every supervisor's screen and used in URLs and file names, so a
# small, documented character set (docs/remote_protocol.md) checked where robots register.
# Use with fullmatch (``$`` would let a trailing newline in).
ROBOT_NAME_RULE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")
ROBOT_NAME_RULE_TEXT = ("1 to 64 characters: letters A-Z a-z, digits, '.', '_', ':' or '-', starting with a "
                        "letter or digit")


class CredentialError(ValueError):
    """A credential could not be loaded, made or accepted; the message says why and the fix."""


def check_robot_name(name: object) -> str:
    """``name`` if it is a valid remote robot name, else CredentialError stating the rule."""
    if not isinstance(name, str) or not ROBOT_NAME_RULE.fullmatch(name):
        shown = repr(name)[:80] if isinstance(name, str) else type(name).__name__
        raise CredentialError(f"robot name {shown} is not allowed: {ROBOT_NAME_RULE_TEXT}")
    return name


# --- the worker secret ---------------------------------------------------------------------------

def load_worker_secret(data_dir: str | Path, *, create: bool = True) -> str:
    """The worker secret: ``DOJO_WORKER_SECRET``, else the file ``DOJO_WORKER_SECRET_FILE``, else
    ``<data>/worker.secret`` (created 0600 with 48 random bytes when missing and ``create``).
    Creation is atomic and exclusive, so a worker and a web app starting together agree."""
    env = os.environ.get(SECRET_ENV, "").strip()
    if env:
        return _checked_secret(env, SECRET_ENV)
    named = os.environ.get(SECRET_FILE_ENV, "").strip()
    path = Path(named) if named else Path(data_dir) / SECRET_FILE
    try:
        return _checked_secret(path.read_text().strip(), str(path))
    except FileNotFoundError:
        if named or not create:
            raise CredentialError(f"no worker secret at {path}. Fix: start the worker once (it creates "
                                  f"{SECRET_FILE} in its data folder), or set {SECRET_ENV} on both the worker "
                                  "and the web app") from None
    path.parent.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_urlsafe(48)
    # Written whole to a private temporary file, then hard-linked into place: the link is atomic
    # and fails if the file exists, so a concurrent starter never reads a half-written secret.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secret + "\n")
    try:
        os.link(tmp, path)
    except FileExistsError:  # another process made it first: use theirs
        return _checked_secret(path.read_text().strip(), str(path))
    finally:
        tmp.unlink()
    return secret


def _checked_secret(secret: str, where: str) -> str:
    if len(secret) < MIN_SECRET_CHARS:
        raise CredentialError(f"the worker secret from {where} has {len(secret)} characters; it needs at least "
                              f"{MIN_SECRET_CHARS}. Fix: python -c 'import secrets; print(secrets.token_urlsafe(48))'")
    return secret


# --- viewer tickets --------------------------------------------------------------------------------

def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _sign(secret: str, payload: str) -> str:
    # Domain-separated, so a signature made for anything else can never pass as a ticket.
    return _b64(hmac.new(secret.encode(), f"dojo-viewer-ticket:{payload}".encode(), hashlib.sha256).digest())


@dataclass(frozen=True)
class ViewerTicket:
    user: str
    session: str
    expires_at: float


def mint_viewer_ticket(secret: str, user: str, session: str, *, ttl_s: float = TICKET_TTL_S,
                       now: Optional[float] = None) -> str:
    """A read-only telemetry ticket for ``user`` in browser session ``session``."""
    exp = int((time.time() if now is None else now) + ttl_s)
    payload = _b64(json.dumps({"scope": TICKET_SCOPE, "sub": user, "sid": session, "exp": exp},
                              separators=(",", ":")).encode())
    return f"{_TICKET_VERSION}.{payload}.{_sign(secret, payload)}"


def verify_viewer_ticket(secret: str, ticket: object, *, now: Optional[float] = None) -> ViewerTicket:
    """The ticket's claims, or CredentialError saying what is wrong with it."""
    if not isinstance(ticket, str) or len(ticket) > 1024 or ticket.count(".") != 2:
        raise CredentialError("not a viewer ticket; open the Live page of the web app to get one")
    version, payload, sig = ticket.split(".")
    if version != _TICKET_VERSION or not hmac.compare_digest(sig.encode(), _sign(secret, payload).encode()):
        raise CredentialError("the viewer ticket's signature is wrong (made with another worker secret?); "
                              "reload the Live page")
    try:
        claims = json.loads(_unb64(payload))
        exp, user, session, scope = float(claims["exp"]), str(claims["sub"]), str(claims["sid"]), claims["scope"]
    except (ValueError, KeyError, TypeError):
        raise CredentialError("the viewer ticket is malformed; reload the Live page") from None
    if scope != TICKET_SCOPE:
        raise CredentialError(f"the ticket's scope {scope!r} does not allow the telemetry feed")
    late = (time.time() if now is None else now) - exp
    if late > 0:
        raise CredentialError(f"the viewer ticket expired {late / 60:.0f} min ago (tickets last "
                              f"{TICKET_TTL_S // 60} min); reload the Live page")
    return ViewerTicket(user, session, exp)


# --- robot tokens ------------------------------------------------------------------------------------

def _digest(token: str) -> str:
    # Tokens are 256 random bits: a plain SHA-256 is enough (no dictionary to slow down), and
    # constant per token, so the lookup is one indexed query.
    return hashlib.sha256(token.encode()).hexdigest()


def create_robot_token(s: Session, label: str, *, robot_name: Optional[str] = None,
                       actor: Actor = None) -> tuple[RobotToken, str]:
    """A new robot token; returns (its row, the token). The token is not stored: show it once."""
    by = check_actor(actor, "control_robot")
    label = (label or "").strip()
    if not label or len(label) > MAX_LABEL_CHARS:
        raise CredentialError(f"a robot token needs a label of 1-{MAX_LABEL_CHARS} characters "
                              "(where the token will live, e.g. 'arm-1 lab PC')")
    if robot_name is not None:
        robot_name = check_robot_name(robot_name)
    token = ROBOT_TOKEN_PREFIX + secrets.token_urlsafe(32)
    row = RobotToken(label=label, token_sha256=_digest(token), prefix=token[:len(ROBOT_TOKEN_PREFIX) + 4],
                     robot_name=robot_name, created_by=by)
    s.add(row)
    s.flush()
    audit(s, actor, "create_robot_token", ("robot_token", row.id), {"label": label, "robot_name": robot_name},
          username=by)
    return row, token


def list_robot_tokens(s: Session, *, include_revoked: bool = True) -> list[RobotToken]:
    q = select(RobotToken).order_by(RobotToken.id.desc())
    if not include_revoked:
        q = q.where(RobotToken.revoked_at.is_(None))
    return list(s.scalars(q))


def revoke_robot_token(s: Session, token_id: int, *, actor: Actor = None) -> RobotToken:
    """Revoke a token: no new registrations with it, and the worker disconnects the robots using it
    within its re-check interval (core/worker/remote.py)."""
    by = check_actor(actor, "control_robot")
    row = s.get(RobotToken, token_id)
    if row is None:
        raise CredentialError(f"no robot token with id {token_id}")
    if row.revoked_at is None:
        row.revoked_at, row.revoked_by = utcnow(), by
        audit(s, actor, "revoke_robot_token", ("robot_token", row.id), {"label": row.label}, username=by)
    return row


def check_robot_token(s: Session, token: object, robot_name: str) -> int:
    """The id of the valid token ``token`` for a robot named ``robot_name``, or CredentialError."""
    if not isinstance(token, str) or not token.startswith(ROBOT_TOKEN_PREFIX) or len(token) > 200:
        raise CredentialError("a robot token is required (register.token or ?token=); a supervisor creates one "
                              "on the Live page, or: python -m storage robot-token create LABEL")
    row = s.scalar(select(RobotToken).where(RobotToken.token_sha256 == _digest(token)))
    if row is None:
        raise CredentialError("unknown robot token; ask a supervisor for a new one")
    if row.revoked_at is not None:
        raise CredentialError(f"robot token {row.prefix}... ({row.label}) was revoked; ask a supervisor for a new one")
    if row.robot_name is not None and row.robot_name != robot_name:
        raise CredentialError(f"robot token {row.prefix}... is for robot {row.robot_name!r} only, not {robot_name!r}")
    row.last_used_at = utcnow()
    return row.id


def revoked_among(s: Session, token_ids: list[int]) -> set[int]:
    """Which of ``token_ids`` are revoked or gone (the worker's periodic re-check)."""
    if not token_ids:
        return set()
    valid = set(s.scalars(select(RobotToken.id).where(RobotToken.id.in_(token_ids),
                                                      RobotToken.revoked_at.is_(None))))
    return set(token_ids) - valid
