"""The job queue: enqueue (UI), claim / heartbeat / finish / fail (worker), crash recovery.

Claiming is atomic across any number of worker processes and machines:
- SQLite: call it inside ``Database.write()`` (BEGIN IMMEDIATE, one writer at a time) and the
  UPDATE is conditional (``WHERE id = ? AND status = 'queued'``, rowcount checked), so even a
  caller in a plain transaction can never take a job someone else holds.
- PostgreSQL: ``SELECT ... FOR UPDATE SKIP LOCKED`` picks a row no one else is claiming, and
  the same conditional UPDATE confirms it.

Every worker-side call names the worker (a stable id such as "hostname:0" that survives a
restart) and only acts if the job is still running *and* held by that worker, so a worker
whose job was re-queued after a stall, or cancelled from the UI, learns it from the return
value (False) and stops instead of overwriting someone else's work.
"""
from __future__ import annotations

import datetime as dt
from typing import Any, Iterable, Optional

from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import Session

from storage.auth import Actor, audit, check_actor
from storage.models import JOB_KINDS, JOB_STATUSES, Job, utcnow

DEFAULT_MAX_ATTEMPTS = 20  # claims before a job that keeps killing its worker is failed
DEFAULT_STALE_S = 120.0


class JobError(RuntimeError):
    pass


def enqueue_job(s: Session, kind: str, params: Optional[dict[str, Any]] = None, *,
                session_id: Optional[int] = None, task_id: Optional[int] = None, priority: int = 0,
                max_attempts: int = DEFAULT_MAX_ATTEMPTS, actor: Actor = None) -> Job:
    by = check_actor(actor, "enqueue_job")
    if kind not in JOB_KINDS:
        raise ValueError(f"job kind must be one of {JOB_KINDS}, got {kind!r}")
    if max_attempts < 1:
        raise ValueError(f"max_attempts must be >= 1, got {max_attempts}")
    job = Job(kind=kind, params=dict(params or {}), status="queued", priority=priority,
              session_id=session_id, task_id=task_id, max_attempts=max_attempts, created_by=by)
    s.add(job)
    s.flush()
    audit(s, actor, "enqueue_job", job, {"kind": kind, "params": job.params})
    return job


def claim_job(s: Session, worker: str, kinds: Optional[Iterable[str]] = None) -> Optional[Job]:
    """Take the highest-priority, oldest queued job (optionally of ``kinds``) for ``worker``.
    Returns the Job (status running, attempts incremented) or None if there is none."""
    kinds = tuple(kinds) if kinds is not None else None
    postgres = s.get_bind().dialect.name == "postgresql"
    for _ in range(10):  # only loops when another claimer won the race for the same row
        q = select(Job.id).where(Job.status == "queued").order_by(Job.priority.desc(), Job.id).limit(1)
        if kinds:
            q = q.where(Job.kind.in_(kinds))
        if postgres:
            q = q.with_for_update(skip_locked=True)
        job_id = s.scalar(q)
        if job_id is None:
            return None
        now = utcnow()
        res = s.execute(update(Job).where(Job.id == job_id, Job.status == "queued")
                        .values(status="running", claimed_by=worker, heartbeat_at=now, started_at=now,
                                attempts=Job.attempts + 1, error=None)
                        .execution_options(synchronize_session=False))
        if res.rowcount == 1:
            return s.get(Job, job_id, populate_existing=True)
    return None


def _held(job_id: int, worker: str):
    return and_(Job.id == job_id, Job.claimed_by == worker, Job.status == "running")


def heartbeat(s: Session, job_id: int, worker: str, *, progress: Optional[float] = None,
              message: Optional[str] = None, state: Optional[dict[str, Any]] = None,
              log_tail: Optional[str] = None) -> bool:
    """Refresh the heartbeat (and progress in [0, 1], message, resume state). False means the
    job is no longer this worker's to run (cancelled, or re-queued after a stall): stop it."""
    values: dict[str, Any] = {"heartbeat_at": utcnow()}
    if progress is not None:
        values["progress"] = min(1.0, max(0.0, float(progress)))
    if message is not None:
        values["message"] = message
    if state is not None:
        values["state"] = state
    if log_tail is not None:
        values["log_tail"] = log_tail
    res = s.execute(update(Job).where(_held(job_id, worker)).values(**values)
                    .execution_options(synchronize_session=False))
    return res.rowcount == 1


set_progress = heartbeat


def finish_job(s: Session, job_id: int, worker: str, *, result: Optional[dict[str, Any]] = None,
               message: Optional[str] = None, log_tail: Optional[str] = None) -> bool:
    values: dict[str, Any] = {"status": "done", "progress": 1.0, "finished_at": utcnow(), "heartbeat_at": utcnow()}
    if result is not None:
        values["result"] = result
    if message is not None:
        values["message"] = message
    if log_tail is not None:
        values["log_tail"] = log_tail
    res = s.execute(update(Job).where(_held(job_id, worker)).values(**values)
                    .execution_options(synchronize_session=False))
    return res.rowcount == 1


def fail_job(s: Session, job_id: int, worker: str, error: str, *, retry: bool = False,
             log_tail: Optional[str] = None) -> bool:
    """Record the error text (e.g. a traceback) for the UI. ``retry=True`` re-queues the job
    while it has attempts left."""
    job = s.get(Job, job_id, populate_existing=True)
    if job is None or job.status != "running" or job.claimed_by != worker:
        return False
    if log_tail is not None:
        job.log_tail = log_tail
    if retry and job.attempts < job.max_attempts:
        job.status, job.claimed_by, job.error = "queued", None, error
    else:
        job.status, job.error, job.finished_at = "failed", error, utcnow()
    s.flush()
    return True


def cancel_job(s: Session, job_id: int, *, actor: Actor = None, reason: Optional[str] = None) -> Job:
    """Cancel a queued or running job; a running one stops at its next heartbeat."""
    check_actor(actor, "cancel_job")
    job = s.get(Job, job_id, populate_existing=True)
    if job is None:
        raise JobError(f"no job {job_id}")
    if job.status in ("done", "failed", "cancelled"):
        raise JobError(f"job {job_id} is already {job.status}")
    old = job.status
    job.status, job.finished_at = "cancelled", utcnow()
    if reason:
        job.message = reason
    audit(s, actor, "cancel_job", job, {"from": old, "reason": reason})
    return job


def requeue_job(s: Session, job_id: int, *, actor: Actor = None) -> Job:
    """Put a failed or cancelled job back in the queue (a person retrying it)."""
    check_actor(actor, "enqueue_job")
    job = s.get(Job, job_id, populate_existing=True)
    if job is None:
        raise JobError(f"no job {job_id}")
    if job.status not in ("failed", "cancelled"):
        raise JobError(f"job {job_id} is {job.status}; only failed or cancelled jobs can be re-queued")
    job.status, job.claimed_by, job.finished_at, job.attempts = "queued", None, None, 0
    audit(s, actor, "requeue_job", job)
    return job


def _release(s: Session, jobs: list[Job], why: str) -> list[int]:
    out = []
    for job in jobs:
        if job.attempts >= job.max_attempts:
            job.status, job.finished_at = "failed", utcnow()
            job.error = f"gave up after {job.attempts} attempts; last: {why}"
        else:
            job.status, job.message = "queued", f"re-queued: {why}"
        job.claimed_by = None
        out.append(job.id)
        audit(s, None, "requeue_job", job, {"why": why, "attempts": job.attempts, "status": job.status})
    s.flush()
    return out


def requeue_stale_jobs(s: Session, older_than_s: float = DEFAULT_STALE_S) -> list[int]:
    """Crash recovery across workers: running jobs whose heartbeat is older than
    ``older_than_s`` go back to the queue (or fail once out of attempts). Returns their ids."""
    cutoff = utcnow() - dt.timedelta(seconds=older_than_s)
    q = select(Job).where(Job.status == "running",
                          or_(Job.heartbeat_at < cutoff, and_(Job.heartbeat_at.is_(None), Job.started_at < cutoff)))
    if s.get_bind().dialect.name == "postgresql":
        q = q.with_for_update(skip_locked=True)
    stale = list(s.scalars(q))
    return _release(s, stale, f"no heartbeat for {older_than_s:.0f} s")


def recover_worker(s: Session, worker: str) -> dict[str, list[int]]:
    """Call once when worker ``worker`` (re)starts, before claiming: its jobs left running by a
    crash go back to the queue and its running episodes are marked aborted."""
    from storage.episodes import abort_running_episodes

    mine = list(s.scalars(select(Job).where(Job.status == "running", Job.claimed_by == worker)))
    requeued = _release(s, mine, f"worker {worker} restarted")
    aborted = abort_running_episodes(s, worker=worker, reason=f"worker {worker} restarted")
    return {"requeued_jobs": requeued, "aborted_episodes": aborted}


def get_job(s: Session, job_id: int) -> Optional[Job]:
    return s.get(Job, job_id, populate_existing=True)


def list_jobs(s: Session, *, status: Optional[str | Iterable[str]] = None, kind: Optional[str] = None,
              session_id: Optional[int] = None, limit: int = 100) -> list[Job]:
    q = select(Job).order_by(Job.id.desc()).limit(limit)
    if status is not None:
        statuses = (status,) if isinstance(status, str) else tuple(status)
        bad = set(statuses) - set(JOB_STATUSES)
        if bad:
            raise ValueError(f"unknown job status {sorted(bad)}; statuses are {JOB_STATUSES}")
        q = q.where(Job.status.in_(statuses))
    if kind is not None:
        q = q.where(Job.kind == kind)
    if session_id is not None:
        q = q.where(Job.session_id == session_id)
    return list(s.scalars(q))
