"""Dojo's database layer: SQLAlchemy 2.0 models, engines/sessions, Alembic migrations and
the repository functions the worker and the UI call. It imports no torch, MuJoCo or
Streamlit, so the UI can use it alone.

    from storage import init_db, repo
    db = init_db()                       # SQLite file (DOJO_DB) or DATABASE_URL, migrated to head
    with db.write() as s:
        job = repo.claim_job(s, worker="host:0")
"""
from storage.db import Database, StorageError, init_db, make_engine, open_db  # noqa: F401
