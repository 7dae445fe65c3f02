"""Engine factory, connection settings, migrations and the errors a person sees."""
from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text

from storage import repo
from storage.db import (DEFAULT_SQLITE_PATH, StorageError, current_revision, head_revision, init_db,
                        make_engine, open_db, resolve_url)
from storage.models import Base
from tests.storage import procs

TABLES = {"tasks", "robots", "sessions", "episodes", "steps", "frames", "checkpoints", "jobs", "metrics",
          "detector_quality", "users", "audit_log", "alembic_version"}


@pytest.mark.filterwarnings("ignore:.*expression-based index")
def test_migrations_create_the_schema_the_models_describe(db):
    assert TABLES <= set(inspect(db.engine).get_table_names())
    assert current_revision(db.engine) == head_revision()
    with db.engine.connect() as c:
        diffs = compare_metadata(MigrationContext.configure(c), Base.metadata)
    # Expression indexes cannot be reflected (and are skipped); nothing else may differ.
    assert diffs == []


def test_init_db_is_idempotent_and_keeps_data(empty_db_url):
    db_url = empty_db_url
    db = init_db(db_url)
    with db.write() as s:
        repo.create_task(s, "t", "tabletop")
    db.dispose()
    db = init_db(db_url)
    with db.read() as s:
        assert [t.name for t in repo.list_tasks(s)] == ["t"]
    db.dispose()



def test_upgrading_a_first_version_database_keeps_every_row_and_link(empty_db_url):
    """0002 copies the jobs table on SQLite (a CHECK constraint cannot be altered in place):
    with foreign keys on, dropping the old table set every episode's and metric's job_id to
    NULL. The upgrade runs with them off and checks them before it commits."""
    from storage.db import upgrade

    eng = make_engine(empty_db_url)
    upgrade(eng, "0001")
    with eng.begin() as c:
        c.execute(text("INSERT INTO tasks (id, name, backend, env_config, detector_patience, fleet_size, created_at) "
                       "VALUES (1, 't', 'tabletop', '{}', 1, 1, '2026-01-01')"))
        c.execute(text("INSERT INTO jobs (id, kind, status, params, priority, attempts, max_attempts, progress, "
                       "created_at, created_by) VALUES (7, 'sft', 'done', '{}', 0, 1, 3, 1, '2026-01-01', 'x')"))
        c.execute(text("INSERT INTO episodes (id, uid, task_id, job_id, source, status, started_at) "
                       "VALUES (1, 'e1', 1, 7, 'practice', 'finished', '2026-01-01')"))
        c.execute(text("INSERT INTO steps (episode_id, t, d, detector_fired) VALUES (1, 0, 3.5, false)"))
        c.execute(text("INSERT INTO metrics (name, x, value, job_id, created_at) VALUES ('m', 0, 1, 7, '2026-01-01')"))
    eng.dispose()
    db = init_db(empty_db_url)
    assert current_revision(db.engine) == head_revision()
    with db.engine.connect() as c:
        assert c.execute(text("SELECT job_id FROM episodes")).scalar() == 7
        assert c.execute(text("SELECT job_id FROM metrics")).scalar() == 7
        assert c.execute(text("SELECT kind, status FROM jobs")).one() == ("sft", "done")
        assert c.execute(text("SELECT d, proprio FROM steps")).one() == (3.5, None)
        if db.engine.dialect.name == "sqlite":
            assert c.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    with db.write() as s:  # the new job kind is allowed, a bogus one still is not
        repo.enqueue_job(s, "refine", {}, task_id=1)
    with pytest.raises(Exception, match="ck_jobs_kind|CHECK constraint"):
        with db.engine.begin() as c:
            c.execute(text("INSERT INTO jobs (kind, status, params, priority, attempts, max_attempts, progress, "
                           "created_at) VALUES ('bogus', 'queued', '{}', 0, 0, 3, 0, '2026-01-01')"))
    db.dispose()

def test_sqlite_connections_use_wal_foreign_keys_and_busy_timeout(tmp_path):
    db = init_db(tmp_path / "dojo.sqlite")
    with db.engine.connect() as c:
        assert c.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert c.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert c.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30000
        assert c.exec_driver_sql("PRAGMA synchronous").scalar() == 1  # NORMAL
    assert (tmp_path / "dojo.sqlite-wal").exists()
    db.dispose()


def test_foreign_keys_are_enforced(db):
    from sqlalchemy.exc import IntegrityError

    with pytest.raises(IntegrityError):
        with db.write() as s:
            repo.finish_episode(s, uid="orphan", task_id=12345)


def test_url_resolution(monkeypatch, tmp_path):
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.delenv("DOJO_DB", raising=False)
    assert resolve_url().database == str(DEFAULT_SQLITE_PATH)
    monkeypatch.setenv("DOJO_DB", str(tmp_path / "a.sqlite"))
    assert resolve_url().database == str(tmp_path / "a.sqlite")
    monkeypatch.setenv("DATABASE_URL", "postgresql://u:p@db.example:5433/dojo")
    u = resolve_url()
    assert (u.drivername, u.host, u.port, u.database) == ("postgresql+psycopg", "db.example", 5433, "dojo")
    assert resolve_url(tmp_path / "b.sqlite").drivername == "sqlite+pysqlite"  # explicit arg wins


def test_default_path_works_from_any_cwd(monkeypatch, tmp_path):
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.setenv("DOJO_DB", str(tmp_path / "sub" / "dojo.sqlite"))
    monkeypatch.chdir("/")
    db = init_db()  # migrations are found inside the package, the folder is created
    assert Path(db.engine.url.database).exists()
    db.dispose()


def test_corrupt_database_file_gives_a_clear_error(tmp_path):
    bad = tmp_path / "dojo.sqlite"
    bad.write_bytes(b"this is not a database, it is a text file" * 100)
    with pytest.raises(StorageError) as e:
        init_db(bad)
    msg = str(e.value)
    assert str(bad) in msg and "corrupt" in msg and "backup" in msg and "mv " in msg


def test_damaged_pages_give_a_clear_error(tmp_path):
    path = tmp_path / "dojo.sqlite"
    db = init_db(path)
    db.dispose()
    data = bytearray(path.read_bytes())
    data[100:4096] = os.urandom(4096 - 100)  # keep the header, trash the schema page
    path.write_bytes(bytes(data))
    for p in (tmp_path / "dojo.sqlite-wal", tmp_path / "dojo.sqlite-shm"):
        p.unlink(missing_ok=True)
    with pytest.raises(StorageError, match="corrupt"):
        init_db(path)


def test_unwritable_location_gives_a_clear_error(tmp_path):
    if os.geteuid() == 0:
        pytest.skip("root can write anywhere; the permission check cannot fail")
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    with pytest.raises(StorageError, match="DOJO_DB"):
        make_engine(ro / "dojo.sqlite")


@pytest.mark.parametrize("url,needle", [
    ("postgresql://user@host:notaport/db", "not a valid URL"),
    ("mysql://u@h/db", "unsupported backend"),
    ("sqlite://", "in-memory"),
])
def test_bad_urls_give_a_clear_error(url, needle):
    with pytest.raises(StorageError, match=needle):
        make_engine(url)


def test_unreachable_postgres_gives_a_clear_error():
    with socket.socket() as sk:  # a loopback port that nothing listens on
        sk.bind(("127.0.0.1", 0))
        port = sk.getsockname()[1]
    with pytest.raises(StorageError) as e:
        init_db(f"postgresql://nobody:secret@127.0.0.1:{port}/dojo")
    msg = str(e.value)
    assert "cannot connect to PostgreSQL" in msg and "DATABASE_URL" in msg and "secret" not in msg


def test_open_db_refuses_an_unmigrated_database(tmp_path):
    with pytest.raises(StorageError, match="python -m storage upgrade"):
        open_db(tmp_path / "empty.sqlite")


def test_concurrent_init_db_from_two_processes(empty_db_url):
    """The worker and the UI start together: both migrate, neither fails."""
    ctx = procs.CTX
    q = ctx.Queue()
    children = [ctx.Process(target=procs.init_db_in_child, args=(empty_db_url, q)) for _ in range(2)]
    for p in children:
        p.start()
    results = [q.get(timeout=60) for _ in children]
    for p in children:
        p.join(30)
    assert results == ["ok", "ok"]
    db = init_db(empty_db_url)
    with db.engine.connect() as c:
        assert c.execute(text("SELECT count(*) FROM alembic_version")).scalar() == 1
    db.dispose()


def test_objects_stay_readable_after_the_transaction(db):
    with db.write() as s:
        repo.create_task(s, "t", "tabletop", {"k": 1})
    with db.read() as s:
        tasks = repo.list_tasks(s)
    assert tasks[0].env_config == {"k": 1}  # the UI renders after the session closed


def test_nested_write_in_one_thread_is_an_error_not_a_hang(db):
    if db.dialect != "sqlite":
        pytest.skip("the write turn (flock) is SQLite only")
    with pytest.raises(StorageError, match="inside another"):
        with db.write():
            with db.write():
                pass
    with db.write() as s:  # and the lock was released
        repo.create_task(s, "after", "tabletop")
