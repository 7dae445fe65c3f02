"""Read queries for the UI: the review queue and the counts a page shows on load.

All are single aggregate queries over indexed columns, so they stay fast (tens of ms) with
10,000s of episodes (tests/storage/test_queries.py times them on 10,000).
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Optional

from sqlalchemy import Integer, and_, case, cast, func, select
from sqlalchemy.orm import Session

from storage.models import Episode, Job, Robot, Task, utcnow


@dataclass(frozen=True)
class ReviewItem:
    episode: Episode
    reason: str  # "detector vs ground truth", "detector vs override", "near threshold", "unlabeled"
    ambiguity: Optional[float]  # |final d - s|: small = the detector was unsure


def _effective():
    return func.coalesce(Episode.override_success, Episode.detector_success)


def _as_int(cond):
    return cast(case((cond, 1), else_=0), Integer)


def review_queue(s: Session, *, task_id: Optional[int] = None, checkpoint_id: Optional[int] = None,
                 session_id: Optional[int] = None, limit: int = 50, offset: int = 0,
                 include_labeled: bool = False) -> list[ReviewItem]:
    """Finished, unlabeled episodes, most in need of a human first: the detector disagreeing
    with the simulator's ground truth or with a supervisor's override, then the smallest
    |final d(o,g) - s| (the detector was unsure), then the newest."""
    s_col = func.coalesce(Episode.detector_threshold, Task.detector_threshold)
    ambiguity = func.abs(Episode.final_d - s_col)
    vs_gt = and_(Episode.gt_success.is_not(None), Episode.detector_success.is_not(None),
                 Episode.gt_success != Episode.detector_success)
    vs_override = and_(Episode.override_success.is_not(None), Episode.detector_success.is_not(None),
                       Episode.override_success != Episode.detector_success)
    rank = case((vs_gt, 0), (vs_override, 1), else_=2)
    q = (select(Episode, rank.label("rank"), ambiguity.label("ambiguity"))
         .join(Task, Task.id == Episode.task_id)
         .where(Episode.status == "finished")
         .order_by(rank, case((ambiguity.is_(None), 1), else_=0), ambiguity, Episode.id.desc())
         .limit(limit).offset(offset))
    if not include_labeled:
        q = q.where(Episode.label_success.is_(None))
    if task_id is not None:
        q = q.where(Episode.task_id == task_id)
    if checkpoint_id is not None:
        q = q.where(Episode.checkpoint_id == checkpoint_id)
    if session_id is not None:
        q = q.where(Episode.session_id == session_id)
    out = []
    for ep, r, amb in s.execute(q):
        reason = {0: "detector vs ground truth", 1: "detector vs override"}.get(
            r, "near threshold" if amb is not None else "unlabeled")
        out.append(ReviewItem(ep, reason, None if amb is None else float(amb)))
    return out


def review_backlog(s: Session, *, task_id: Optional[int] = None) -> int:
    q = select(func.count()).select_from(Episode).where(Episode.status == "finished",
                                                         Episode.label_success.is_(None))
    if task_id is not None:
        q = q.where(Episode.task_id == task_id)
    return int(s.scalar(q))


@dataclass(frozen=True)
class SuccessStats:
    checkpoint_id: Optional[int]
    episodes: int
    successes: int  # effective outcome: override else detector
    gt_episodes: int
    gt_successes: int
    overrides: int
    labeled: int

    @property
    def rate(self) -> Optional[float]:
        return self.successes / self.episodes if self.episodes else None

    @property
    def gt_rate(self) -> Optional[float]:
        return self.gt_successes / self.gt_episodes if self.gt_episodes else None


def success_by_checkpoint(s: Session, *, task_id: Optional[int] = None, source: Optional[str] = None,
                          session_id: Optional[int] = None) -> list[SuccessStats]:
    """Per checkpoint, over finished episodes: success (detector, or override where given) and
    ground-truth success where the simulator knows it. Ordered by checkpoint id."""
    eff = _effective()
    q = (select(Episode.checkpoint_id, func.count(),
                func.sum(_as_int(eff.is_(True))),
                func.sum(_as_int(Episode.gt_success.is_not(None))),
                func.sum(_as_int(Episode.gt_success.is_(True))),
                func.sum(_as_int(Episode.override_success.is_not(None))),
                func.sum(_as_int(Episode.label_success.is_not(None))))
         .where(Episode.status == "finished")
         .group_by(Episode.checkpoint_id).order_by(Episode.checkpoint_id))
    if task_id is not None:
        q = q.where(Episode.task_id == task_id)
    if source is not None:
        q = q.where(Episode.source == source)
    if session_id is not None:
        q = q.where(Episode.session_id == session_id)
    return [SuccessStats(r[0], int(r[1]), *(int(v or 0) for v in r[2:])) for r in s.execute(q)]


def _hour_bucket(s: Session):
    if s.get_bind().dialect.name == "sqlite":
        return func.substr(Episode.ended_at, 1, 13)  # 'YYYY-MM-DD HH' of the stored UTC text
    return func.date_trunc("hour", Episode.ended_at)


def _parse_hour(v) -> dt.datetime:
    if isinstance(v, str):
        v = dt.datetime.strptime(v, "%Y-%m-%d %H")
    return v.replace(minute=0, second=0, microsecond=0, tzinfo=dt.timezone.utc)


def episodes_per_hour(s: Session, *, hours: int = 24, task_id: Optional[int] = None,
                      session_id: Optional[int] = None, now: Optional[dt.datetime] = None
                      ) -> list[tuple[dt.datetime, int, int]]:
    """(hour start UTC, finished episodes, successes) for the last ``hours`` hours, oldest first;
    hours without episodes are omitted."""
    now = now or utcnow()
    since = (now - dt.timedelta(hours=hours)).replace(minute=0, second=0, microsecond=0)
    bucket = _hour_bucket(s).label("hour")
    q = (select(bucket, func.count(), func.sum(_as_int(_effective().is_(True))))
         .where(Episode.status == "finished", Episode.ended_at >= since)
         .group_by(bucket).order_by(bucket))
    if task_id is not None:
        q = q.where(Episode.task_id == task_id)
    if session_id is not None:
        q = q.where(Episode.session_id == session_id)
    return [(_parse_hour(h), int(n), int(k or 0)) for h, n, k in s.execute(q)]


def status_counts(s: Session) -> dict[str, dict[str, int]]:
    """Episodes, jobs and robots by status, in three small GROUP BY queries."""
    out: dict[str, dict[str, int]] = {}
    for key, model in (("episodes", Episode), ("jobs", Job), ("robots", Robot)):
        out[key] = {st: int(n) for st, n in s.execute(select(model.status, func.count()).group_by(model.status))}
    return out


def robot_summary(s: Session, *, session_id: Optional[int] = None) -> list[dict]:
    """Per robot: status, last seen, finished episodes and successes (optionally in one session)."""
    eff = _effective()
    conds = [Episode.robot_id == Robot.id, Episode.status == "finished"]
    if session_id is not None:
        conds.append(Episode.session_id == session_id)
    q = (select(Robot.id, Robot.name, Robot.status, Robot.last_seen, func.count(Episode.id),
                func.sum(_as_int(eff.is_(True))))
         .outerjoin(Episode, and_(*conds)).group_by(Robot.id, Robot.name, Robot.status, Robot.last_seen)
         .order_by(Robot.name))
    return [{"robot_id": r[0], "name": r[1], "status": r[2], "last_seen": r[3], "episodes": int(r[4]),
             "successes": int(r[5] or 0)} for r in s.execute(q)]
