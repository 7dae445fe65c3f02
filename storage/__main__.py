"""``python -m storage upgrade | revision | create-user NAME ROLE``: database administration."""
from __future__ import annotations

import argparse
import getpass
import sys

from storage import repo
from storage.db import StorageError, current_revision, head_revision, init_db, make_engine


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m storage", description=__doc__)
    p.add_argument("--db", help="database URL or SQLite path (default: DATABASE_URL, DOJO_DB, data/dojo.sqlite)")
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("upgrade", help="migrate the database to the newest schema")
    sub.add_parser("revision", help="print the database's and the code's schema revision")
    cu = sub.add_parser("create-user", help="create a user (asks for the password)")
    cu.add_argument("username")
    cu.add_argument("role", choices=["viewer", "reviewer", "supervisor", "admin"])
    args = p.parse_args(argv)
    try:
        if args.cmd == "upgrade":
            db = init_db(args.db)
            print(f"{db.url}: at revision {current_revision(db.engine)}")
        elif args.cmd == "revision":
            print(f"database: {current_revision(make_engine(args.db))}  code: {head_revision()}")
        elif args.cmd == "create-user":
            db = init_db(args.db)
            password = getpass.getpass(f"password for {args.username}: ")
            with db.write() as s:
                repo.create_user(s, args.username, password, args.role)
            print(f"created {args.username} ({args.role})")
    except (StorageError, repo.AuthError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
