"""Who may use the worker's websocket endpoint (docs/security.md): browsers on ``/telemetry``
with a viewer ticket, robots on ``/robot`` with a robot token. The rules and the token table
live in ``storage/credentials.py``; this module is the worker's side of them, given to the
hubs, which know no database."""
from __future__ import annotations

from dataclasses import dataclass

from storage.credentials import (CredentialError, ViewerTicket, check_robot_token, revoked_among,
                                 verify_viewer_ticket)


@dataclass
class ViewerAccess:
    """Checks viewer tickets signed with the worker secret (no database: an HMAC)."""

    secret: str

    def check(self, ticket: object) -> ViewerTicket:
        return verify_viewer_ticket(self.secret, ticket)


@dataclass
class RobotAccess:
    """Checks robot tokens against the database. Called off the event loop (it blocks on the
    database); ``revoked`` is the hub's periodic re-check of connected robots' tokens."""

    db: object
    recheck_s: float = 5.0  # how soon a revoked token's robots are disconnected

    def check(self, token: object, robot_name: str) -> int:
        with self.db.write() as s:
            return check_robot_token(s, token, robot_name)

    def revoked(self, token_ids: list[int]) -> set[int]:
        with self.db.read() as s:
            return revoked_among(s, token_ids)


__all__ = ["CredentialError", "RobotAccess", "ViewerAccess"]
