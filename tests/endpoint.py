"""Real credentials for tests that serve the worker's websocket endpoint: a worker secret and
viewer tickets signed with it, and robot tokens in a real (migrated) SQLite database, checked by
the same ``core.worker.access`` classes the worker uses."""
from __future__ import annotations

import os
import subprocess
import sys
import urllib.request
from contextlib import contextmanager
from pathlib import Path

from core.worker.access import RobotAccess, ViewerAccess
from storage import init_db, repo
from storage.credentials import mint_viewer_ticket

ROOT = Path(__file__).resolve().parents[1]
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


@contextmanager
def web_app(data: Path, telemetry_port: int):
    """The real web app (``streamlit run app.py``) over ``<data>/dojo.sqlite`` on a free loopback
    port, reading live telemetry from ``telemetry_port``; yields its URL once it answers."""
    from bench.common import free_port, wait_until

    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DOJO_", "DATABASE_URL"))}
    env.update({"DOJO_DATA": str(data), "DOJO_DB": str(data / "dojo.sqlite"), "DOJO_TELEMETRY_PORT": str(telemetry_port)})
    with open(data / "app.log", "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port),
                                 "--server.address", "127.0.0.1", "--server.headless", "true"],
                                cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)

        def up():
            try:
                return urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2).status == 200
            except OSError:
                return False
        try:
            wait_until(up, 60, "the web app to answer")
            yield f"http://127.0.0.1:{port}"
        finally:
            proc.terminate()
            proc.wait(20)


def playwright_or_skip():
    """``sync_playwright()``, or skip saying how to get what is missing (Chromium, playwright)."""
    import pytest

    from bench.common import CHROMIUM

    if not Path(CHROMIUM).exists():
        pytest.skip(f"no Chromium at {CHROMIUM}: apt-get install chromium (scripts/test.sh does)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright is pinned in requirements.txt: run scripts/setup.sh")
    return sync_playwright()


def log_in(page, url: str, username: str, password: str) -> None:
    """Open the web app at ``url`` in a Playwright ``page`` and log in; returns on the first page
    after it (Tasks & fleet)."""
    page.goto(url)
    page.get_by_label("Username", exact=True).fill(username)
    page.get_by_label("Password", exact=True).fill(password)
    page.get_by_role("button", name="Log in").click()
    page.get_by_role("heading", name="Tasks & fleet").wait_for()


@contextmanager
def shown_on_failure(page, png: Path):
    """On any failure inside (a timeout included), save what the browser showed to ``png`` before
    the error goes on, so a browser test that fails in CI leaves its screen behind."""
    try:
        yield
    except BaseException:
        try:
            page.screenshot(path=str(png), timeout=10_000)
        except Exception as e:  # the screen is a clue, never the failure reported
            print(f"no failure screenshot ({png}): {e}")
        raise
