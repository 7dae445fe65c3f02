"""Time-series metrics and the success detector's quality against human judgments."""
from __future__ import annotations

from collections import defaultdict
from typing import Iterable, Mapping, Optional, Sequence

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from core.method.detector import first_detection, replay_detector, sweep_judged  # noqa: F401 - repo re-exports
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
        predicted = {ep.id: replay_detector(curves[ep.id], bool(ep.detector_success), threshold,
                                            patience or task_patience.get(ep.task_id, 1)) for ep in eps}

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


def labeled_sessions(s: Session, task_id: int) -> list[dict[str, object]]:
    """The task's practice sessions with human-judged finished episodes (label, else
    override), newest first: session_id, judged, the thresholds s the detector ran with and
    its patience (the newest episode's ``meta.patience``, as the worker writes it; None if absent)."""
    q = (select(Episode.session_id, Episode.detector_threshold)
         .where(Episode.task_id == task_id, Episode.status == "finished",
                (Episode.label_success.is_not(None)) | (Episode.override_success.is_not(None))))
    judged: dict[Optional[int], int] = defaultdict(int)
    ran: dict[Optional[int], set[float]] = defaultdict(set)
    for sid, thr in s.execute(q):
        judged[sid] += 1
        if thr is not None:
            ran[sid].add(round(float(thr), 4))
    out = []
    for sid in sorted(judged, key=lambda x: -1 if x is None else x, reverse=True):
        newest = s.scalars(select(Episode.meta).where(Episode.task_id == task_id, Episode.session_id == sid
                                                      if sid is not None else Episode.session_id.is_(None),
                                                      Episode.status == "finished")
                           .order_by(Episode.id.desc()).limit(1)).first()
        pat = (newest or {}).get("patience")
        out.append({"session_id": sid, "judged": judged[sid], "ran_with": sorted(ran[sid]),
                    "patience": int(pat) if pat is not None else None})
    return out


def threshold_sweep(s: Session, task_id: int, *, session_id: Optional[int] = None,
                    patience: Optional[int] = None, candidates: Optional[Iterable[float]] = None,
                    beta: float = 0.5, min_judged: int = 10) -> dict[str, object]:
    """Re-calibrate the success detector's s from people's judgments: sweep_judged over the
    finished episodes of one practice session (one frozen reward model, so one scale of d)
    that a reviewer labeled or a supervisor overrode. ``patience``: default the task's.
    ``candidates``: default 0.25 .. max(8, 2 x the largest s it ran with) in steps of 0.25.
    With fewer than ``min_judged`` judged episodes there is no ``best`` (``reason`` says so).
    Read-only: apply a result with apply_threshold_from_labels."""
    task = s.get(Task, task_id)
    if task is None:
        raise ValueError(f"no task {task_id}")
    patience = int(patience or task.detector_patience or 1)
    q = select(Episode).where(Episode.task_id == task_id, Episode.status == "finished",
                              (Episode.label_success.is_not(None)) | (Episode.override_success.is_not(None)))
    q = q.where(Episode.session_id == session_id if session_id is not None else Episode.session_id.is_(None))
    eps = list(s.scalars(q.order_by(Episode.id)))
    curves: dict[int, list[Optional[float]]] = defaultdict(list)
    ids = [ep.id for ep in eps]
    for i in range(0, len(ids), 500):
        for eid, d in s.execute(select(Step.episode_id, Step.d).where(Step.episode_id.in_(ids[i:i + 500]))
                                .order_by(Step.episode_id, Step.t)):
            curves[eid].append(d)
    ran = sorted({float(ep.detector_threshold) for ep in eps if ep.detector_threshold is not None})
    if candidates is None:
        top = max([8.0] + [2 * x for x in ran])
        candidates = [round(0.25 * k, 2) for k in range(1, int(top / 0.25) + 1)]
    current = task.detector_threshold if task.detector_threshold is not None else (ran[-1] if ran else None)
    out = sweep_judged([curves[ep.id] for ep in eps], [bool(human_truth(ep)) for ep in eps],
                       [bool(ep.detector_success) for ep in eps], candidates, patience, beta, current=current)
    as_run = {"tp": 0, "fp": 0, "fn": 0, "tn": 0}
    for ep in eps:
        if ep.detector_success is not None:
            truth = bool(human_truth(ep))
            as_run[("tp" if truth else "fp") if ep.detector_success else ("fn" if truth else "tn")] += 1
    as_run["precision"] = as_run["tp"] / (as_run["tp"] + as_run["fp"]) if as_run["tp"] + as_run["fp"] else None
    as_run["recall"] = as_run["tp"] / (as_run["tp"] + as_run["fn"]) if as_run["tp"] + as_run["fn"] else None
    out.update(task_id=task_id, session_id=session_id, ran_with=ran, as_run=as_run, reason=None, current=current)
    if len(eps) < min_judged:
        out["best"] = None
        out["reason"] = (f"only {len(eps)} judged episodes in this session; label at least {min_judged} on "
                         "the Review page (or override on Live) before re-calibrating s")
    elif out["best"] is None:
        out["reason"] = ("no candidate s decides enough episodes: most of them ended at the live detector's "
                         "fire before a stricter s would have fired; try candidates at or above the s it ran with")
    return out


def apply_threshold_from_labels(s: Session, task_id: int, sweep: Mapping[str, object], threshold: float, *,
                                actor: Actor = None) -> Task:
    """Set the task's detector threshold s to ``threshold`` from a threshold_sweep result and
    record how it was chosen in the task's calibration (shown on Tasks & fleet; the next
    practice session uses it). Audited as update_task; needs the edit_task permission."""
    rows = {float(r["threshold"]): r for r in sweep["rows"]}  # type: ignore[index]
    row = rows.get(round(float(threshold), 4))
    if row is None:
        raise ValueError(f"s = {threshold} is not one of the swept candidates")
    from storage.tasks import update_task

    sid = sweep.get("session_id")
    cal = {"threshold_s": float(threshold), "patience": int(sweep["patience"]),  # type: ignore[arg-type]
           "precision": row["precision"], "recall": row["recall"],
           "counts": {k: row[k] for k in ("tp", "fp", "fn", "tn", "censored")},
           "judged": sweep["judged"], "session_id": sid, "beta": sweep["beta"],
           "source": f"people's labels on {sweep['judged']} episodes of session {sid if sid is not None else '-'}",
           "ran_with": sweep.get("ran_with"), "as_run": sweep.get("as_run")}
    return update_task(s, task_id, actor=actor, detector_threshold=float(threshold),
                       detector_patience=int(sweep["patience"]), calibration=cal)  # type: ignore[arg-type]
