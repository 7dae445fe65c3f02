"""``python -m storage upgrade | revision | create-user NAME ROLE | robot-token ...``: database
administration. ``robot-token create LABEL [--robot NAME]`` prints a new robot token once (only
its SHA-256 is stored); ``robot-token list``; ``robot-token revoke ID``."""
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
    rt = sub.add_parser("robot-token", help="create, list or revoke the tokens remote robots register with")
    rts = rt.add_subparsers(dest="token_cmd", required=True)
    rc = rts.add_parser("create", help="create a token and print it (once)")
    rc.add_argument("label", help="where the token will live, e.g. 'arm-1 lab PC'")
    rc.add_argument("--robot", default=None, help="only a robot of this name may use it (default: any robot)")
    rts.add_parser("list", help="every token: id, prefix, label, robot, state")
    rr = rts.add_parser("revoke", help="revoke a token (its robots are disconnected within seconds)")
    rr.add_argument("id", type=int)
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
        elif args.cmd == "robot-token":
            return robot_token(init_db(args.db), args)
    except (StorageError, repo.AuthError, repo.CredentialError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


def robot_token(db, args) -> int:
    if args.token_cmd == "create":
        with db.write() as s:
            row, token = repo.create_robot_token(s, args.label, robot_name=args.robot)
            ident = row.id
        # The token on stdout only (pipe it to a file the robot reads); the note on stderr.
        print(f"robot token {ident} ({args.label}); shown once, store it now:", file=sys.stderr)
        print(token)
    elif args.token_cmd == "list":
        with db.read() as s:
            for t in repo.list_robot_tokens(s):
                state = f"revoked {t.revoked_at:%Y-%m-%d %H:%M}" if t.revoked_at else "active"
                print(f"{t.id}\t{t.prefix}...\t{t.label}\t{t.robot_name or '(any robot)'}\t{state}")
    else:
        with db.write() as s:
            repo.revoke_robot_token(s, args.id)
        print(f"robot token {args.id} revoked")
    return 0


if __name__ == "__main__":
    sys.exit(main())
