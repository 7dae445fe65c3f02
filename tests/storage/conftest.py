"""Storage fixtures: every test that takes ``db`` (or ``empty_db_url``) runs twice, on a real
SQLite file in tmp_path and on a real PostgreSQL server (DOJO_TEST_POSTGRES_URL, which
scripts/test.sh starts on loopback). The PostgreSQL half is skipped, with the reason, when no
server is set.

PostgreSQL tests only touch databases this run creates (dojo_test_<random>...), dropped at the
end, so a shared server is left as it was found.
"""
from __future__ import annotations

import itertools
import os
import shutil
import uuid
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from storage.db import Database, init_db, make_engine, resolve_url
from storage.models import Base

BACKENDS = ["sqlite", "postgres"]


def _pg_skip_reason() -> str:
    return os.environ.get("DOJO_TEST_POSTGRES_SKIP") or (
        "DOJO_TEST_POSTGRES_URL is not set; scripts/test.sh starts a throwaway PostgreSQL on "
        "127.0.0.1 and sets it (or point it at a server you own)")


class PgServer:
    """Creates databases for this run on the test server; drops them all at the end."""

    def __init__(self, base_url: str):
        self.base = resolve_url(base_url)
        self.admin = create_engine(self.base, isolation_level="AUTOCOMMIT")
        self.prefix = f"dojo_test_{uuid.uuid4().hex[:8]}"
        self.names: list[str] = []
        self._n = itertools.count()

    def create(self) -> str:
        name = f"{self.prefix}_{next(self._n)}"
        with self.admin.connect() as c:
            c.execute(text(f'CREATE DATABASE "{name}"'))
        self.names.append(name)
        return self.base.set(database=name).render_as_string(hide_password=False)

    def close(self) -> None:
        with self.admin.connect() as c:
            for name in self.names:
                c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        self.admin.dispose()


@pytest.fixture(scope="session")
def pg_server():
    base = os.environ.get("DOJO_TEST_POSTGRES_URL")
    if not base:
        pytest.skip(_pg_skip_reason())
    server = PgServer(base)
    try:
        with server.admin.connect() as c:
            c.execute(text("SELECT 1"))
    except Exception as e:
        server.admin.dispose()
        pytest.skip(f"PostgreSQL at DOJO_TEST_POSTGRES_URL is not reachable: {e}")
    yield server
    server.close()


@pytest.fixture(scope="session")
def pg_migrated(pg_server) -> str:
    url = pg_server.create()
    init_db(url).dispose()
    return url


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory) -> Path:
    """Migrated once per run; each test gets a copy (a migration per test costs ~0.2 s)."""
    path = tmp_path_factory.mktemp("template") / "dojo.sqlite"
    init_db(path).dispose()  # the last connection closing checkpoints the WAL into the file
    return path


@pytest.fixture(params=BACKENDS)
def backend(request) -> str:
    return request.param


@pytest.fixture
def empty_db_url(backend, tmp_path, request) -> str:
    """A URL to an empty, unmigrated database."""
    if backend == "sqlite":
        return f"sqlite:///{tmp_path / 'empty.sqlite'}"
    return request.getfixturevalue("pg_server").create()


@pytest.fixture
def db(backend, tmp_path, request) -> Database:
    """A migrated database with no rows: a copy of the migrated template file on SQLite; on
    PostgreSQL the run's migrated database with every table truncated."""
    if backend == "sqlite":
        path = tmp_path / "dojo.sqlite"
        shutil.copyfile(request.getfixturevalue("sqlite_template"), path)
        database = Database(make_engine(path))
    else:
        database = Database(make_engine(request.getfixturevalue("pg_migrated")))
        tables = ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)
        with database.engine.begin() as c:
            c.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
    yield database
    database.dispose()


@pytest.fixture
def db_url(db) -> str:
    """The URL of ``db`` (for child processes)."""
    return db.engine.url.render_as_string(hide_password=False)


@pytest.fixture
def task_id(db) -> int:
    from storage import repo

    with db.write() as s:
        return repo.create_task(s, "push-red-to-blue", "tabletop", {"n_blocks": 4},
                                detector_threshold=2.0, detector_patience=2).id


USERS = {"viewer": "view", "reviewer": "rev", "supervisor": "sup", "admin": "adm"}


@pytest.fixture(scope="session")
def password_hashes() -> dict:
    from storage.auth import hash_password

    return {name: hash_password(f"{name}-password") for name in USERS.values()}


@pytest.fixture
def users(db, password_hashes) -> dict:
    """One user per role (usernames view, rev, sup, adm; password "<name>-password"). Hashed
    once per run: argon2 is slow on purpose."""
    from storage.models import User

    with db.write() as s:
        out = {role: User(username=name, role=role, password_hash=password_hashes[name])
               for role, name in USERS.items()}
        s.add_all(out.values())
    return out
