"""Time-series metrics and the success detector's quality against human judgments."""
from __future__ import annotations

from collections import defaultdict
from typing import Iterable, Mapping, Optional, Sequence

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from storage.auth import Actor, audit, check_actor
from storage.models import DetectorQuality, Episode, Metric, Step, Task, utcnow


def log_metrics(s: Session, values: Mapping[str, float], x: float, *, session_id: Optional[int] = None,
                checkpoint_id: Optional[int] = None, task_id: Optional[int] = None,
                job_id: Optional[int] = None) -> None:
    """Append one point per name at ``x`` (one INSERT)."""
    now = utcnow()
    rows = [{"name": k, "x": float(x), "value": float(v), "session_id": session_id,
             "checkpoint_id": checkpoint_id, "task_id": task_id, "job_id": job_id, "created_at": now}
            for k, v in values.items()]
    if rows:
        s.execute(insert(Metric), rows)


def log_metric(s: Session, name: str, x: float, value: float, **scope: Optional[int]) -> None:
    log_metrics(s, {name: value}, x, **scope)


def metric_series(s: Session, name: str, *, session_id: Optional[int] = None,
                  checkpoint_id: Optional[int] = None, task_id: Optional[int] = None,
                  job_id: Optional[int] = None, since_x: Optional[float] = None,
                  limit: int = 10_000) -> list[tuple[float, float]]:
    """(x, value) in x order; ``since_x`` returns only newer points (for live plots)."""
    q = select(Metric.x, Metric.value).where(Metric.name == name).order_by(Metric.x, Metric.id).limit(limit)
    for col, v in ((Metric.session_id, session_id), (Metric.checkpoint_id, checkpoint_id),
                   (Metric.task_id, task_id), (Metric.job_id, job_id)):
        if v is not None:
            q = q.where(col == v)
    if since_x is not None:
        q = q.where(Metric.x > since_x)
    return [(r[0], r[1]) for r in s.execute(q)]


def metric_names(s: Session, *, session_id: Optional[int] = None, task_id: Optional[int] = None) -> list[str]:
    q = select(Metric.name).distinct().order_by(Metric.name)
    if session_id is not None:
        q = q.where(Metric.session_id == session_id)
    if task_id is not None:
        q = q.where(Metric.task_id == task_id)
    return list(s.scalars(q))


# --- detector quality -----------------------------------------------------------------------

def first_detection(d_seq: Sequence[float], threshold_s: float, patience: int = 1) -> Optional[int]:
    """Same rule as core.steps_to_go.first_detection (kept here so storage needs no torch): the
    first t where d <= s has held for ``patience`` consecutive steps ending at t."""
    if patience < 1:
        raise ValueError(f"patience must be >= 1, got {patience}")
    run = 0
    for t, d in enumerate(d_seq):
        run = run + 1 if d is not None and d <= threshold_s else 0
        if run >= patience:
            return t
    return None


def human_truth(ep: Episode) -> Optional[bool]:
    """A reviewer's label, else a supervisor's override (both are human judgments)."""
    return ep.label_success if ep.label_success is not None else ep.override_success


def compute_detector_quality(s: Session, checkpoint_id: Optional[int], *, threshold: Optional[float] = None,
                             patience: Optional[int] = None, task_id: Optional[int] = None,
                             store: bool = True, actor: Actor = None) -> DetectorQuality:
    """Detector precision/recall on finished episodes of ``checkpoint_id`` (None: episodes run
    without a checkpoint) that a human judged (label, else override). ``threshold=None`` scores
    the detector as it ran; a threshold re-runs the detector on the stored d(o,g) curves with
    ``patience`` (default: the task's). Stored as a DetectorQuality row when ``store``."""
    check_actor(actor, "compute_quality")
    q = select(Episode).where(Episode.status == "finished",
                              (Episode.label_success.is_not(None)) | (Episode.override_success.is_not(None)))
    q = q.where(Episode.checkpoint_id == checkpoint_id if checkpoint_id is not None else Episode.checkpoint_id.is_(None))
    if task_id is not None:
        q = q.where(Episode.task_id == task_id)
    eps = list(s.scalars(q))

    if threshold is None:
        predicted = {ep.id: ep.detector_success for ep in eps}
    else:
        curves: dict[int, list[float]] = defaultdict(list)
        ids = [ep.id for ep in eps]
        for i in range(0, len(ids), 500):
            for eid, d in s.execute(select(Step.episode_id, Step.d).where(Step.episode_id.in_(ids[i:i + 500]))
                                    .order_by(Step.episode_id, Step.t)):
                curves[eid].append(d)
        task_patience = dict(s.execute(select(Task.id, Task.detector_patience)).all())
        predicted = {ep.id: first_detection(curves[ep.id], threshold, patience or task_patience.get(ep.task_id, 1))
                     is not None for ep in eps}

    tp = fp = fn = tn = 0
    for ep in eps:
        truth, pred = human_truth(ep), predicted[ep.id]
        if pred is None:
            continue
        if pred and truth:
            tp += 1
        elif pred and not truth:
            fp += 1
        elif not pred and truth:
            fn += 1
        else:
            tn += 1
    row = DetectorQuality(checkpoint_id=checkpoint_id, task_id=task_id,
                          threshold=None if threshold is None else float(threshold), patience=patience,
                          tp=tp, fp=fp, fn=fn, tn=tn, n_labeled=tp + fp + fn + tn,
                          precision=tp / (tp + fp) if tp + fp else None,
                          recall=tp / (tp + fn) if tp + fn else None)
    if store:
        s.add(row)
        s.flush()
        if actor is not None:
            audit(s, actor, "compute_quality", row, {"checkpoint_id": checkpoint_id, "threshold": threshold})
    return row


def detector_quality_history(s: Session, *, checkpoint_id: Optional[int] = None,
                             task_id: Optional[int] = None, limit: int = 200) -> list[DetectorQuality]:
    """Stored results, newest first."""
    q = select(DetectorQuality).order_by(DetectorQuality.id.desc()).limit(limit)
    if checkpoint_id is not None:
        q = q.where(DetectorQuality.checkpoint_id == checkpoint_id)
    if task_id is not None:
        q = q.where(DetectorQuality.task_id == task_id)
    return list(s.scalars(q))


def sweep_thresholds(s: Session, checkpoint_id: Optional[int], thresholds: Iterable[float], **kw) -> list[DetectorQuality]:
    """compute_detector_quality at each threshold (e.g. for a precision/recall curve)."""
    return [compute_detector_quality(s, checkpoint_id, threshold=t, **kw) for t in thresholds]
