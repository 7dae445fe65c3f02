"""Preparing any task from the Tasks page: demonstrations -> Stage 1 -> evaluation -> practice,
each step a job (progress, time left, cancel, the tail of its log), and what the task still
lacks with the next step offered.

Functions over the database (``readiness``, ``enqueue_demos``, ``enqueue_sft``, ``time_left_s``)
that the page's "Prepare" section calls. The jobs themselves are the worker's ``demos``,
``sft``, ``eval`` and ``practice`` (``python -m core.worker --params``): a demos or sft job for a
task takes the task's backend and env_config, so any task the catalog can build is prepared
the same way. The bundled demo task's automatic chain (ui/bootstrap.py) is unchanged.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from storage import repo
from storage.models import AuditEntry, Checkpoint, Job, Task, utcnow

STEPS = ("demonstrations", "Stage 1", "evaluation", "practice")
STEP_KINDS = {"demonstrations": "demos", "Stage 1": "sft", "evaluation": "eval", "practice": "practice"}
ACTIVE = ("queued", "running")
# Sizes a 2-core laptop finishes in minutes; a lab changes them in the form.
DEFAULT_DEMOS = 200
DEFAULT_EPOCHS = 8
DEFAULT_SFT_MINUTES = 15.0
DEFAULT_EVAL_EPISODES = 50
# The Stage-1 image encoders a page offers (PolicyConfig.image_encoder); the ImageNet weights ship in a package.
IMAGE_ENCODERS = {"auto": "chosen by the data (measured best with / without keypoint labels)",
                  "scratch": "small CNN from scratch",
                  "efficientnet_lite0": "EfficientNet-Lite0 (ImageNet, frozen)",
                  "efficientnet_lite1": "EfficientNet-Lite1 (ImageNet, frozen)",
                  "efficientnet_lite2": "EfficientNet-Lite2 (ImageNet, frozen)",
                  "mobilenet_v2": "MobileNetV2 (ImageNet, frozen)"}


@dataclass
class Step:
    name: str
    done: bool
    job: Optional[dict[str, Any]] = None  # the newest job of this step for the task
    detail: str = ""


@dataclass
class Readiness:
    steps: list[Step] = field(default_factory=list)
    demos_jobs: list[dict[str, Any]] = field(default_factory=list)  # finished demos jobs: id, dataset, episodes
    imported: list[dict[str, Any]] = field(default_factory=list)  # datasets imported on the Data page: path, episodes
    other_tasks: list[dict[str, Any]] = field(default_factory=list)  # other tasks' datasets (datasets_of_other_tasks)
    can_generate: bool = True  # a scripted expert exists (not for a remote-robot task)
    next_step: Optional[str] = None
    missing: str = ""


def _job_row(j: Job) -> dict[str, Any]:
    return {"id": j.id, "kind": j.kind, "status": j.status, "progress": float(j.progress or 0.0),
            "message": j.message or "", "error": (j.error or "")[-800:], "log_tail": j.log_tail or "",
            "started": j.started_at,
            "created": j.created_at, "result": j.result or {}}


def time_left_s(job: dict[str, Any], now: Optional[dt.datetime] = None) -> Optional[float]:
    """Seconds left, extrapolated from the running job's progress; None when unknown."""
    p, started = job.get("progress") or 0.0, job.get("started")
    if job.get("status") != "running" or started is None or not 0.02 <= p < 1.0:
        return None
    spent = ((now or utcnow()) - started).total_seconds()
    return max(0.0, spent * (1.0 - p) / p)


def readiness(s: Session, task_id: int) -> Readiness:
    """Which steps the task has done, the job of each, and the next step to offer."""
    jobs: dict[str, Job] = {}
    demos: list[dict[str, Any]] = []
    for j in s.scalars(select(Job).where(Job.task_id == task_id).order_by(Job.id)):
        jobs[j.kind] = j
        if j.kind == "demos" and j.status == "done" and (j.result or {}).get("dataset"):
            demos.append({"id": j.id, "dataset": j.result["dataset"], "episodes": j.result.get("episodes")})
    imported = imported_datasets(s, task_id)
    ckpts = list(s.scalars(select(Checkpoint).where(Checkpoint.task_id == task_id)))
    sft = [c for c in ckpts if c.stage == "sft"]
    evaluated = [c for c in ckpts if c.eval_success is not None]
    practised = any(c.stage == "si" for c in ckpts) or (jobs.get("practice") is not None
                                                        and jobs["practice"].status in ACTIVE + ("done",))
    done = {"demonstrations": bool(demos) or bool(imported) or bool(sft), "Stage 1": bool(sft), "evaluation": bool(evaluated),
            "practice": practised}
    details = {"demonstrations": f"{len(demos) + len(imported)} dataset(s)" if demos or imported else "",
               "Stage 1": f"{len(sft)} Stage-1 checkpoint(s)" if sft else "",
               "evaluation": (f"best evaluated success {max(c.eval_success for c in evaluated):.0%}"
                              if evaluated else ""), "practice": ""}
    task = s.get(Task, task_id)
    out = Readiness(demos_jobs=list(reversed(demos)), imported=imported,
                    other_tasks=datasets_of_other_tasks(s, task_id), can_generate=task is None or task.backend != "remote")
    for name in STEPS:
        j = jobs.get(STEP_KINDS[name])
        out.steps.append(Step(name, done[name], _job_row(j) if j is not None else None, details[name]))
    for st in out.steps:
        if not st.done:
            out.next_step = st.name
            break
    wants = {"demonstrations": ("no demonstrations yet: generate them with the scripted expert, or import a "
                                "dataset on the Data page") if out.can_generate else
                               "no demonstrations yet: a remote-robot task has no scripted expert; import recorded "
                               "demonstrations (a LeRobot v3.0 or Dojo archive) on the Data page",
             "Stage 1": "no Stage-1 checkpoint yet: train one on a finished demonstrations job",
             "evaluation": "no evaluated checkpoint yet: evaluate one (practice needs an evaluated start to compare "
                           "against)",
             "practice": "ready: start a practice session"}
    out.missing = wants.get(out.next_step or "", "")
    return out


def imported_datasets(s: Session, task_id: int) -> list[dict[str, Any]]:
    """Datasets imported for the task on the Data page (its audit entries), newest first."""
    out = []
    for e in s.scalars(select(AuditEntry).where(AuditEntry.action == "import_dataset").order_by(AuditEntry.id.desc())):
        d = e.details or {}
        if d.get("task_id") == task_id and d.get("path"):
            out.append({"path": str(d["path"]), "episodes": d.get("episodes"), "file": d.get("file")})
    return out


def datasets_of_other_tasks(s: Session, task_id: int) -> list[dict[str, Any]]:
    """Finished demonstrations and imported datasets of every other task (path, task name, episodes):
    what one Stage-1 model over several tasks can add to this task's data."""
    names = {t.id: t.name for t in s.scalars(select(Task))}
    out: list[dict[str, Any]] = []
    for j in s.scalars(select(Job).where(Job.kind == "demos", Job.status == "done", Job.task_id.is_not(None),
                                         Job.task_id != task_id).order_by(Job.id.desc())):
        if (j.result or {}).get("dataset"):
            out.append({"path": str(j.result["dataset"]), "task": names.get(j.task_id, str(j.task_id)),
                        "episodes": j.result.get("episodes"), "source": f"job {j.id}"})
    for tid, name in names.items():
        if tid != task_id:
            out += [{"path": d["path"], "task": name, "episodes": d["episodes"], "source": f"imported {d['file'] or ''}"}
                    for d in imported_datasets(s, tid)]
    return out


def enqueue_demos(s: Session, task_id: int, n: int, workers: int = 1, *, actor) -> Job:
    """A demos job for the task (its backend and env_config; the dataset in <data>/demos/job<J>)."""
    if not 1 <= int(n) <= 100_000:
        raise ValueError(f"demonstrations: ask for 1..100000 episodes, got {n}")
    task = s.get(Task, task_id)
    if task is not None and task.backend == "remote":
        raise ValueError("a remote-robot task has no scripted expert: import recorded demonstrations on the Data page")
    return repo.enqueue_job(s, "demos", {"n": int(n), "workers": max(1, int(workers))}, task_id=task_id, actor=actor)


def enqueue_sft(s: Session, task_id: int, demos_job: Optional[int] = None, *, epochs: int, max_minutes: float,
                data: Optional[str] = None, policy: Optional[dict[str, Any]] = None,
                also: Sequence[str] = (), actor) -> Job:
    """A Stage-1 job on a finished demonstrations job's dataset, or on a dataset imported for the
    task (``data``, its path); its checkpoint joins the task. ``also``: datasets of other tasks
    (``datasets_of_other_tasks``) for one model over several tasks; its evaluations and practice
    on this task then run this task's environment (core.worker.checkpoints.task_environment)."""
    if data is not None:
        if data not in {d["path"] for d in imported_datasets(s, task_id)}:
            raise ValueError(f"{data} is not a dataset imported for this task")
    else:
        dj = s.get(Job, demos_job) if demos_job is not None else None
        if dj is None or dj.task_id != task_id or dj.kind != "demos" or dj.status != "done":
            raise ValueError(f"job {demos_job} is not a finished demonstrations job of this task")
    if not 1 <= int(epochs) <= 500 or not 0 < float(max_minutes) <= 24 * 60:
        raise ValueError("Stage 1: epochs must be 1..500 and the time cap 0..1440 minutes")
    others = {d["path"] for d in datasets_of_other_tasks(s, task_id)} if also else set()
    for path in also:
        if path not in others:
            raise ValueError(f"{path} is not a finished or imported dataset of another task")
    if also:  # several datasets: one comma-separated data spec (core.learning.dataset.load_datasets)
        first = data if data is not None else str(s.get(Job, demos_job).result["dataset"])
        source = {"data": ",".join([first, *dict.fromkeys(p for p in also if p != first)])}
    else:
        source = {"data": data} if data is not None else {"demos_job": int(demos_job)}
    params: dict[str, Any] = {**source, "epochs": int(epochs), "max_minutes": float(max_minutes)}
    task = s.get(Task, task_id)
    if task is not None and task.backend == "remote":
        params["eval_episodes"] = 0  # no simulator to evaluate in: the robots are the only environment
    if policy:
        params["policy"] = dict(policy)
    return repo.enqueue_job(s, "sft", params, task_id=task_id, actor=actor)
