"""Tasks, robots and practice sessions: what the supervisor controls and the worker obeys.

The worker polls ``control_state(s, session_id, robot_id)`` once per control step (one
indexed read) and pauses, stops or goes on accordingly.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any, Optional

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from storage.auth import Actor, audit, check_actor
from storage.models import ROBOT_KINDS, ROBOT_STATUSES, PracticeSession, Robot, Task, utcnow


class NotFound(LookupError):
    pass


class InvalidTransition(ValueError):
    pass


# --- tasks ----------------------------------------------------------------------------------

def create_task(s: Session, name: str, backend: str, env_config: Optional[dict[str, Any]] = None, *,
                instruction_family: Optional[str] = None, detector_threshold: Optional[float] = None,
                detector_patience: int = 1, calibration: Optional[dict[str, Any]] = None,
                fleet_size: int = 1, description: Optional[str] = None, actor: Actor = None) -> Task:
    check_actor(actor, "edit_task")
    if detector_patience < 1:
        raise ValueError(f"detector_patience must be >= 1, got {detector_patience}")
    if fleet_size < 0:
        raise ValueError(f"fleet_size must be >= 0, got {fleet_size}")
    task = Task(name=name, backend=backend, env_config=dict(env_config or {}),
                instruction_family=instruction_family, detector_threshold=detector_threshold,
                detector_patience=detector_patience, calibration=calibration, fleet_size=fleet_size,
                description=description)
    s.add(task)
    s.flush()
    audit(s, actor, "create_task", task, {"backend": backend})
    return task


def get_task(s: Session, task: int | str) -> Task:
    """By id or by name; NotFound if missing."""
    row = s.get(Task, task) if isinstance(task, int) else s.scalar(select(Task).where(Task.name == task))
    if row is None:
        raise NotFound(f"no task {task!r}")
    return row


def get_or_create_task(s: Session, name: str, backend: str, env_config: Optional[dict[str, Any]] = None,
                       **kwargs) -> Task:
    row = s.scalar(select(Task).where(Task.name == name))
    return row if row is not None else create_task(s, name, backend, env_config, **kwargs)


def list_tasks(s: Session) -> list[Task]:
    return list(s.scalars(select(Task).order_by(Task.name)))


def update_task(s: Session, task_id: int, *, actor: Actor = None, **fields: Any) -> Task:
    """Change a task's detector (detector_threshold, detector_patience, calibration),
    fleet_size, env_config, instruction_family or description."""
    check_actor(actor, "edit_task")
    allowed = {"detector_threshold", "detector_patience", "calibration", "fleet_size", "env_config",
               "instruction_family", "description"}
    bad = set(fields) - allowed
    if bad:
        raise ValueError(f"cannot update task fields {sorted(bad)}; allowed: {sorted(allowed)}")
    task = get_task(s, task_id)
    before = {k: getattr(task, k) for k in fields}
    for k, v in fields.items():
        setattr(task, k, v)
    audit(s, actor, "update_task", task, {"before": before, "after": fields})
    return task


# --- robots ---------------------------------------------------------------------------------

def register_robot(s: Session, name: str, kind: str = "sim", *, task_id: Optional[int] = None,
                   spec: Optional[dict[str, Any]] = None, worker: Optional[str] = None,
                   actor: Actor = None) -> Robot:
    """Create or refresh a robot by name and mark it online. A robot a supervisor stopped or
    paused stays so across reconnects."""
    check_actor(actor, "control_robot")
    if kind not in ROBOT_KINDS:
        raise ValueError(f"robot kind must be one of {ROBOT_KINDS}, got {kind!r}")
    robot = s.scalar(select(Robot).where(Robot.name == name))
    if robot is None:
        robot = Robot(name=name, kind=kind, status="online")
        s.add(robot)
        created = True
    else:
        created = False
        if robot.status == "offline":
            robot.status = "online"
    robot.kind = kind
    if task_id is not None:
        robot.task_id = task_id
    if spec is not None:
        robot.spec = spec
    if worker is not None:
        robot.worker = worker
    robot.last_seen = utcnow()
    s.flush()
    if created:
        audit(s, actor, "register_robot", robot, {"kind": kind})
    return robot


def get_robot(s: Session, robot: int | str) -> Robot:
    row = s.get(Robot, robot) if isinstance(robot, int) else s.scalar(select(Robot).where(Robot.name == robot))
    if row is None:
        raise NotFound(f"no robot {robot!r}")
    return row


def list_robots(s: Session, *, task_id: Optional[int] = None, worker: Optional[str] = None) -> list[Robot]:
    q = select(Robot).order_by(Robot.name)
    if task_id is not None:
        q = q.where(Robot.task_id == task_id)
    if worker is not None:
        q = q.where(Robot.worker == worker)
    return list(s.scalars(q))


def set_robot_status(s: Session, robot_id: int, status: str, *, actor: Actor = None) -> Robot:
    """online/offline (the worker, connectivity) or paused/stopped (a supervisor's command;
    'online' again resumes)."""
    if status not in ROBOT_STATUSES:
        raise ValueError(f"robot status must be one of {ROBOT_STATUSES}, got {status!r}")
    check_actor(actor, "control_robot")
    robot = get_robot(s, robot_id)
    old = robot.status
    robot.status = status
    if status == "online":
        robot.last_seen = utcnow()
    if actor is not None or status in ("paused", "stopped") or old in ("paused", "stopped"):
        audit(s, actor, "robot_status", robot, {"from": old, "to": status})
    return robot


def touch_robot(s: Session, robot_id: int) -> None:
    """Heartbeat from a connected robot (one UPDATE, no ORM load)."""
    s.execute(update(Robot).where(Robot.id == robot_id).values(last_seen=utcnow()))


def mark_stale_robots_offline(s: Session, older_than_s: float = 30.0) -> int:
    cutoff = utcnow() - dt.timedelta(seconds=older_than_s)
    res = s.execute(update(Robot).where(Robot.status == "online", Robot.last_seen < cutoff)
                    .values(status="offline"))
    return res.rowcount


# --- practice sessions ----------------------------------------------------------------------

_TRANSITIONS = {
    "running": {"paused", "stopped", "finished"},
    "paused": {"running", "stopped", "finished"},
    "stopped": set(),
    "finished": set(),
}
_ACTION_FOR = {"running": "resume_session", "paused": "pause_session", "stopped": "stop_session",
               "finished": "stop_session"}


def start_session(s: Session, task_id: int, *, name: Optional[str] = None,
                  params: Optional[dict[str, Any]] = None, actor: Actor = None) -> PracticeSession:
    by = check_actor(actor, "start_session")
    get_task(s, task_id)
    ps = PracticeSession(task_id=task_id, name=name, status="running", params=dict(params or {}),
                         created_by=by)
    s.add(ps)
    s.flush()
    audit(s, actor, "start_session", ps, {"task_id": task_id, "params": ps.params})
    return ps


def get_session(s: Session, session_id: int) -> PracticeSession:
    ps = s.get(PracticeSession, session_id)
    if ps is None:
        raise NotFound(f"no practice session {session_id}")
    return ps


def list_sessions(s: Session, *, task_id: Optional[int] = None, active_only: bool = False,
                  limit: int = 100) -> list[PracticeSession]:
    q = select(PracticeSession).order_by(PracticeSession.id.desc()).limit(limit)
    if task_id is not None:
        q = q.where(PracticeSession.task_id == task_id)
    if active_only:
        q = q.where(PracticeSession.status.in_(("running", "paused")))
    return list(s.scalars(q))


def set_session_status(s: Session, session_id: int, status: str, *, actor: Actor = None) -> PracticeSession:
    """running <-> paused, either -> stopped (by a person) or finished (by the worker).
    Setting the current status again is a no-op."""
    ps = get_session(s, session_id)
    if status not in _TRANSITIONS:
        raise ValueError(f"session status must be one of {tuple(_TRANSITIONS)}, got {status!r}")
    check_actor(actor, _ACTION_FOR[status])
    if ps.status == status:
        return ps
    if status not in _TRANSITIONS[ps.status]:
        raise InvalidTransition(f"practice session {session_id} is {ps.status}; it cannot become {status}"
                                + (" (start a new session instead)" if ps.status in ("stopped", "finished") else ""))
    old = ps.status
    ps.status = status
    if status in ("stopped", "finished"):
        ps.ended_at = utcnow()
    audit(s, actor, _ACTION_FOR[status] if status != "finished" else "finish_session", ps,
          {"from": old, "to": status})
    return ps


def pause_session(s: Session, session_id: int, *, actor: Actor = None) -> PracticeSession:
    return set_session_status(s, session_id, "paused", actor=actor)


def resume_session(s: Session, session_id: int, *, actor: Actor = None) -> PracticeSession:
    return set_session_status(s, session_id, "running", actor=actor)


def stop_session(s: Session, session_id: int, *, actor: Actor = None) -> PracticeSession:
    return set_session_status(s, session_id, "stopped", actor=actor)


def finish_session(s: Session, session_id: int, *, actor: Actor = None) -> PracticeSession:
    return set_session_status(s, session_id, "finished", actor=actor)


@dataclass(frozen=True)
class Control:
    """What one robot in one session should do now."""

    session_status: Optional[str]
    robot_status: Optional[str]

    @property
    def stop(self) -> bool:
        return self.session_status in ("stopped", "finished") or self.robot_status == "stopped"

    @property
    def pause(self) -> bool:
        return not self.stop and (self.session_status == "paused" or self.robot_status == "paused")

    @property
    def run(self) -> bool:
        return not self.stop and not self.pause


def control_state(s: Session, session_id: Optional[int], robot_id: Optional[int]) -> Control:
    """The worker's per-step poll: session and robot status in one round trip."""
    ss = rs = None
    if session_id is not None and robot_id is not None:
        row = s.execute(select(PracticeSession.status, Robot.status)
                        .select_from(PracticeSession).join(Robot, Robot.id == robot_id)
                        .where(PracticeSession.id == session_id)).first()
        if row is not None:
            ss, rs = row
    elif session_id is not None:
        ss = s.scalar(select(PracticeSession.status).where(PracticeSession.id == session_id))
    elif robot_id is not None:
        rs = s.scalar(select(Robot.status).where(Robot.id == robot_id))
    return Control(ss, rs)
