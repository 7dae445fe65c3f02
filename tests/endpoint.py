"""Real credentials for tests that serve the worker's websocket endpoint: a worker secret and
viewer tickets signed with it, and robot tokens in a real (migrated) SQLite database, checked by
the same ``core.worker.access`` classes the worker uses."""
from __future__ import annotations

from pathlib import Path

from core.worker.access import RobotAccess, ViewerAccess
from storage import init_db, repo
from storage.credentials import mint_viewer_ticket

SECRET = "test-worker-secret-" + "x" * 32


def viewer_access() -> ViewerAccess:
    return ViewerAccess(SECRET)


def viewer_ticket(user: str = "viewer", session: str = "test-session") -> str:
    return mint_viewer_ticket(SECRET, user, session)


class RobotTokens:
    """A database with robot tokens, and the worker's access object over it."""

    def __init__(self, folder: Path, *, recheck_s: float = 5.0):
        self.db = init_db(str(Path(folder) / "tokens.sqlite"))
        self.access = RobotAccess(self.db, recheck_s=recheck_s)
        self.fleet_token = self.create("test fleet")

    def create(self, label: str, robot_name: str | None = None) -> str:
        with self.db.write() as s:
            return repo.create_robot_token(s, label, robot_name=robot_name)[1]

    def revoke_all(self) -> None:
        with self.db.write() as s:
            for t in repo.list_robot_tokens(s, include_revoked=False):
                repo.revoke_robot_token(s, t.id)
