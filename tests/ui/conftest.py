"""UI fixtures: a seeded SQLite file per test module, and AppTest runners logged in as a role."""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.ui.seeding import Seeded, seed

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def seeded(tmp_path_factory) -> Seeded:
    path = tmp_path_factory.mktemp("ui") / "dojo.sqlite"
    return seed(str(path), episodes=60, robots=4)


@pytest.fixture(autouse=True)
def ui_env(seeded, monkeypatch, tmp_path):
    """Every UI test talks to the seeded file, never to data/dojo.sqlite. AppTest runs the
    page as ``__main__`` and leaves it in sys.modules; a simulator process started later in
    this pytest process (spawn) would re-run that page, so the real ``__main__`` is put back."""
    import sys

    monkeypatch.setitem(sys.modules, "__main__", sys.modules["__main__"])
    monkeypatch.setenv("DOJO_DB", seeded.url)
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.setenv("DOJO_DATA", str(tmp_path / "data"))


@pytest.fixture
def app(seeded):
    """``app(page, role)``: an AppTest of pages/<page>.py (or app.py) logged in as ``role``."""
    from streamlit.testing.v1 import AppTest

    def make(page: str, role: str | None = "admin", timeout: float = 20) -> AppTest:
        path = ROOT / ("app.py" if page == "app" else f"pages/{page}.py")
        at = AppTest.from_file(str(path), default_timeout=timeout)
        if role is not None:
            at.session_state["dojo_user_id"] = seeded.user_ids[role]
        return at
    return make
