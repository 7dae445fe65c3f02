"""Dojo in one command (scripts/run.sh calls this): database, first admin, demo task, the
preparation jobs on a fresh machine, then the worker and the Streamlit app on localhost.
Ctrl-C (or SIGTERM) stops both cleanly.

    python scripts/launch.py [--port 8501] [--telemetry-port 8765] [--host 127.0.0.1]
                             [--no-worker] [--no-prepare]

Environment: DOJO_DATA (data folder, default ./data), DOJO_DB or DATABASE_URL (default
<data>/dojo.sqlite), DOJO_ADMIN_PASSWORD (the first admin's password; without it one is
generated and printed once), DOJO_PREP_DEMOS / DOJO_PREP_EPOCHS / DOJO_PREP_SFT_MINUTES /
DOJO_PREP_EVAL_EVERY / DOJO_PREP_EVAL_EPISODES / DOJO_PREP_LR /
DOJO_FLEET_SIZE (sizes of the preparation chain, see ui/bootstrap.py).

The preparation chain (demonstrations -> Stage-1 SFT -> a practice session) is a series of
ordinary jobs; this launcher enqueues each one when the previous is done (its state is in
the jobs table, so a restart continues it). The worker only runs jobs; it does not chain them.
"""
from __future__ import annotations

import argparse
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from storage import StorageError, init_db  # noqa: E402
from ui import bootstrap  # noqa: E402

STOP_GRACE_S = 15.0
RESTART_BACKOFF_S = (2, 5, 10, 30)


def log(msg: str) -> None:
    print(f"[dojo] {msg}", flush=True)


def ensure_worker_secret(data: Path) -> None:
    """Make the worker secret (``<data>/worker.secret``, 0600; storage/credentials.py) before
    either child starts, so the worker and the web app read the same one. Children find it
    through DOJO_DATA: it never travels on a command line."""
    from storage.credentials import load_worker_secret

    load_worker_secret(data)


def port_free(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


class Child:
    """A supervised subprocess: started, restarted with backoff if it dies, stopped with
    SIGTERM then SIGKILL after a grace period."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], restart: bool):
        self.name, self.argv, self.env, self.restart = name, argv, env, restart
        self.proc: subprocess.Popen | None = None
        self.failures = 0
        self.next_start = 0.0

    def start(self) -> None:
        self.proc = subprocess.Popen(self.argv, cwd=ROOT, env=self.env)
        log(f"{self.name} started (pid {self.proc.pid})")

    def poll(self) -> bool:
        """False when it died and will not be restarted."""
        if self.proc is None:
            if time.monotonic() >= self.next_start:
                self.start()
            return True
        rc = self.proc.poll()
        if rc is None:
            return True
        log(f"{self.name} exited with code {rc}")
        self.proc = None
        if not self.restart:
            return False
        wait = RESTART_BACKOFF_S[min(self.failures, len(RESTART_BACKOFF_S) - 1)]
        self.failures += 1
        self.next_start = time.monotonic() + wait
        log(f"restarting {self.name} in {wait} s (its jobs are re-claimed where they stopped)")
        return True

    def terminate(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)

    def wait_or_kill(self, deadline: float) -> None:
        if self.proc is None:
            return
        try:
            self.proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log(f"{self.name} did not stop within {STOP_GRACE_S:.0f} s; killing it")
            self.proc.kill()
            self.proc.wait()


def make_children(args: argparse.Namespace, env: dict[str, str], db_url: str, data: Path) -> list[Child]:
    """The worker (``python -m core.worker``, restarted if it dies; unless ``--no-worker``)
    and the web app."""
    children: list[Child] = []
    if not args.no_worker:
        if (ROOT / "core" / "worker" / "__main__.py").exists():
            children.append(Child("worker", [sys.executable, "-m", "core.worker", "--db", db_url, "--data", str(data),
                                             "--telemetry-port", str(args.telemetry_port), "--host", args.host],
                                  env, restart=True))
        else:
            log("core/worker/__main__.py is not there: jobs stay queued until a worker runs")
    children.append(Child("web app", [sys.executable, "-m", "streamlit", "run", str(ROOT / "app.py"),
                                      "--server.port", str(args.port), "--server.address", args.host,
                                      "--server.headless", "true", "--browser.gatherUsageStats", "false"],
                          env, restart=False))
    return children


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--port", type=int, default=int(os.environ.get("DOJO_PORT", 8501)), help="web app port")
    ap.add_argument("--host", default=os.environ.get("DOJO_HOST", "127.0.0.1"),
                    help="address to serve on (0.0.0.0 in a container)")
    ap.add_argument("--telemetry-port", type=int, default=int(os.environ.get("DOJO_TELEMETRY_PORT", 8765)))
    ap.add_argument("--no-worker", action="store_true", help="serve the app only (a worker runs elsewhere)")
    ap.add_argument("--no-prepare", action="store_true", help="do not enqueue the preparation jobs")
    args = ap.parse_args(argv)

    data = Path(os.environ.get("DOJO_DATA", "data"))
    data = (data if data.is_absolute() else ROOT / data).resolve()
    data.mkdir(parents=True, exist_ok=True)
    db_url = os.environ.get("DATABASE_URL") or os.environ.get("DOJO_DB") or str(data / "dojo.sqlite")
    for what, port in (("web app", args.port), ("telemetry", args.telemetry_port)):
        if not port_free(args.host, port):
            log(f"port {port} ({what}) is in use on {args.host}. Fix: stop what uses it, or pass "
                f"--{'port' if what == 'web app' else 'telemetry-port'} N")
            return 2
    try:
        db = init_db(db_url)
    except StorageError as e:
        log(str(e))
        return 2
    cfg = bootstrap.PrepConfig.from_env()
    with db.write() as s:
        generated = bootstrap.ensure_admin(s, os.environ.get("DOJO_ADMIN_PASSWORD"))
        task = bootstrap.seed_demo_task(s, fleet_size=cfg.fleet_size)
        task_id = task.id
        fresh = bootstrap.needs_preparation(s, task_id)
    if generated:
        log("=" * 64)
        log(f"first admin created: user 'admin', password '{generated}'")
        log("it is shown only this once; change it on the Users page")
        log("=" * 64)
    prepare = not args.no_prepare
    if fresh and prepare:
        with db.write() as s:
            bootstrap.advance_preparation(s, task_id, data, cfg, start=True)
        log(f"fresh machine: preparing the demo task ({cfg.demos} demonstrations -> Stage-1 SFT "
            f"(<= {cfg.sft_minutes:g} min) -> practice on {cfg.fleet_size} robots); progress on Tasks & fleet")

    ensure_worker_secret(data)
    env = {**os.environ, "DOJO_DATA": str(data), "DOJO_TELEMETRY_PORT": str(args.telemetry_port),
           "PYTHONUNBUFFERED": "1"}
    env.setdefault("MUJOCO_GL", "egl")
    env.setdefault("PYOPENGL_PLATFORM", env["MUJOCO_GL"] if env["MUJOCO_GL"] in ("egl", "osmesa") else "egl")
    if "DATABASE_URL" not in os.environ:
        env["DOJO_DB"] = db_url
    children = make_children(args, env, db_url, data)

    stopping = False

    def on_signal(signum, _frame):
        nonlocal stopping
        if not stopping:
            log(f"{signal.Signals(signum).name}: stopping the worker and the web app")
        stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    shown = "localhost" if args.host in ("127.0.0.1", "0.0.0.0") else args.host
    log(f"open http://{shown}:{args.port}  (Ctrl-C stops everything)")
    try:
        for c in children:
            c.start()
        last_prep = 0.0
        while not stopping:
            if not all(c.poll() for c in children):
                break
            if prepare and time.monotonic() - last_prep > 2.0:
                last_prep = time.monotonic()
                try:
                    with db.write() as s:
                        did = bootstrap.advance_preparation(s, task_id, data, cfg)
                    if did:
                        log(f"preparation: {did}")
                except Exception as e:  # noqa: BLE001 - a busy database must not stop the launcher
                    log(f"preparation check failed ({e}); retrying")
            time.sleep(0.25)
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not orphan children
        for c in children:
            c.terminate()
        deadline = time.monotonic() + STOP_GRACE_S
        for c in children:
            c.wait_or_kill(deadline)
        db.dispose()
        log("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
