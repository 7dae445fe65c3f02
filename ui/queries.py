"""Read queries the pages need beyond storage's: each is one or two indexed SELECTs that
return plain Python (dicts, tuples), so pages render them without holding a session and the
functions are tested on their own (tests/ui/test_queries.py).
"""
from __future__ import annotations

import bisect
import datetime as dt
from collections import Counter
from typing import Any, Optional

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from storage.models import AuditEntry, Episode, Job, utcnow
from core.method.stats import wilson_interval

# Audit actions that are human effort spent supervising practice.
EFFORT_ACTIONS = ("override", "label")


def robot_node(robot: Any) -> str:
    """Where a robot runs, for the Live page: its Ray node (a Ray fleet's robots), "remote" for a
    robot that connected over the network, else the worker's machine."""
    node = (robot.spec or {}).get("node") if isinstance(robot.spec, dict) else None
    if node:
        return str(node)
    return "remote" if robot.kind == "remote" else f"{robot.worker or 'worker'} (local)"


def running_episodes(s: Session, robot_ids: Optional[list[int]] = None) -> dict[int, Episode]:
    """robot id -> its running episode (the newest, if a crash left several)."""
    q = select(Episode).where(Episode.status == "running", Episode.robot_id.is_not(None)).order_by(Episode.id)
    if robot_ids is not None:
        q = q.where(Episode.robot_id.in_(robot_ids))
    return {ep.robot_id: ep for ep in s.scalars(q)}


def last_episodes(s: Session, robot_ids: list[int]) -> dict[int, Episode]:
    """robot id -> its running episode, else its newest one (any status): what the Live page
    shows as the robot's instruction between episodes (an evaluation phase, a finished job)."""
    out = running_episodes(s, robot_ids)
    rest = [r for r in robot_ids if r not in out]
    if rest:
        newest = (select(func.max(Episode.id)).where(Episode.robot_id.in_(rest))
                  .group_by(Episode.robot_id))
        for ep in s.scalars(select(Episode).where(Episode.id.in_(newest))):
            out[ep.robot_id] = ep
    return out


def practice_outcomes(s: Session, task_id: Optional[int] = None, *, source: str = "practice",
                      limit: int = 50_000) -> list[dict[str, Any]]:
    """Finished episodes in the order they ended: checkpoint, effective outcome (override
    else detector), ground truth, return. Only the columns the charts need."""
    eff = func.coalesce(Episode.override_success, Episode.detector_success)
    q = (select(Episode.id, Episode.checkpoint_id, eff, Episode.gt_success, Episode.total_return,
                Episode.task_id)
         .where(Episode.status == "finished", Episode.source == source)
         .order_by(Episode.ended_at, Episode.id).limit(limit))
    if task_id is not None:
        q = q.where(Episode.task_id == task_id)
    return [{"id": r[0], "checkpoint_id": r[1], "success": None if r[2] is None else bool(r[2]),
             "gt": None if r[3] is None else bool(r[3]), "return": r[4], "task_id": r[5]}
            for r in s.execute(q)]


def success_curve(rows: list[dict[str, Any]], bucket: int = 20) -> list[dict[str, Any]]:
    """Success rate per block of ``bucket`` consecutive practice episodes (x = episodes so far),
    for the effective outcome and for ground truth where known; the block's newest checkpoint.
    ``n`` is the block's size and ``complete`` whether it is full (the newest block usually is
    not: a handful of episodes, too few to plot as a point of the trend)."""
    out = []
    for i in range(0, len(rows), bucket):
        block = rows[i:i + bucket]
        known = [r["success"] for r in block if r["success"] is not None]
        gt = [r["gt"] for r in block if r["gt"] is not None]
        rets = [r["return"] for r in block if r["return"] is not None]
        out.append({"episodes": i + len(block),
                    "success": sum(known) / len(known) if known else None,
                    "gt_success": sum(gt) / len(gt) if gt else None,
                    "mean_return": sum(rets) / len(rets) if rets else None,
                    "checkpoint_id": block[-1]["checkpoint_id"], "n": len(block),
                    "complete": len(block) == bucket})
    return out


def evaluated_points(rows: list[dict[str, Any]], evaluated: dict[int, tuple[float, Optional[int]]]
                     ) -> list[dict[str, Any]]:
    """The greedy evaluations of checkpoints placed on the practice-episode axis: x = practice
    episodes acted by earlier checkpoints (0 for the Stage-1 start), with a 95 % interval.
    ``evaluated`` is {checkpoint id: (success, episodes)}; checkpoints are numbered in order."""
    ids = sorted(r["checkpoint_id"] for r in rows if r["checkpoint_id"] is not None)
    out = []
    for cid in sorted(evaluated):
        success, n = evaluated[cid]
        lo, hi = wilson_interval(round(success * n), n) if n else (None, None)
        out.append({"checkpoint_id": cid, "episodes": bisect.bisect_left(ids, cid), "success": success,
                    "n": n, "lo": lo, "hi": hi})
    return out


def latest_practice_stop(s: Session, task_id: int) -> Optional[dict[str, Any]]:
    """The newest practice job of the task, when it ended by stopping itself on a drop in
    evaluated success (``stop_reason`` in its result): {"job_id", "reason"}; else None."""
    job = s.scalars(select(Job).where(Job.task_id == task_id, Job.kind == "practice")
                    .order_by(Job.id.desc()).limit(1)).first()
    reason = (job.result or {}).get("stop_reason") if job is not None else None
    return {"job_id": job.id, "reason": reason} if reason else None


def judged_checkpoints(s: Session, task_id: int, *, limit: int = 12) -> list[int]:
    """The newest ``limit`` checkpoints of the task that have episodes people judged (label
    or override), oldest first: the detector-vs-human chart's bars (the newest checkpoints
    of a long session often have none)."""
    q = (select(Episode.checkpoint_id).where(Episode.task_id == task_id, Episode.checkpoint_id.is_not(None),
                                             (Episode.label_success.is_not(None))
                                             | (Episode.override_success.is_not(None)))
         .group_by(Episode.checkpoint_id).order_by(Episode.checkpoint_id.desc()).limit(limit))
    return sorted(s.scalars(q))


def refine_jobs(s: Session, task_id: int, *, session_id: Optional[int] = None, limit: int = 20
                ) -> list[dict[str, Any]]:
    """The task's refine jobs (steps-to-go head re-trained on judged episodes), newest first:
    job_id, status, session_id, error's first line, and for a finished one the new reward
    checkpoint, labels used, held-out precision/recall before -> after and its s."""
    q = select(Job).where(Job.task_id == task_id, Job.kind == "refine").order_by(Job.id.desc()).limit(limit)
    if session_id is not None:
        q = q.where(Job.session_id == session_id)
    out = []
    for j in s.scalars(q):
        r = j.result or {}
        before, after = r.get("check_before") or {}, r.get("check_after") or {}
        out.append({"job_id": j.id, "status": j.status, "session_id": j.session_id,
                    "error": (j.error or "").split("\n")[0] or None, "message": j.message,
                    "reward_checkpoint": r.get("reward_checkpoint"), "labels": r.get("labels"),
                    "threshold_s": r.get("threshold_s"), "held_out": r.get("held_out"),
                    "precision": (before.get("precision"), after.get("precision")),
                    "recall": (before.get("recall"), after.get("recall"))})
    return out


def describe_refine(r: dict[str, Any]) -> str:
    """One line for a finished refine job (the Tasks page's reward model choice)."""
    (p0, p1), (r0, r1) = r["precision"], r["recall"]
    fig = (f"; held-out precision {p0:.2f} -> {p1:.2f}, recall {r0:.2f} -> {r1:.2f}, s {r['threshold_s']:g}"
           if None not in (p0, p1, r0, r1) and r.get("threshold_s") is not None else "")
    return f"re-trained on {r['labels']} judged episodes of session {r['session_id']} (job {r['job_id']}){fig}"


def detector_figures(cal: dict[str, Any]) -> str:
    """How good the detector in use is, from a calibration record: the pre-practice check's
    precision/recall against ground truth when there is one, else Stage-1's on held-out
    demonstration endings (``demo_*``), else a plain "not measured yet"."""
    for prefix, where in (("", ""), ("demo_", "on held-out demonstrations")):
        p, r = cal.get(prefix + "precision"), cal.get(prefix + "recall")
        if p is not None or r is not None:
            fig = "precision " + ("-" if p is None else f"{float(p):.2f}") + \
                  ", recall " + ("-" if r is None else f"{float(r):.2f}")
            src = where or str(cal.get("source") or "")
            return fig + (f", {src}" if src else "")
    return "precision and recall not measured yet: the practice's detector check measures them"


def latest_paired_gain(checkpoints: list[Any]) -> Optional[dict[str, Any]]:
    """The newest checkpoint whose evaluation was paired seed by seed with its practice
    session's start (practice writes ``eval_gain*`` into the iteration's metrics): the gain
    in points, its 95 % interval, and whether the interval clears zero. ``checkpoints`` in
    any order; None when no such evaluation exists yet."""
    best = None
    for ck in checkpoints:
        m = ck.metrics or {}
        if m.get("eval_gain") is None or m.get("eval_gain_lo") is None:
            continue
        if best is None or ck.id > best.id:
            best = ck
    if best is None:
        return None
    m = best.metrics
    lo, hi = float(m["eval_gain_lo"]), float(m["eval_gain_hi"])
    verdict = "rise beyond noise" if lo > 0 else "drop beyond noise" if hi < 0 else "within noise"
    return {"checkpoint_id": best.id, "start_checkpoint_id": m.get("start_checkpoint_id"),
            "gain": float(m["eval_gain"]), "lo": lo, "hi": hi, "p": m.get("eval_gain_p"),
            "seeds": int(m.get("eval_gain_seeds") or 0), "gained": m.get("eval_gained"), "lost": m.get("eval_lost"),
            "verdict": verdict}


def human_effort_per_hour(s: Session, *, hours: int = 48, now: Optional[dt.datetime] = None
                          ) -> list[tuple[dt.datetime, int, int]]:
    """(hour start UTC, overrides, labels) from the audit log, oldest first, empty hours omitted."""
    now = now or utcnow()
    since = now - dt.timedelta(hours=hours)
    counts: Counter = Counter()
    q = (select(AuditEntry.at, AuditEntry.action)
         .where(AuditEntry.action.in_(EFFORT_ACTIONS), AuditEntry.at >= since, AuditEntry.username != "system"))
    for at, action in s.execute(q):
        counts[(at.replace(minute=0, second=0, microsecond=0), action)] += 1
    hours_seen = sorted({h for h, _ in counts})
    return [(h, counts[(h, "override")], counts[(h, "label")]) for h in hours_seen]


def job_rows(s: Session, *, limit: int = 30) -> list[dict[str, Any]]:
    rows = []
    for j in s.scalars(select(Job).order_by(Job.id.desc()).limit(limit)):
        rows.append({"id": j.id, "kind": j.kind, "status": j.status, "progress": float(j.progress or 0.0),
                     "message": j.message or "", "error": (j.error or "")[:800], "task_id": j.task_id,
                     "session_id": j.session_id, "created_by": j.created_by,
                     "created": j.created_at, "finished": j.finished_at})
    return rows


def episode_count(s: Session) -> int:
    return int(s.scalar(select(func.count()).select_from(Episode)) or 0)
