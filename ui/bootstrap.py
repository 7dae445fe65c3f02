"""First-run set-up the launcher does before serving the app, and the preparation chain.

- ``ensure_admin``: the first admin, from ``DOJO_ADMIN_PASSWORD`` or a generated password
  returned once (the launcher prints it; it is never stored in clear).
- ``seed_demo_task``: the bundled demo task, Block2Block on the tabletop simulator.
- ``advance_preparation``: on a fresh machine, the jobs that make the demo task practisable,
  one after the other: demonstrations -> Stage-1 SFT (laptop-sized) -> a practice session.
  Each is an ordinary job (visible with its progress on the Tasks page); the next one is
  enqueued only when the previous is done, so it works with any number of workers (the
  worker runs jobs, it does not chain them). The chain's jobs are the task's jobs enqueued by
  the system (``created_by == "system"``: only the launcher enqueues as the system), so a
  restart of the launcher picks the chain up where it was. Call it periodically.

Params follow the job params (``python -m core.worker --params``) (the worker refuses unknown keys):
demos {n, out, backend, env_config, workers}; sft {demos_job, out, epochs, max_minutes} (the
worker promotes the evaluated best policy); practice {checkpoint_id, fleet, eval_every,
eval_episodes} (the reward model
is the one recorded with that checkpoint).
"""
from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from storage import repo
from storage.models import Checkpoint, Job, Task, User

DEMO_TASK = "Block2Block tabletop"
SYSTEM = "system"  # created_by of the jobs the launcher enqueues


@dataclass(frozen=True)
class PrepConfig:
    """Sizes of the preparation chain, small enough for a 2-core laptop."""

    demos: int = 300
    """Scripted-expert demonstrations to generate."""
    epochs: int = 8
    """Stage-1 SFT epochs (capped by ``sft_minutes``)."""
    sft_minutes: float = 6.0
    """Wall-clock cap on Stage-1 training."""
    fleet_size: int = 4
    """Robots in the first practice session."""
    workers: int = 1
    """Processes generating demonstrations."""
    eval_every: int = 10
    """Practice iterations between greedy evaluations (they gate promotion). Evaluations
    take the whole fleet; with practice's defaults (every 5, 200 episodes) they took ~60 %
    of a laptop's practice time and the success curve climbed slowly."""
    lr: float = 5e-5
    """Practice learning rate. Practice's default (3e-5) is the stable choice for long runs
    (1e-4 fell on the bench's checkpoint); on the demo's checkpoint 5e-5 climbed faster over
    the first ~400 episodes, on the same 200 seeds: 40.0 / 44.0 / 41.0 % against 35.0 / 38.0 /
    48.0 % at ~200 / ~400 / ~600 episodes (paired gains +9.5 / +13.5 / +10.5 points, each
    beyond its 95 % interval; docs/experiments, the fresh run)."""
    eval_episodes: int = 200
    """Greedy evaluation episodes (fixed selection seeds). 100 gave the demo's curve a dip
    (41 / 36 / 45 %) the next 100 seeds did not bear out; 200 cost ~21 s more per
    evaluation on 2 cores and climbed at every point (35 / 38 / 48 %, docs/experiments)."""

    @classmethod
    def from_env(cls) -> "PrepConfig":
        env = os.environ
        return cls(demos=int(env.get("DOJO_PREP_DEMOS", cls.demos)),
                   epochs=int(env.get("DOJO_PREP_EPOCHS", cls.epochs)),
                   sft_minutes=float(env.get("DOJO_PREP_SFT_MINUTES", cls.sft_minutes)),
                   fleet_size=int(env.get("DOJO_FLEET_SIZE", cls.fleet_size)),
                   workers=int(env.get("DOJO_PREP_WORKERS", cls.workers)),
                   eval_every=int(env.get("DOJO_PREP_EVAL_EVERY", cls.eval_every)),
                   lr=float(env.get("DOJO_PREP_LR", cls.lr)),
                   eval_episodes=int(env.get("DOJO_PREP_EVAL_EPISODES", cls.eval_episodes)))


def ensure_admin(s: Session, password: Optional[str] = None, username: str = "admin") -> Optional[str]:
    """Create the first admin if there is no user at all. Returns the password when it was
    generated here (to print once), else None."""
    if s.scalar(select(func.count()).select_from(User)):
        return None
    generated = None
    if not password:
        password = generated = secrets.token_urlsafe(12)
    repo.create_user(s, username, password, "admin")
    return generated


def seed_demo_task(s: Session, fleet_size: int = 4) -> Task:
    return repo.get_or_create_task(
        s, DEMO_TASK, "tabletop", {"family": "block2block"}, instruction_family="block2block",
        fleet_size=fleet_size,
        description="Push one coloured block to another (LanguageTable Block2Block), MuJoCo tabletop.")


def _prep_jobs(s: Session, task_id: int) -> dict[str, Job]:
    """The newest preparation job of each kind for the task."""
    out: dict[str, Job] = {}
    for job in s.scalars(select(Job).where(Job.task_id == task_id, Job.created_by == SYSTEM,
                                           Job.kind.in_(("demos", "sft", "practice"))).order_by(Job.id)):
        out[job.kind] = job
    return out


def needs_preparation(s: Session, task_id: int) -> bool:
    """Fresh machine: no checkpoint for the task and no job of any kind ever enqueued for it."""
    has_ckpt = s.scalar(select(func.count()).select_from(Checkpoint).where(Checkpoint.task_id == task_id))
    has_job = s.scalar(select(func.count()).select_from(Job).where(Job.task_id == task_id))
    return not has_ckpt and not has_job


def prep_paths(data_dir: Path) -> dict[str, str]:
    return {"demos": str(data_dir / "demos" / "block2block"), "sft": str(data_dir / "runs" / "sft-block2block")}


def job_params(kind: str, cfg: PrepConfig, paths: dict[str, str], previous: Optional[Job] = None) -> dict[str, Any]:
    """Job params for each step (``python -m core.worker --params``); ``previous`` is the finished
    job of the step before."""
    if kind == "demos":
        return {"n": cfg.demos, "out": paths["demos"], "backend": "tabletop",
                "env_config": {"family": "block2block"}, "workers": cfg.workers}
    if kind == "sft":
        return {"demos_job": previous.id if previous is not None else None, "out": paths["sft"],
                "epochs": cfg.epochs, "max_minutes": cfg.sft_minutes}
    if kind == "practice":
        res = (previous.result or {}) if previous is not None else {}
        params: dict[str, Any] = {"fleet": {"kind": "process", "size": cfg.fleet_size},
                                  "eval_every": cfg.eval_every, "eval_episodes": cfg.eval_episodes, "lr": cfg.lr}
        if res.get("checkpoint_id") is not None:
            params["checkpoint_id"] = int(res["checkpoint_id"])
        return params
    raise ValueError(f"no preparation step {kind!r}; steps are demos, sft, practice")


def advance_preparation(s: Session, task_id: int, data_dir: Path, cfg: PrepConfig, *, start: bool = False
                        ) -> Optional[str]:
    """Enqueue the next preparation job when the previous one is done. ``start=True`` begins
    the chain (the launcher passes it on a fresh machine). Returns what it did, or None."""
    jobs = _prep_jobs(s, task_id)
    paths = prep_paths(data_dir)
    if not jobs:
        if not start:
            return None
        repo.enqueue_job(s, "demos", job_params("demos", cfg, paths), task_id=task_id)
        return "enqueued demos"
    if "sft" not in jobs and jobs.get("demos") is not None and jobs["demos"].status == "done":
        repo.enqueue_job(s, "sft", job_params("sft", cfg, paths, jobs["demos"]), task_id=task_id)
        return "enqueued sft"
    if "practice" not in jobs and jobs.get("sft") is not None and jobs["sft"].status == "done":
        ps = repo.start_session(s, task_id, name="first practice (prepared on first run)",
                                params={"fleet_size": cfg.fleet_size})
        repo.enqueue_job(s, "practice", job_params("practice", cfg, paths, jobs["sft"]),
                         task_id=task_id, session_id=ps.id)
        return "enqueued practice"
    return None


def preparation_status(s: Session, task_id: int) -> list[dict[str, Any]]:
    """The chain's steps for the Tasks page: kind, status (or 'waiting'), progress, message."""
    jobs = _prep_jobs(s, task_id)
    out = []
    for kind, title in (("demos", "demonstrations"), ("sft", "Stage-1 training"), ("practice", "practice")):
        j = jobs.get(kind)
        out.append({"step": title, "job": j.id if j else None, "status": j.status if j else "waiting",
                    "progress": float(j.progress or 0) if j else 0.0,
                    "message": (j.error or j.message or "") if j else ""})
    return out
