"""Engines, sessions and migrations.

One SQLite file by default (``data/dojo.sqlite`` under the repository, or ``DOJO_DB``);
``DATABASE_URL`` selects PostgreSQL (psycopg 3). Typical use::

    from storage.db import init_db
    db = init_db()                      # migrate to head, return a Database
    with db.write() as s:               # one short write transaction, committed on exit
        job = jobs.claim_job(s, worker="host-1")
    with db.read() as s:                # a read snapshot
        rows = queries.review_queue(s)

Why two kinds of transaction: SQLite's default (deferred) transaction that first reads and
then writes fails at once with "database is locked" when another process committed in
between, whatever the busy timeout. Write transactions therefore start with ``BEGIN
IMMEDIATE`` (they queue for the write lock, waiting up to the busy timeout) and read
transactions with a plain ``BEGIN`` (WAL readers never block writers nor each other).
On PostgreSQL both are ordinary READ COMMITTED transactions.
"""
from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
from pathlib import Path
from typing import Iterator

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: SQLite's own busy handler only
    fcntl = None

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SQLITE_PATH = REPO_ROOT / "data" / "dojo.sqlite"
MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
BUSY_TIMEOUT_S = 30.0
_SQLITE_MAGIC = b"SQLite format 3\x00"
_BEGIN_OPTION = "dojo_sqlite_begin"


class StorageError(RuntimeError):
    """The database cannot be used; the message names the problem and the fix."""


def resolve_url(url: str | os.PathLike | None = None) -> URL:
    """``url`` (a URL, or a path to a SQLite file) > ``DATABASE_URL`` > ``DOJO_DB`` (path) >
    ``data/dojo.sqlite`` under the repository root."""
    if url is None:
        url = os.environ.get("DATABASE_URL") or None
    if url is None:
        url = Path(os.environ.get("DOJO_DB") or DEFAULT_SQLITE_PATH)
    if isinstance(url, os.PathLike) or "://" not in str(url):
        path = Path(url).expanduser().resolve()
        return URL.create("sqlite+pysqlite", database=str(path))
    raw = str(url)
    try:
        parsed = make_url(raw)
    except (ArgumentError, ValueError) as e:
        raise StorageError(f"database URL {_redact(raw)!r} is not a valid URL ({e}). Fix: use "
                           "postgresql://USER:PASSWORD@HOST:PORT/DBNAME or sqlite:///path/to/file.sqlite, "
                           "or unset DATABASE_URL to use the default SQLite file") from None
    if parsed.drivername in ("postgresql", "postgres", "postgresql+psycopg2"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.drivername == "sqlite":
        parsed = parsed.set(drivername="sqlite+pysqlite")
    if parsed.drivername not in ("postgresql+psycopg", "sqlite+pysqlite"):
        raise StorageError(f"database URL {_redact(raw)!r}: unsupported backend {parsed.drivername!r}. "
                           "Fix: use a postgresql:// URL (psycopg 3 driver) or a sqlite:/// file URL")
    if parsed.drivername == "sqlite+pysqlite" and parsed.database in (None, "", ":memory:"):
        raise StorageError("an in-memory SQLite database cannot be shared by the worker and the UI. "
                           "Fix: give a file path (sqlite:///data/dojo.sqlite)")
    return parsed


def _redact(raw: str) -> str:
    try:
        return make_url(raw).render_as_string(hide_password=True)
    except Exception:
        return raw.split("@")[-1] if "@" in raw else raw


def _check_sqlite_file(path: Path) -> None:
    """Fail early, naming the file and the fix, instead of a bare 'file is not a database'."""
    if path.is_dir():
        raise StorageError(f"SQLite database path {path} is a directory. Fix: point DOJO_DB at a file")
    if not path.exists():
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise StorageError(f"cannot create the folder for the SQLite database {path}: {e}. "
                               "Fix: set DOJO_DB to a writable location") from None
        if not os.access(path.parent, os.W_OK):
            raise StorageError(f"cannot create the SQLite database {path}: folder not writable. "
                               "Fix: set DOJO_DB to a writable location or fix the folder's permissions")
        return
    if not os.access(path, os.R_OK | os.W_OK):
        raise StorageError(f"SQLite database {path} is not readable and writable by this user. "
                           f"Fix: chmod/chown the file (and its folder, SQLite writes {path.name}-wal there)")
    if path.stat().st_size == 0:
        return  # a fresh empty file is a valid empty database
    with open(path, "rb") as f:
        head = f.read(16)
    if head != _SQLITE_MAGIC:
        raise StorageError(corrupt_message(path, "it does not start with the SQLite header"))


def corrupt_message(path: Path | str, why: str) -> str:
    return (f"SQLite database {path} is corrupt or not a SQLite database ({why}). Fix: restore it "
            f"from a backup, or move it aside (mv {path} {path}.bad) and run again to create a fresh, "
            "empty database")


def _sqlite_connect_pragmas(dbapi_conn, _record) -> None:
    # We issue BEGIN ourselves (see _sqlite_begin): pysqlite's implicit transactions would
    # start every write transaction deferred.
    dbapi_conn.isolation_level = None
    cur = dbapi_conn.cursor()
    try:
        cur.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
        mode = cur.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise StorageError(f"SQLite refused WAL mode (journal_mode={mode}); the database is on a "
                               "file system without shared memory support. Fix: put DOJO_DB on a local disk")
        cur.execute("PRAGMA foreign_keys = ON")
        cur.execute("PRAGMA synchronous = NORMAL")  # durable in WAL mode except on power loss
    finally:
        cur.close()


def _sqlite_begin(conn) -> None:
    mode = conn.get_execution_options().get(_BEGIN_OPTION, "DEFERRED")
    conn.exec_driver_sql(f"BEGIN {mode}")


def make_engine(url: str | os.PathLike | None = None, **kwargs) -> Engine:
    """An Engine for ``url`` (see ``resolve_url``). SQLite: WAL, foreign keys, 30 s busy
    timeout, synchronous=NORMAL on every connection. Extra kwargs go to create_engine."""
    parsed = resolve_url(url)
    if parsed.drivername.startswith("sqlite"):
        _check_sqlite_file(Path(parsed.database))
        connect_args = {"timeout": BUSY_TIMEOUT_S, "check_same_thread": False}
        connect_args.update(kwargs.pop("connect_args", {}))
        engine = create_engine(parsed, connect_args=connect_args, **kwargs)
        event.listen(engine, "connect", _sqlite_connect_pragmas)
        event.listen(engine, "begin", _sqlite_begin)
        return engine
    kwargs.setdefault("pool_pre_ping", True)
    connect_args = {"connect_timeout": 10}
    connect_args.update(kwargs.pop("connect_args", {}))
    try:
        return create_engine(parsed, connect_args=connect_args, **kwargs)
    except NoSuchModuleError as e:  # pragma: no cover - psycopg is pinned
        raise StorageError(f"{e}. Fix: pip install -r requirements.txt (psycopg[binary])") from None


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    """Sessions that keep loaded objects usable after commit (short transactions)."""
    return sessionmaker(engine, expire_on_commit=False)


def is_sqlite(engine_or_session) -> bool:
    bind = engine_or_session.get_bind() if isinstance(engine_or_session, Session) else engine_or_session
    return bind.dialect.name == "sqlite"


class Database:
    """An engine plus its session factory, with read/write transaction helpers."""

    def __init__(self, engine: Engine, *, write_lock: bool | None = None):
        self.engine = engine
        self.sessionmaker = make_sessionmaker(engine)
        if write_lock is None:
            write_lock = os.environ.get("DOJO_SQLITE_WRITE_LOCK", "1") != "0"
        self._local = threading.local()
        self._lock_path = (engine.url.database + "-writelock"
                           if write_lock and fcntl is not None and engine.dialect.name == "sqlite" else None)

    @property
    def url(self) -> str:
        return self.engine.url.render_as_string(hide_password=True)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @contextlib.contextmanager
    def write(self) -> Iterator[Session]:
        """One write transaction (BEGIN IMMEDIATE on SQLite); commit on success, rollback on error."""
        with translate_errors(self.engine), self._write_turn():
            with self.sessionmaker(execution_options={_BEGIN_OPTION: "IMMEDIATE"}) as s, s.begin():
                yield s

    @contextlib.contextmanager
    def _write_turn(self) -> Iterator[None]:
        """SQLite: queue writers on an flock of ``<db>-writelock`` before BEGIN IMMEDIATE. A
        writer blocked on SQLite's lock polls it with sleeps of up to 100 ms, so under many
        writers the tail latency is the poll interval; a blocked flock wakes as soon as the lock
        is free. The kernel drops the flock if the process dies (kill -9 included)."""
        if self._lock_path is None:
            yield
            return
        if getattr(self._local, "writing", False):
            raise StorageError("db.write() inside another db.write() in the same thread would wait for "
                               "itself forever. Fix: do both in the outer transaction")
        fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            self._local.writing = True
            yield
        finally:
            self._local.writing = False
            os.close(fd)  # releases the flock

    @contextlib.contextmanager
    def read(self) -> Iterator[Session]:
        """One read transaction (a consistent snapshot), ended on exit without committing.
        Loaded objects stay readable afterwards (detached, not expired)."""
        with translate_errors(self.engine):
            with self.sessionmaker() as s:
                yield s

    def dispose(self) -> None:
        self.engine.dispose()


@contextlib.contextmanager
def translate_errors(engine: Engine) -> Iterator[None]:
    """Turn "file is not a database" / connection refused into a StorageError with the fix."""
    try:
        yield
    except DBAPIError as e:
        raise _translate(engine, e) from e


def _translate(engine: Engine, e: DBAPIError) -> Exception:
    orig = e.orig
    msg = str(orig)
    if engine.dialect.name == "sqlite" and isinstance(orig, sqlite3.DatabaseError):
        low = msg.lower()
        if "not a database" in low or "malformed" in low or "disk image" in low:
            return StorageError(corrupt_message(engine.url.database, msg))
        if "unable to open" in low:
            return StorageError(f"cannot open SQLite database {engine.url.database}: {msg}. Fix: check "
                                "that the file and its folder exist and are writable, or set DOJO_DB")
    if engine.dialect.name == "postgresql" and isinstance(e, OperationalError):
        return StorageError(f"cannot connect to PostgreSQL at {engine.url.render_as_string(hide_password=True)}: "
                            f"{msg.strip()}. Fix: start the server, check host/port/user/password/database "
                            "in DATABASE_URL, or unset DATABASE_URL to use the local SQLite file")
    return e


# --- migrations -----------------------------------------------------------------------------

def alembic_config(engine: Engine | None = None):
    """An Alembic Config pointing at the migrations inside this package (works from any cwd)."""
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    if engine is not None:
        cfg.set_main_option("sqlalchemy.url", engine.url.render_as_string(hide_password=False).replace("%", "%%"))
    return cfg


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Run the migrations to ``revision`` on ``engine``. Safe when several processes start at
    once: SQLite serialises them with BEGIN IMMEDIATE, PostgreSQL with an advisory lock."""
    from alembic import command

    cfg = alembic_config(engine)
    sqlite = engine.dialect.name == "sqlite"
    with translate_errors(engine):
        conn_cm = engine.connect()
        with conn_cm as conn:
            raw = conn.connection.dbapi_connection if sqlite else None
            if sqlite:
                conn = conn.execution_options(**{_BEGIN_OPTION: "IMMEDIATE"})
                # SQLite's procedure for schema changes: foreign keys off (outside a transaction,
                # else it is a no-op). A migration that copies a table (batch mode) drops the
                # old one, and with them on that DROP's implicit DELETE would run ON DELETE SET
                # NULL on every row pointing at it (episodes.job_id lost its job). Checked before
                # the commit and switched back on below.
                raw.execute("PRAGMA foreign_keys = OFF")
            try:
                with conn.begin():
                    if engine.dialect.name == "postgresql":
                        conn.execute(text("SELECT pg_advisory_xact_lock(47110815)"))
                    cfg.attributes["connection"] = conn
                    command.upgrade(cfg, revision)
                    if sqlite:
                        bad = conn.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
                        if bad:
                            raise StorageError(f"migration to {revision} left rows pointing at missing rows "
                                               f"({bad[:5]}); nothing was changed. Report it with the file")
            finally:
                if sqlite:
                    raw.execute("PRAGMA foreign_keys = ON")


def current_revision(engine: Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with translate_errors(engine), engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def head_revision() -> str:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def init_db(url: str | os.PathLike | None = None, **engine_kwargs) -> Database:
    """Open the database at ``url`` (see ``resolve_url``), migrate it to head, return it."""
    engine = make_engine(url, **engine_kwargs)
    try:
        upgrade(engine)
    except Exception:
        engine.dispose()
        raise
    return Database(engine)


def open_db(url: str | os.PathLike | None = None, **engine_kwargs) -> Database:
    """Open without migrating; raise StorageError if the schema is not at head."""
    engine = make_engine(url, **engine_kwargs)
    rev, head = current_revision(engine), head_revision()
    if rev != head:
        engine.dispose()
        raise StorageError(f"database {engine.url.render_as_string(hide_password=True)} is at schema "
                           f"revision {rev}, code expects {head}. Fix: run `python -m storage upgrade` "
                           "(or storage.db.init_db())")
    return Database(engine)
