"""SQLAlchemy 2.0 typed models: the whole Dojo schema in one place.

Conventions
- Times are UTC. They are stored naive (SQLite has no time zone type) and come back as
  timezone-aware UTC ``datetime`` objects on every backend (``UTCDateTime``).
- Enumerations are short strings with a CHECK constraint (portable; no PostgreSQL ENUM
  types to migrate). The allowed values are the tuples below; use them, not literals.
- Outcomes are booleans: True = success, False = failure, None = not known (yet).

Frames: one row per stored frame in ``frames`` (episode_id, t, encoded image bytes,
usually JPEG), written in the same transaction as the episode and its steps, so a crash
can never leave an episode without its frames or frames without their episode, and the
review scrubber fetches one small frame at a time. A step points at the frame it shows with
``frame_t`` (equal to its own ``t`` when every step has a frame; a worker that stores every
k-th frame points the steps in between at the last stored one).
"""
from __future__ import annotations

import datetime as dt
from typing import Any, Optional

from sqlalchemy import (JSON, Boolean, CheckConstraint, DateTime, Float, ForeignKey, Index, Integer,
                        LargeBinary, MetaData, String, Text, func, text)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

from core.method.jobs import JOB_KINDS  # noqa: E402,F401 - one list of job kinds, shared with the worker

# --- allowed values ---------------------------------------------------------------------
ROBOT_KINDS = ("sim", "remote")
# online/offline: connectivity (set by the worker); paused/stopped: a supervisor's command
# that the worker obeys within one control step.
ROBOT_STATUSES = ("online", "offline", "paused", "stopped")
SESSION_STATUSES = ("running", "paused", "stopped", "finished")
EPISODE_SOURCES = ("demo", "practice", "eval")
EPISODE_STATUSES = ("running", "finished", "aborted")
CHECKPOINT_STAGES = ("sft", "si")
JOB_STATUSES = ("queued", "running", "done", "failed", "cancelled")
ROLES = ("viewer", "reviewer", "supervisor", "admin")  # ordered: each includes the ones before


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


class UTCDateTime(TypeDecorator):
    """Naive UTC in the database, aware UTC in Python (same on SQLite and PostgreSQL)."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: pass an aware datetime (e.g. storage.models.utcnow())")
        return value.astimezone(dt.timezone.utc).replace(tzinfo=None)

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        if isinstance(value, str):  # raw SQL results on SQLite
            value = dt.datetime.fromisoformat(value)
        return value.replace(tzinfo=dt.timezone.utc)


def _check(column: str, values: tuple[str, ...], name: str) -> CheckConstraint:
    allowed = ", ".join(f"'{v}'" for v in values)
    return CheckConstraint(f"{column} IN ({allowed})", name=name)


# Deterministic constraint names: migrations can alter them on both backends.
NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {dt.datetime: UTCDateTime(), dict[str, Any]: JSON, list[Any]: JSON}


class Task(Base):
    """What to practise: a backend + its config, the instruction family and the detector."""

    __tablename__ = "tasks"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    backend: Mapped[str] = mapped_column(String(64))
    env_config: Mapped[dict[str, Any]] = mapped_column(default=dict)
    instruction_family: Mapped[Optional[str]] = mapped_column(String(200))
    detector_threshold: Mapped[Optional[float]] = mapped_column(Float)  # s: success iff d(o,g) <= s ...
    detector_patience: Mapped[int] = mapped_column(Integer, default=1)  # ... for this many steps in a row
    calibration: Mapped[Optional[dict[str, Any]]] = mapped_column(JSON)  # how s was chosen (precision, recall, ...)
    fleet_size: Mapped[int] = mapped_column(Integer, default=1)
    description: Mapped[Optional[str]] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)

    __table_args__ = (CheckConstraint("detector_patience >= 1", name="patience_positive"),
                      CheckConstraint("fleet_size >= 0", name="fleet_size_nonneg"))


class Robot(Base):
    __tablename__ = "robots"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    kind: Mapped[str] = mapped_column(String(16), default="sim")
    status: Mapped[str] = mapped_column(String(16), default="offline")
    task_id: Mapped[Optional[int]] = mapped_column(ForeignKey("tasks.id", ondelete="SET NULL"), index=True)
    spec: Mapped[Optional[dict[str, Any]]] = mapped_column(JSON)  # camera/action spec, tasks it can do
    worker: Mapped[Optional[str]] = mapped_column(String(200))  # the worker that drives it
    last_seen: Mapped[Optional[dt.datetime]] = mapped_column()
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)

    task: Mapped[Optional[Task]] = relationship()
    __table_args__ = (_check("kind", ROBOT_KINDS, "kind"), _check("status", ROBOT_STATUSES, "status"))


class Checkpoint(Base):
    """A policy snapshot on disk. Stage-2 iterations chain through ``parent_id``."""

    __tablename__ = "checkpoints"
    id: Mapped[int] = mapped_column(primary_key=True)
    stage: Mapped[str] = mapped_column(String(8))
    parent_id: Mapped[Optional[int]] = mapped_column(ForeignKey("checkpoints.id", ondelete="SET NULL"), index=True)
    task_id: Mapped[Optional[int]] = mapped_column(ForeignKey("tasks.id", ondelete="SET NULL"))
    path: Mapped[str] = mapped_column(String(1000))
    iteration: Mapped[int] = mapped_column(Integer, default=0)
    metrics: Mapped[dict[str, Any]] = mapped_column(default=dict)
    eval_success: Mapped[Optional[float]] = mapped_column(Float)  # evaluated success rate in [0, 1]
    eval_episodes: Mapped[Optional[int]] = mapped_column(Integer)
    promoted: Mapped[bool] = mapped_column(Boolean, default=False)
    promoted_at: Mapped[Optional[dt.datetime]] = mapped_column()
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)

    parent: Mapped[Optional["Checkpoint"]] = relationship(remote_side=[id])
    __table_args__ = (
        _check("stage", CHECKPOINT_STAGES, "stage"),
        Index("ix_checkpoints_task_promoted", "task_id", "promoted"),
    )


# At most one promoted checkpoint per task (NULL task = the global scope); a race between two
# promotions ends in an IntegrityError instead of two served policies.
Index("uq_checkpoints_one_promoted", func.coalesce(Checkpoint.task_id, 0), unique=True,
      sqlite_where=text("promoted = 1"), postgresql_where=text("promoted"))


class PracticeSession(Base):
    """A practice run (called "session" in the UI; not to be confused with a DB session)."""

    __tablename__ = "sessions"
    id: Mapped[int] = mapped_column(primary_key=True)
    task_id: Mapped[int] = mapped_column(ForeignKey("tasks.id", ondelete="CASCADE"), index=True)
    name: Mapped[Optional[str]] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16), default="running")
    params: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_by: Mapped[Optional[str]] = mapped_column(String(100))
    started_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    ended_at: Mapped[Optional[dt.datetime]] = mapped_column()

    task: Mapped[Task] = relationship()
    __table_args__ = (_check("status", SESSION_STATUSES, "status"),)


class Job(Base):
    """A unit of background work. Claimed atomically by one worker; see storage.jobs."""

    __tablename__ = "jobs"
    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    params: Mapped[dict[str, Any]] = mapped_column(default=dict)
    status: Mapped[str] = mapped_column(String(16), default="queued")
    priority: Mapped[int] = mapped_column(Integer, default=0)
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    message: Mapped[Optional[str]] = mapped_column(Text)
    error: Mapped[Optional[str]] = mapped_column(Text)
    log_tail: Mapped[Optional[str]] = mapped_column(Text)  # the job's last log lines (core/worker/job.py)
    result: Mapped[Optional[dict[str, Any]]] = mapped_column(JSON)
    state: Mapped[Optional[dict[str, Any]]] = mapped_column(JSON)  # resume point, written with heartbeats
    session_id: Mapped[Optional[int]] = mapped_column(ForeignKey("sessions.id", ondelete="SET NULL"), index=True)
    task_id: Mapped[Optional[int]] = mapped_column(ForeignKey("tasks.id", ondelete="SET NULL"), index=True)
    claimed_by: Mapped[Optional[str]] = mapped_column(String(200))
    heartbeat_at: Mapped[Optional[dt.datetime]] = mapped_column()
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer, default=3)
    created_by: Mapped[Optional[str]] = mapped_column(String(100))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    started_at: Mapped[Optional[dt.datetime]] = mapped_column()
    finished_at: Mapped[Optional[dt.datetime]] = mapped_column()

    __table_args__ = (
        _check("kind", JOB_KINDS, "kind"),
        _check("status", JOB_STATUSES, "status"),
        Index("ix_jobs_status_priority", "status", "priority", "id"),
        Index("ix_jobs_claimed_by_status", "claimed_by", "status"),
    )


class Episode(Base):
    """One rollout. Written as ``running`` at its start and completed in one transaction
    with its steps and frames at its end (storage.episodes.finish_episode)."""

    __tablename__ = "episodes"
    id: Mapped[int] = mapped_column(primary_key=True)
    # Chosen by the writer (e.g. "job12-robot3-ep41"): replaying a crashed write finds the row.
    uid: Mapped[str] = mapped_column(String(200), unique=True)
    task_id: Mapped[int] = mapped_column(ForeignKey("tasks.id", ondelete="CASCADE"))
    session_id: Mapped[Optional[int]] = mapped_column(ForeignKey("sessions.id", ondelete="SET NULL"))
    robot_id: Mapped[Optional[int]] = mapped_column(ForeignKey("robots.id", ondelete="SET NULL"))
    checkpoint_id: Mapped[Optional[int]] = mapped_column(ForeignKey("checkpoints.id", ondelete="SET NULL"))
    job_id: Mapped[Optional[int]] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"), index=True)
    worker: Mapped[Optional[str]] = mapped_column(String(200))
    instruction: Mapped[Optional[str]] = mapped_column(Text)
    seed: Mapped[Optional[int]] = mapped_column(Integer)
    source: Mapped[str] = mapped_column(String(16), default="practice")
    status: Mapped[str] = mapped_column(String(16), default="running")
    abort_reason: Mapped[Optional[str]] = mapped_column(Text)
    # The success detector, as run live: fired or not, at which step, with which s.
    detector_success: Mapped[Optional[bool]] = mapped_column(Boolean)
    detector_step: Mapped[Optional[int]] = mapped_column(Integer)
    detector_threshold: Mapped[Optional[float]] = mapped_column(Float)
    final_d: Mapped[Optional[float]] = mapped_column(Float)  # d(o_T, g): the review queue's ambiguity
    min_d: Mapped[Optional[float]] = mapped_column(Float)
    gt_success: Mapped[Optional[bool]] = mapped_column(Boolean)  # simulator's ground truth, where known
    length: Mapped[Optional[int]] = mapped_column(Integer)
    total_return: Mapped[Optional[float]] = mapped_column(Float)
    # A supervisor's override of the detector (running or finished episode).
    override_success: Mapped[Optional[bool]] = mapped_column(Boolean)
    override_by: Mapped[Optional[str]] = mapped_column(String(100))
    override_at: Mapped[Optional[dt.datetime]] = mapped_column()
    # A reviewer's label (what detector precision/recall is measured against).
    label_success: Mapped[Optional[bool]] = mapped_column(Boolean)
    label_by: Mapped[Optional[str]] = mapped_column(String(100))
    label_at: Mapped[Optional[dt.datetime]] = mapped_column()
    meta: Mapped[Optional[dict[str, Any]]] = mapped_column(JSON)
    started_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    ended_at: Mapped[Optional[dt.datetime]] = mapped_column()

    task: Mapped[Task] = relationship()
    __table_args__ = (
        _check("source", EPISODE_SOURCES, "source"),
        _check("status", EPISODE_STATUSES, "status"),
        Index("ix_episodes_checkpoint_status", "checkpoint_id", "status"),
        Index("ix_episodes_session_status", "session_id", "status"),
        Index("ix_episodes_robot_status", "robot_id", "status"),
        Index("ix_episodes_task_ended", "task_id", "ended_at"),
        Index("ix_episodes_status_worker", "status", "worker"),
        Index("ix_episodes_ended_at", "ended_at"),
        Index("ix_episodes_label_status", "label_success", "status"),
    )

    @property
    def outcome(self) -> Optional[bool]:
        """The outcome the learner uses: the override where there is one, else the detector."""
        return self.override_success if self.override_success is not None else self.detector_success


class Step(Base):
    __tablename__ = "steps"
    episode_id: Mapped[int] = mapped_column(ForeignKey("episodes.id", ondelete="CASCADE"), primary_key=True)
    t: Mapped[int] = mapped_column(Integer, primary_key=True)
    action: Mapped[Optional[list[Any]]] = mapped_column(JSON)
    d: Mapped[Optional[float]] = mapped_column(Float)  # d(o_t, g), steps-to-go estimate
    reward: Mapped[Optional[float]] = mapped_column(Float)
    detector_count: Mapped[Optional[int]] = mapped_column(Integer)  # consecutive steps with d <= s so far
    detector_fired: Mapped[bool] = mapped_column(Boolean, default=False)
    frame_t: Mapped[Optional[int]] = mapped_column(Integer)  # key of the frame shown (frames.t), if any
    # The robot's proprioception at frame t (what the model reads beside the image), so that a
    # labeled episode can re-train the steps-to-go head from the database (core/worker/refine_from_labels.py).
    proprio: Mapped[Optional[list[float]]] = mapped_column(JSON)


class Frame(Base):
    __tablename__ = "frames"
    episode_id: Mapped[int] = mapped_column(ForeignKey("episodes.id", ondelete="CASCADE"), primary_key=True)
    t: Mapped[int] = mapped_column(Integer, primary_key=True)
    media_type: Mapped[str] = mapped_column(String(32), default="image/jpeg")
    data: Mapped[bytes] = mapped_column(LargeBinary)


class Metric(Base):
    """A point of a time series (loss curves, success rate per iteration, fleet rates...)."""

    __tablename__ = "metrics"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    x: Mapped[float] = mapped_column(Float)  # step / iteration / episode count
    value: Mapped[float] = mapped_column(Float)
    session_id: Mapped[Optional[int]] = mapped_column(ForeignKey("sessions.id", ondelete="CASCADE"))
    checkpoint_id: Mapped[Optional[int]] = mapped_column(ForeignKey("checkpoints.id", ondelete="CASCADE"))
    task_id: Mapped[Optional[int]] = mapped_column(ForeignKey("tasks.id", ondelete="CASCADE"))
    job_id: Mapped[Optional[int]] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)

    __table_args__ = (
        Index("ix_metrics_name_x", "name", "x"),
        Index("ix_metrics_session_name_x", "session_id", "name", "x"),
        Index("ix_metrics_checkpoint_name", "checkpoint_id", "name"),
        Index("ix_metrics_task_name_x", "task_id", "name", "x"),
    )


class DetectorQuality(Base):
    """Detector precision/recall against human labels, per checkpoint and (s, patience)."""

    __tablename__ = "detector_quality"
    id: Mapped[int] = mapped_column(primary_key=True)
    checkpoint_id: Mapped[Optional[int]] = mapped_column(ForeignKey("checkpoints.id", ondelete="CASCADE"))
    task_id: Mapped[Optional[int]] = mapped_column(ForeignKey("tasks.id", ondelete="CASCADE"))
    threshold: Mapped[Optional[float]] = mapped_column(Float)  # None: the detector outcome as run live
    patience: Mapped[Optional[int]] = mapped_column(Integer)
    tp: Mapped[int] = mapped_column(Integer, default=0)
    fp: Mapped[int] = mapped_column(Integer, default=0)
    fn: Mapped[int] = mapped_column(Integer, default=0)
    tn: Mapped[int] = mapped_column(Integer, default=0)
    n_labeled: Mapped[int] = mapped_column(Integer, default=0)
    precision: Mapped[Optional[float]] = mapped_column(Float)  # None when undefined (no positives)
    recall: Mapped[Optional[float]] = mapped_column(Float)
    computed_at: Mapped[dt.datetime] = mapped_column(default=utcnow)

    __table_args__ = (Index("ix_detector_quality_checkpoint_threshold", "checkpoint_id", "threshold"),)


class User(Base):
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(100), unique=True)
    role: Mapped[str] = mapped_column(String(16), default="viewer")
    password_hash: Mapped[str] = mapped_column(String(255))  # argon2id, PHC string format
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    last_login_at: Mapped[Optional[dt.datetime]] = mapped_column()

    __table_args__ = (_check("role", ROLES, "role"),)


class AuditEntry(Base):
    __tablename__ = "audit_log"
    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[dt.datetime] = mapped_column(default=utcnow, index=True)
    user_id: Mapped[Optional[int]] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), index=True)
    username: Mapped[str] = mapped_column(String(100))  # kept when the user is deleted; "system" for the worker
    action: Mapped[str] = mapped_column(String(64), index=True)
    target_type: Mapped[Optional[str]] = mapped_column(String(32))
    target_id: Mapped[Optional[str]] = mapped_column(String(64))
    details: Mapped[Optional[dict[str, Any]]] = mapped_column(JSON)

    __table_args__ = (Index("ix_audit_log_target", "target_type", "target_id"),)


class RobotToken(Base):
    """A credential a robot presents on ``/robot`` (docs/security.md). Only its SHA-256 is
    stored: the token itself is shown once, when a supervisor creates it. ``robot_name`` set:
    only a robot of that name may register with it (per robot); unset: any name (per fleet)."""

    __tablename__ = "robot_tokens"
    id: Mapped[int] = mapped_column(primary_key=True)
    label: Mapped[str] = mapped_column(String(100))
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))  # the first characters, to tell tokens apart in lists
    robot_name: Mapped[Optional[str]] = mapped_column(String(64))
    created_by: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[Optional[dt.datetime]] = mapped_column()
    revoked_by: Mapped[Optional[str]] = mapped_column(String(100))
    last_used_at: Mapped[Optional[dt.datetime]] = mapped_column()


class LoginThrottle(Base):
    """Failed log-ins per key ("user:<name>" or "client:<address>"): the growing delay and the
    temporary lock-out of storage/auth.py read and write it."""

    __tablename__ = "login_throttle"
    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    last_failure_at: Mapped[Optional[dt.datetime]] = mapped_column()
    not_before: Mapped[Optional[dt.datetime]] = mapped_column()  # no attempt is judged before this time
