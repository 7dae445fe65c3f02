"""Checkpoint lineage, promotion and rollback.

Each Stage-2 iteration is a row whose ``parent_id`` is the checkpoint it was trained from.
The fleet is served the *promoted* checkpoint of its task (``get_promoted``); at most one is
promoted per task (a unique partial index enforces it). ``promote`` refuses a checkpoint
whose evaluated success is below the current one's (configurable); ``rollback`` promotes
any earlier checkpoint unconditionally, in one call.
"""
from __future__ import annotations

from typing import Any, Optional

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from storage.auth import Actor, audit, check_actor
from storage.tasks import NotFound
from storage.models import CHECKPOINT_STAGES, Checkpoint, utcnow


class PromotionRefused(RuntimeError):
    """``promote`` said no; the message says why and how to force it (rollback)."""


def add_checkpoint(s: Session, stage: str, path: str, *, parent_id: Optional[int] = None,
                   task_id: Optional[int] = None, iteration: int = 0,
                   metrics: Optional[dict[str, Any]] = None, eval_success: Optional[float] = None,
                   eval_episodes: Optional[int] = None) -> Checkpoint:
    """Record a checkpoint the worker has already written (atomically) to ``path``."""
    if stage not in CHECKPOINT_STAGES:
        raise ValueError(f"checkpoint stage must be one of {CHECKPOINT_STAGES}, got {stage!r}")
    if parent_id is not None and s.get(Checkpoint, parent_id) is None:
        raise NotFound(f"parent checkpoint {parent_id} does not exist")
    _check_rate(eval_success)
    ck = Checkpoint(stage=stage, path=str(path), parent_id=parent_id, task_id=task_id, iteration=iteration,
                    metrics=dict(metrics or {}), eval_success=eval_success, eval_episodes=eval_episodes)
    s.add(ck)
    s.flush()
    audit(s, None, "add_checkpoint", ck, {"stage": stage, "parent_id": parent_id, "iteration": iteration})
    return ck


def _check_rate(x: Optional[float]) -> None:
    if x is not None and not 0.0 <= x <= 1.0:
        raise ValueError(f"eval_success is a success rate in [0, 1], got {x}")


def get_checkpoint(s: Session, checkpoint_id: int) -> Checkpoint:
    ck = s.get(Checkpoint, checkpoint_id)
    if ck is None:
        raise NotFound(f"no checkpoint {checkpoint_id}")
    return ck


def set_evaluation(s: Session, checkpoint_id: int, success: float, episodes: int,
                   metrics: Optional[dict[str, Any]] = None) -> Checkpoint:
    """Store an evaluation result (success rate over ``episodes`` episodes)."""
    _check_rate(success)
    ck = get_checkpoint(s, checkpoint_id)
    ck.eval_success, ck.eval_episodes = float(success), int(episodes)
    if metrics:
        ck.metrics = {**(ck.metrics or {}), **metrics}
    return ck


def _scope(task_id: Optional[int]):
    return func.coalesce(Checkpoint.task_id, 0) == (task_id or 0)


def get_promoted(s: Session, task_id: Optional[int] = None) -> Optional[Checkpoint]:
    """The checkpoint the fleet should run for ``task_id`` (None: the global scope)."""
    return s.scalar(select(Checkpoint).where(_scope(task_id), Checkpoint.promoted.is_(True)))


def _set_promoted(s: Session, ck: Checkpoint) -> None:
    s.execute(update(Checkpoint).where(_scope(ck.task_id), Checkpoint.promoted.is_(True))
              .values(promoted=False).execution_options(synchronize_session=False))
    s.execute(update(Checkpoint).where(Checkpoint.id == ck.id).values(promoted=True, promoted_at=utcnow())
              .execution_options(synchronize_session=False))
    s.refresh(ck)


def promote(s: Session, checkpoint_id: int, *, require_not_worse: bool = True, tolerance: float = 0.0,
            actor: Actor = None) -> Checkpoint:
    """Promote ``checkpoint_id`` for its task. With ``require_not_worse`` it must have been
    evaluated and its success must be >= the current promoted one's minus ``tolerance``;
    otherwise PromotionRefused. Returns the promoted checkpoint."""
    check_actor(actor, "promote")
    ck = get_checkpoint(s, checkpoint_id)
    current = _lock_current(s, ck.task_id)
    if current is not None and current.id == ck.id:
        return ck
    if require_not_worse:
        if ck.eval_success is None:
            raise PromotionRefused(f"checkpoint {ck.id} has no evaluated success; evaluate it first "
                                   "(or promote with require_not_worse=False, or use rollback)")
        if current is not None and current.eval_success is not None and \
                ck.eval_success < current.eval_success - tolerance:
            raise PromotionRefused(
                f"checkpoint {ck.id} success {ck.eval_success:.3f} is worse than the promoted checkpoint "
                f"{current.id}'s {current.eval_success:.3f} (tolerance {tolerance}); keep {current.id}, "
                "or force it with require_not_worse=False / rollback")
    _set_promoted(s, ck)
    audit(s, actor, "promote", ck, {"previous": current.id if current else None,
                                    "eval_success": ck.eval_success,
                                    "previous_success": current.eval_success if current else None,
                                    "gated": require_not_worse})
    return ck


def rollback(s: Session, checkpoint_id: int, *, actor: Actor = None) -> Checkpoint:
    """Serve ``checkpoint_id`` again (any earlier checkpoint), no gate; audited."""
    check_actor(actor, "rollback")
    ck = get_checkpoint(s, checkpoint_id)
    current = _lock_current(s, ck.task_id)
    _set_promoted(s, ck)
    audit(s, actor, "rollback", ck, {"previous": current.id if current else None})
    return ck


def _lock_current(s: Session, task_id: Optional[int]) -> Optional[Checkpoint]:
    q = select(Checkpoint).where(_scope(task_id), Checkpoint.promoted.is_(True))
    if s.get_bind().dialect.name == "postgresql":
        q = q.with_for_update()
    return s.scalar(q)


def lineage(s: Session, checkpoint_id: int) -> list[Checkpoint]:
    """From the root (usually the SFT checkpoint) down to ``checkpoint_id``."""
    chain: list[Checkpoint] = []
    seen: set[int] = set()
    ck: Optional[Checkpoint] = get_checkpoint(s, checkpoint_id)
    while ck is not None and ck.id not in seen:
        chain.append(ck)
        seen.add(ck.id)
        ck = s.get(Checkpoint, ck.parent_id) if ck.parent_id is not None else None
    return chain[::-1]


def list_checkpoints(s: Session, *, task_id: Optional[int] = None, stage: Optional[str] = None,
                     limit: int = 200) -> list[Checkpoint]:
    """Newest first."""
    q = select(Checkpoint).order_by(Checkpoint.id.desc()).limit(limit)
    if task_id is not None:
        q = q.where(Checkpoint.task_id == task_id)
    if stage is not None:
        q = q.where(Checkpoint.stage == stage)
    return list(s.scalars(q))


def latest_checkpoint(s: Session, *, task_id: Optional[int] = None, stage: Optional[str] = None) -> Optional[Checkpoint]:
    """The newest checkpoint (what a resumed training job continues from)."""
    rows = list_checkpoints(s, task_id=task_id, stage=stage, limit=1)
    return rows[0] if rows else None
