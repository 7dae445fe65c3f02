"""Multi-step actions behind the pages' buttons, each in the caller's transaction (so it all
happens or nothing does) and each enforcing the actor's role through storage."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from sqlalchemy import select
from sqlalchemy.orm import Session

from storage import repo
from storage.models import Job, PracticeSession
from ui.bootstrap import PREPARE, prep_paths


def practice_params(s: Session, task_id: int, data_dir: Path, fleet_size: int) -> dict[str, Any]:
    """Where a new practice session starts from: the task's promoted checkpoint, else the
    newest finished Stage-1 job's best policy; the reward model is that Stage-1 run's
    best_stg.pt (frozen during practice)."""
    sft = s.scalar(select(Job).where(Job.task_id == task_id, Job.kind == "sft", Job.status == "done")
                   .order_by(Job.id.desc()).limit(1))
    res = (sft.result or {}) if sft is not None else {}
    sft_dir = Path((sft.params or {}).get("out", prep_paths(data_dir)["sft"])) if sft is not None \
        else Path(prep_paths(data_dir)["sft"])
    promoted = repo.get_promoted(s, task_id)
    policy = promoted.path if promoted is not None else res.get("best_policy", str(sft_dir / "best_policy.pt"))
    return {"policy": policy, "reward": res.get("best_stg", str(sft_dir / "best_stg.pt")),
            "fleet_size": int(fleet_size),
            "checkpoint_id": promoted.id if promoted is not None else None}


def start_practice(s: Session, task_id: int, *, fleet_size: int, data_dir: Path, actor,
                   name: Optional[str] = None) -> PracticeSession:
    """A practice session and the job that runs it (both audited, supervisor or above)."""
    ps = repo.start_session(s, task_id, name=name, params={"fleet_size": int(fleet_size)}, actor=actor)
    params = practice_params(s, task_id, data_dir, fleet_size)
    params["out"] = str(data_dir / "runs" / f"practice-session{ps.id}")
    repo.enqueue_job(s, "practice", params, task_id=task_id, session_id=ps.id, actor=actor)
    return ps


def stop_practice(s: Session, session_id: int, *, actor) -> PracticeSession:
    """Stop the session; its practice job sees the stop at the next step and ends."""
    return repo.stop_session(s, session_id, actor=actor)


def override_running(s: Session, robot_id: int, success: bool, *, actor) -> Optional[int]:
    """Override the detector on the robot's running episode; returns its id (None: idle)."""
    from ui.queries import running_episodes

    ep = running_episodes(s, [robot_id]).get(robot_id)
    if ep is None:
        # Just finished: the newest finished episode of that robot is what the person saw.
        eps = repo.list_episodes(s, limit=1, robot_id=robot_id, status="finished")
        if not eps:
            return None
        ep = eps[0]
    repo.override_episode(s, ep.id, success, actor=actor, note="from the Live page")
    return ep.id


def is_prepare_job(job: Job) -> bool:
    return bool((job.params or {}).get(PREPARE))
