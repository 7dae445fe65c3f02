"""Alembic environment for Dojo. Used by storage.db.upgrade (which passes an open
connection) and by the `alembic` command line (alembic.ini at the repository root)."""
from __future__ import annotations

from alembic import context

from storage.models import Base

config = context.config
target_metadata = Base.metadata


def _configure(connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        # SQLite cannot ALTER most things; batch mode rebuilds the table instead.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _configure(connection)
        with context.begin_transaction():
            context.run_migrations()
        return
    from storage.db import make_engine

    engine = make_engine(config.get_main_option("sqlalchemy.url") or None)
    try:
        with engine.connect() as conn:
            # As storage.db.upgrade does: on SQLite, foreign keys off while a batch migration
            # copies a table (its DROP would otherwise run ON DELETE actions on the rows that
            # point at it), checked before the commit.
            raw = conn.connection.dbapi_connection if conn.dialect.name == "sqlite" else None
            if raw is not None:
                raw.execute("PRAGMA foreign_keys = OFF")
            try:
                _configure(conn)
                with context.begin_transaction():
                    context.run_migrations()
                    if raw is not None and conn.exec_driver_sql("PRAGMA foreign_key_check").fetchall():
                        raise RuntimeError("the migration left rows pointing at missing rows; rolled back")
            finally:
                if raw is not None:
                    raw.execute("PRAGMA foreign_keys = ON")
    finally:
        engine.dispose()


def run_migrations_offline() -> None:
    from storage.db import resolve_url

    context.configure(url=resolve_url(config.get_main_option("sqlalchemy.url") or None),
                      target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
