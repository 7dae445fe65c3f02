"""Which checkpoint a job starts from, which reward model goes with it, and promotion: a
checkpoint is promoted only if its evaluated success is not worse than the promoted one's."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import select

from core.method.jobs import JobParamsError
from storage import repo
from storage.models import Checkpoint


def norm_path(p: str | Path) -> str:
    """Checkpoint rows are found by path: always the absolute one."""
    return os.path.abspath(str(p))


def jsonable(x: Any) -> Any:
    return json.loads(json.dumps(x, default=lambda o: o.item() if isinstance(o, np.generic) else str(o)))


def resolve_start(db: Any, p: dict[str, Any], task_id: int | None) -> tuple[str, int | None, dict[str, Any]]:
    """The job's starting checkpoint: (policy path, checkpoints row id or None, that row's metrics).
    ``checkpoint_id`` > a file (``policy_checkpoint`` / ``checkpoint``) > the task's promoted one."""
    with db.read() as s:
        if p.get("checkpoint_id") is not None:
            ck = repo.get_checkpoint(s, p["checkpoint_id"])
            return ck.path, ck.id, dict(ck.metrics or {})
        path = p.get("policy_checkpoint") or p.get("checkpoint")
        if path:
            ck = s.scalar(select(Checkpoint).where(Checkpoint.path == norm_path(path)))
            return norm_path(path), (ck.id if ck else None), (dict(ck.metrics or {}) if ck else {})
        ck = repo.get_promoted(s, task_id)
        if ck is None:
            raise JobParamsError("no starting checkpoint: pass checkpoint_id or policy_checkpoint, or promote "
                                 "a checkpoint for this task (an sft job does when it evaluates)")
        return ck.path, ck.id, dict(ck.metrics or {})


def task_environment(db: Any, task_id: int | None, meta: dict[str, Any]) -> tuple[str | None, dict[str, Any] | None]:
    """The environment a job for ``task_id`` runs a checkpoint in: the task's own when the model was
    trained on several tasks (``multitask``) and this task is one of them, so an evaluation or a
    practice session of the task is about that task; (None, None) otherwise (the checkpoint's own)."""
    if task_id is None or meta.get("backend") != "multitask":
        return None, None
    with db.read() as s:
        task = repo.get_task(s, task_id)
    if task is None or task.backend in ("remote", "multitask"):
        return None, None
    trained = (meta.get("env_config") or {}).get("tasks") or []
    mine = {"backend": task.backend, "env_config": dict(task.env_config or {})}
    return (task.backend, dict(task.env_config or {})) if mine in trained else (None, None)


def reward_for(policy_path: str, metrics: dict[str, Any], given: str | None) -> str | None:
    """The frozen reward model for a policy: the one given, the one its row records, best_stg.pt
    beside it, or the one its checkpoint file records."""
    if given:
        return norm_path(given)
    if metrics.get("reward_checkpoint"):
        return metrics["reward_checkpoint"]
    sib = Path(policy_path).with_name("best_stg.pt")
    if sib.exists():
        return norm_path(sib)
    try:
        from core.learning.checkpoint import read_checkpoint

        return read_checkpoint(policy_path)["meta"].get("reward_checkpoint")
    except Exception:  # noqa: BLE001 - no reward model known: the caller says what to pass
        return None


def promote_if_not_worse(s: Any, ck: Checkpoint, tolerance: float) -> str | None:
    """Promote ``ck`` unless its evaluated success is worse than the promoted one's (beyond
    ``tolerance``); a refusal is recorded in its metrics and returned."""
    try:
        repo.promote(s, ck.id, require_not_worse=True, tolerance=tolerance)
        return None
    except repo.PromotionRefused as e:
        ck.metrics = {**(ck.metrics or {}), "promotion_refused": str(e)}
        return str(e)
