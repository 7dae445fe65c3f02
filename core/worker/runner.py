"""The Dojo worker: claims jobs from the database and runs them; records practice episodes,
checkpoints and metrics; serves live telemetry and remote robots on a websocket endpoint.

    python -m core.worker [--db URL] [--data DIR] [--name NAME] [--host 127.0.0.1]
                          [--telemetry-port 8765 | --no-server] [--secret-file F] [--exit-when-idle]
    python -m core.cli worker ...          (the same)

Jobs (``jobs`` table, enqueued by the UI with ``storage.jobs.enqueue_job``; params in
``core.worker.params``, printed by ``python -m core.worker --params``):

- ``demos``: scripted-expert demonstrations into a dataset directory (``core.learning.demos``).
- ``sft``: Stage 1 (``core.learning.sft.train_sft``); its best policy becomes an ``sft`` checkpoint row.
- ``practice``: Stage 2 on a fleet (``core.learning.practice.run_practice``) for a practice session:
  every episode is written at its end, with its steps and JPEG frames, in ONE transaction
  (``storage.episodes.finish_episode``) under the uid ``job<J>-it<IIII>-seed<S>``, so an
  iteration replayed after a crash writes nothing twice; every iteration's checkpoint becomes
  an ``si`` row whose parent is the one it was trained from, its statistics go to
  ``metrics``, and it is promoted only if its evaluated success is not worse than the
  promoted one's (``promote_tolerance``). Supervisor commands are polled from the database
  (at most every ``poll_s`` = 0.15 s, one read) and take effect at the robot's next control
  step: session pause (all robots hold), resume, stop (the job ends); robot pause (that robot
  holds mid-episode), stop (its episode ends now, ``stopped``; it then holds), resume
  ("online"); an override on a running episode (success: the episode ends as a success;
  failure: it continues and its outcome is failure) and on a finished episode still in the
  learner's buffer (``outcome_override``). Not covered: the evaluation rollouts a practice job
  runs every ``eval_every`` iterations (and the detector check before the first) use every
  robot, paused ones included; with real robots set ``eval_every=0`` and use ``eval`` jobs.
- ``eval``: evaluate a checkpoint (``core.cli.evaluate_checkpoint``), store its success and
  optionally promote it.

Crash safety: at start the worker calls ``recover_worker`` (its jobs left running go back to
the queue, its running episodes are marked aborted) and periodically ``requeue_stale_jobs``
(for workers that died elsewhere). A re-claimed practice job resumes from the last
completed iteration in its run directory (``<data>/runs/practice-job<J>`` unless ``out``).
A job that raises is marked failed with the error, a suggested fix and the traceback; the
worker goes on with the next job.

What the fleet is served: a practice job starts from ``checkpoint_id``/``policy_checkpoint``
if given, else from the task's promoted checkpoint; an eval job defaults to the promoted one.
During practice the robots act with the learner's current weights (on-policy REINFORCE);
telemetry shows which checkpoint row that is.
"""
from __future__ import annotations

import logging
import socket
import threading
import time
from pathlib import Path
from typing import Any

from sqlalchemy import select, update

from core.method.jobs import JOB_KINDS
from core.worker.checkpoints import jsonable
from core.worker.errors import describe_error
from core.worker.job import JobContext, JobLogHandler, JobStopped
from core.worker.jobs import demos, evaluate, practice, refine, sft
from storage import repo
from storage.auth import prune_login_throttle
from storage.db import Database
from storage.models import Job, Robot, Task

log = logging.getLogger("dojo.worker")

JOB_RUNNERS = {"demos": demos.run, "sft": sft.run, "practice": practice.run, "eval": evaluate.run,
               "refine": refine.run}


class Worker:
    def __init__(self, db: Database, *, name: str | None = None, data_dir: str | Path = "data",
                 server: Any = None, telemetry: Any = None, hub: Any = None, poll_s: float = 0.15,
                 heartbeat_s: float = 2.0, stale_s: float = 120.0, idle_sleep_s: float = 1.0):
        self.db = db
        self.name = name or f"{socket.gethostname()}:0"
        self.data_dir = Path(data_dir)
        self.server, self.telemetry, self.hub = server, telemetry, hub
        self.poll_s, self.heartbeat_s, self.stale_s, self.idle_sleep_s = poll_s, heartbeat_s, stale_s, idle_sleep_s
        self.stopping = threading.Event()
        self._closed = threading.Event()
        self._ctx: JobContext | None = None
        self._robot_changes: list[tuple[str, bool]] = []
        self._lock = threading.Lock()
        self._house: threading.Thread | None = None
        if hub is not None:
            hub.on_change = self._on_robot_change

    # --- lifecycle -----------------------------------------------------------------------
    def recover(self) -> dict[str, list[int]]:
        with self.db.write() as s:
            out = repo.recover_worker(s, self.name)
        with self.db.write() as s:
            out["stale_jobs"] = repo.requeue_stale_jobs(s, older_than_s=self.stale_s)
        if any(out.values()):
            log.info("recovered: %s", out)
        return out

    def stop(self) -> None:
        self.stopping.set()

    def run(self, *, exit_when_idle: bool = False, max_jobs: int | None = None) -> int:
        """Claim and run jobs until stopped (or idle, or ``max_jobs``). Returns jobs handled."""
        self.recover()
        self._closed.clear()
        self._house = threading.Thread(target=self._housekeeping, name="dojo-heartbeat", daemon=True)
        self._house.start()
        handled, last_stale = 0, time.monotonic()
        try:
            while not self.stopping.is_set():
                if time.monotonic() - last_stale > self.stale_s / 4:
                    with self.db.write() as s:
                        repo.requeue_stale_jobs(s, older_than_s=self.stale_s)
                        prune_login_throttle(s)  # lapsed failed-log-in counts: the log-in path never scans
                    last_stale = time.monotonic()
                with self.db.write() as s:
                    job = repo.claim_job(s, self.name, kinds=JOB_KINDS)
                    ctx = None if job is None else JobContext(job.id, job.kind, dict(job.params or {}),
                                                              job.session_id, job.task_id, job.attempts)
                if ctx is None:
                    if exit_when_idle:
                        break
                    self.stopping.wait(self.idle_sleep_s)
                    continue
                self.run_job(ctx)
                handled += 1
                if max_jobs is not None and handled >= max_jobs:
                    break
        finally:
            self._closed.set()
        return handled

    def run_job(self, ctx: JobContext) -> None:
        handler = JobLogHandler(ctx)
        logging.getLogger().addHandler(handler)
        log.info("job %d (%s) attempt %d: %s", ctx.job_id, ctx.kind, ctx.attempts, ctx.params)
        self._ctx = ctx
        try:
            result = JOB_RUNNERS[ctx.kind](self, ctx)
            with self.db.write() as s:
                repo.finish_job(s, ctx.job_id, self.name, result=jsonable(result), message=ctx.message or "done",
                                log_tail=ctx.log_text())
            log.info("job %d done", ctx.job_id)
        except JobStopped as e:
            if e.reason == "worker stopping":
                self._release(ctx.job_id, "worker stopped; re-queued")
            elif e.reason == "session stopped":
                with self.db.write() as s:
                    repo.finish_job(s, ctx.job_id, self.name, message=f"session stopped by a supervisor; "
                                    f"{ctx.message}".strip("; "), result=jsonable(ctx.state or {}),
                                    log_tail=ctx.log_text())
            log.info("job %d stopped: %s", ctx.job_id, e.reason)
        except (Exception, SystemExit) as e:  # noqa: BLE001 - one bad job must not stop the worker
            log.error("job %d failed: %s", ctx.job_id, e)
            try:
                with self.db.write() as s:
                    repo.fail_job(s, ctx.job_id, self.name, describe_error(ctx.kind, e), log_tail=ctx.log_text())
            except Exception:  # noqa: BLE001
                log.exception("could not record the failure of job %d", ctx.job_id)
        finally:
            self._ctx = None
            logging.getLogger().removeHandler(handler)

    def _release(self, job_id: int, message: str) -> None:
        with self.db.write() as s:
            s.execute(update(Job).where(Job.id == job_id, Job.claimed_by == self.name, Job.status == "running")
                      .values(status="queued", claimed_by=None, message=message)
                      .execution_options(synchronize_session=False))

    def _housekeeping(self) -> None:
        while not self._closed.wait(self.heartbeat_s):
            try:
                ctx = self._ctx
                if ctx is not None:
                    with self.db.write() as s:
                        alive = repo.heartbeat(s, ctx.job_id, self.name, progress=ctx.progress,
                                               message=ctx.message or None, state=ctx.state,
                                               log_tail=ctx.log_text() or None)
                    if not alive:
                        ctx.cancelled.set()
                self._sync_robots()
            except Exception:  # noqa: BLE001 - retried at the next beat
                log.exception("heartbeat failed")

    def _on_robot_change(self, name: str, connected: bool) -> None:  # websocket loop thread
        with self._lock:
            self._robot_changes.append((name, connected))

    def _sync_robots(self) -> None:
        with self._lock:
            changes, self._robot_changes = self._robot_changes, []
        if not changes:
            return
        with self.db.write() as s:
            for name, connected in changes:
                r = self.hub.robots.get(name) if self.hub is not None else None
                if connected and r is not None and r.connected:
                    repo.register_robot(s, name, "remote", spec=r.spec.to_json(), worker=self.name)
                elif not connected:
                    row = s.scalar(select(Robot).where(Robot.name == name))
                    if row is not None and row.status == "online":
                        row.status = "offline"

    def should_stop(self, ctx: JobContext) -> bool:
        return self.stopping.is_set() or ctx.cancelled.is_set()

    def stop_reason(self, ctx: JobContext) -> JobStopped:
        return JobStopped("worker stopping" if self.stopping.is_set() else "cancelled")

    def task(self, task_id: int | None) -> Task | None:
        if task_id is None:
            return None
        with self.db.read() as s:
            return repo.get_task(s, task_id)
