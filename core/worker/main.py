"""``python -m core.worker``: the worker process, with its websocket endpoint for live
telemetry and remote robots (see ``core.worker.runner``)."""
from __future__ import annotations

import argparse
import json
import logging
import os
import signal

from core.method.jobs import JOB_KINDS
from core.worker.params import job_params_spec
from core.worker.runner import Worker, log
from storage.db import init_db


def build_parser() -> argparse.ArgumentParser:
    from core.worker import runner

    ap = argparse.ArgumentParser(prog="python -m core.worker", description=runner.__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--db", default=None, help="database URL or SQLite path (default: DATABASE_URL, DOJO_DB, "
                    "data/dojo.sqlite)")
    ap.add_argument("--data", default=os.environ.get("DOJO_DATA", "data"), help="data directory (runs, demos)")
    ap.add_argument("--name", default=os.environ.get("DOJO_WORKER_NAME"),
                    help="stable worker id (default HOSTNAME:0); give each worker on a host its own")
    ap.add_argument("--host", default=os.environ.get("DOJO_TELEMETRY_HOST", "127.0.0.1"),
                    help="interface for the websocket endpoint (0.0.0.0 to let remote robots in)")
    ap.add_argument("--telemetry-port", type=int, default=int(os.environ.get("DOJO_TELEMETRY_PORT", 8765)))
    ap.add_argument("--no-server", action="store_true", help="no websocket endpoint (no live view, no remote robots)")
    # Secrets never on the command line (ps shows it to every local user): a file or the environment.
    ap.add_argument("--secret-file", default=None, help="file holding the worker secret that signs viewer "
                    "tickets (default: DOJO_WORKER_SECRET, DOJO_WORKER_SECRET_FILE, else <data>/worker.secret, "
                    "created 0600 if missing). Robots use their own tokens: python -m storage robot-token create")
    ap.add_argument("--max-frame-bytes", type=int, default=2 * 2**20, help="largest remote-robot message accepted")
    ap.add_argument("--poll", type=float, default=0.15, help="seconds between control polls of the database")
    ap.add_argument("--heartbeat", type=float, default=2.0)
    ap.add_argument("--stale", type=float, default=120.0, help="re-queue others' jobs silent for this long")
    ap.add_argument("--threads", type=int, default=int(os.environ.get("DOJO_TORCH_THREADS", 0)),
                    help="torch CPU threads (default: half the cores; simulators need the rest)")
    ap.add_argument("--exit-when-idle", action="store_true", help="exit once the queue is empty")
    ap.add_argument("--max-jobs", type=int, default=None)
    ap.add_argument("--params", action="store_true", help="print the job params schema (JSON) and exit")
    ap.add_argument("--quiet", action="store_true")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.params:
        print(json.dumps({k: job_params_spec(k) for k in JOB_KINDS}, indent=2, default=str))
        return 0
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    import torch

    torch.set_num_threads(args.threads or max(1, (os.cpu_count() or 2) // 2))
    db = init_db(args.db)
    server = telemetry = hub = None
    if not args.no_server:
        from core.worker.access import RobotAccess, ViewerAccess
        from core.worker.remote import RemoteHub
        from core.worker.telemetry import TelemetryHub, WebsocketServer
        from storage.credentials import SECRET_FILE_ENV, load_worker_secret

        if args.secret_file:
            os.environ[SECRET_FILE_ENV] = args.secret_file
        telemetry = TelemetryHub(ViewerAccess(load_worker_secret(args.data)))
        hub = RemoteHub(RobotAccess(db), max_message_bytes=args.max_frame_bytes)
        server = WebsocketServer({"/telemetry": telemetry.handler, "/robot": hub.handler}, host=args.host,
                                 port=args.telemetry_port, max_message_bytes=args.max_frame_bytes)
        telemetry.attach(server)
        hub.attach(server)
        server.start()
        log.info("websocket endpoint: %s (browsers, viewer tickets), %s (robots, robot tokens)",
                 server.url("/telemetry"), server.url("/robot"))
    worker = Worker(db, name=args.name, data_dir=args.data, server=server, telemetry=telemetry, hub=hub,
                    poll_s=args.poll, heartbeat_s=args.heartbeat, stale_s=args.stale)

    def on_signal(signum, _frame):
        log.warning("signal %d: finishing the current step, re-queueing the running job", signum)
        worker.stop()
        signal.signal(signum, signal.SIG_DFL)  # a second signal ends the process at once

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        n = worker.run(exit_when_idle=args.exit_when_idle, max_jobs=args.max_jobs)
    finally:
        if server is not None:
            server.stop()
        db.dispose()
    log.info("worker %s: %d job(s) handled", worker.name, n)
    return 0
