"""Episodes, their steps and frames; overrides and labels.

Write path (the worker):
1. ``start_episode(s, uid=..., ...)`` when a rollout begins: a ``running`` row the live page,
   stop buttons and overrides can point at. Idempotent on ``uid``.
2. each control step: ``episode_override(s, episode_id)`` (has a supervisor overridden it?)
3. ``finish_episode(s, uid=..., steps=..., frames=...)`` at the end: the episode row, all its
   steps and all its frames in the caller's ONE transaction. Idempotent on ``uid``: a
   replay after a crash (same uid) finds the finished row and writes nothing.

Choose ``uid`` so that the same rollout gets the same uid when it is replayed, e.g.
``f"job{job_id}-robot{robot_id}-ep{index}"`` or ``f"s{session_id}-r{robot_id}-seed{seed}"``.
A row left ``running`` by a crash is marked ``aborted`` at restart (``abort_running_episodes``,
``storage.jobs.recover_worker``); replaying the same uid later completes that row in place,
so the episode is never counted twice.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Mapping, NamedTuple, Optional, Sequence, Union

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from storage.auth import Actor, audit, check_actor
from storage.tasks import NotFound
from storage.models import EPISODE_SOURCES, Episode, Frame, Step, utcnow


class EpisodeError(ValueError):
    pass


class FinishResult(NamedTuple):
    episode: Episode
    written: bool  # False: the uid was already finished (a replay); nothing was written


_START_FIELDS = ("task_id", "session_id", "robot_id", "checkpoint_id", "job_id", "worker", "instruction",
                 "seed", "source", "detector_threshold", "meta")
_STEP_KEYS = ("t", "action", "d", "reward", "detector_count", "detector_fired", "frame_t", "proprio")


def _plain(x: Any) -> Any:
    """numpy scalars/arrays -> JSON-able Python."""
    if x is None:
        return None
    if hasattr(x, "tolist"):
        return x.tolist()
    return x


def _float(x: Any) -> Optional[float]:
    return None if x is None else float(x)


def _check_source(source: str) -> None:
    if source not in EPISODE_SOURCES:
        raise EpisodeError(f"episode source must be one of {EPISODE_SOURCES}, got {source!r}")


def _lock_by_uid(s: Session, uid: str) -> Optional[Episode]:
    q = select(Episode).where(Episode.uid == uid).execution_options(populate_existing=True)
    if s.get_bind().dialect.name == "postgresql":
        q = q.with_for_update()
    return s.scalar(q)


def _row_for_uid(s: Session, uid: str, task_id: int) -> tuple[Episode, bool]:
    """The episode row for ``uid``, locked for this transaction, inserted (running) if missing.
    INSERT .. ON CONFLICT DO NOTHING makes two writers of the same uid (a replay racing the
    original) queue up on the row instead of one failing on the unique constraint."""
    ep = _lock_by_uid(s, uid)
    if ep is not None:
        return ep, False
    dialect = s.get_bind().dialect.name
    ins = (pg_insert if dialect == "postgresql" else sqlite_insert)(Episode)
    res = s.execute(ins.values(uid=uid, task_id=task_id, status="running", source="practice",
                               started_at=utcnow()).on_conflict_do_nothing(index_elements=["uid"]))
    ep = _lock_by_uid(s, uid)
    assert ep is not None
    return ep, res.rowcount == 1


def start_episode(s: Session, *, uid: str, task_id: int, session_id: Optional[int] = None,
                  robot_id: Optional[int] = None, checkpoint_id: Optional[int] = None,
                  job_id: Optional[int] = None, worker: Optional[str] = None,
                  instruction: Optional[str] = None, seed: Optional[int] = None, source: str = "practice",
                  detector_threshold: Optional[float] = None, meta: Optional[dict[str, Any]] = None) -> Episode:
    """A ``running`` row for a rollout that begins now. If ``uid`` exists: a finished row is
    returned unchanged (check ``.status == "finished"`` and skip the rollout); an aborted or
    running one is restarted (status running)."""
    _check_source(source)
    ep, created = _row_for_uid(s, uid, task_id)
    fields = dict(task_id=task_id, session_id=session_id, robot_id=robot_id, checkpoint_id=checkpoint_id,
                  job_id=job_id, worker=worker, instruction=instruction, seed=seed, source=source,
                  detector_threshold=_float(detector_threshold), meta=meta)
    if ep.status == "finished" and not created:
        return ep
    for k, v in fields.items():
        setattr(ep, k, v)
    ep.status, ep.abort_reason, ep.started_at, ep.ended_at = "running", None, utcnow(), None
    s.flush()
    return ep


def steps_from_arrays(*, d: Sequence[float], actions: Optional[Sequence[Any]] = None,
                      rewards: Optional[Sequence[float]] = None,
                      detector_counts: Optional[Sequence[int]] = None,
                      detector_fired: Optional[Sequence[bool]] = None,
                      frame_every: Optional[int] = 1,
                      proprio: Optional[Sequence[Any]] = None) -> list[dict[str, Any]]:
    """Step dicts for ``finish_episode`` from per-step arrays (numpy or lists) of length T.
    ``frame_every=k`` points each step at the last frame stored at a multiple of k (None: no frames)."""
    n = len(d)
    for name, arr in (("actions", actions), ("rewards", rewards), ("detector_counts", detector_counts),
                      ("detector_fired", detector_fired), ("proprio", proprio)):
        if arr is not None and len(arr) != n:
            raise EpisodeError(f"{name} has {len(arr)} entries but d has {n}; pass one per step")
    out = []
    for t in range(n):
        out.append({
            "t": t,
            "action": None if actions is None else _plain(actions[t]),
            "d": float(d[t]),
            "reward": None if rewards is None else float(rewards[t]),
            "detector_count": None if detector_counts is None else int(detector_counts[t]),
            "detector_fired": False if detector_fired is None else bool(detector_fired[t]),
            "frame_t": None if not frame_every else (t // frame_every) * frame_every,
            "proprio": None if proprio is None else _plain(proprio[t]),
        })
    return out


def _step_rows(episode_id: int, steps: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    seen = set()
    for i, st in enumerate(steps):
        extra = set(st) - set(_STEP_KEYS)
        if extra:
            raise EpisodeError(f"step {i} has unknown keys {sorted(extra)}; allowed: {_STEP_KEYS}")
        t = int(st.get("t", i))
        if t in seen:
            raise EpisodeError(f"two steps with t={t}; each step needs its own t")
        seen.add(t)
        rows.append({"episode_id": episode_id, "t": t, "action": _plain(st.get("action")),
                     "d": _float(st.get("d")), "reward": _float(st.get("reward")),
                     "detector_count": None if st.get("detector_count") is None else int(st["detector_count"]),
                     "detector_fired": bool(st.get("detector_fired", False)),
                     "frame_t": None if st.get("frame_t") is None else int(st["frame_t"]),
                     "proprio": None if st.get("proprio") is None else [float(x) for x in _plain(st["proprio"])]})
    return rows


FramesArg = Union[Mapping[int, bytes], Sequence[bytes], Sequence[tuple[int, bytes]], None]


def _frame_rows(episode_id: int, frames: FramesArg, media_type: str) -> list[dict[str, Any]]:
    if not frames:
        return []
    if isinstance(frames, Mapping):
        items = frames.items()
    elif isinstance(frames[0], (tuple, list)):
        items = frames
    else:
        items = enumerate(frames)
    rows = []
    for t, data in items:
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise EpisodeError(f"frame {t} is {type(data).__name__}; pass encoded image bytes (e.g. JPEG)")
        rows.append({"episode_id": episode_id, "t": int(t), "media_type": media_type, "data": bytes(data)})
    return rows


def finish_episode(s: Session, *, uid: str, task_id: int, steps: Sequence[Mapping[str, Any]] = (),
                   frames: FramesArg = None, frame_media_type: str = "image/jpeg",
                   detector_success: Optional[bool] = None, detector_step: Optional[int] = None,
                   gt_success: Optional[bool] = None, length: Optional[int] = None,
                   total_return: Optional[float] = None, final_d: Optional[float] = None,
                   **start_fields: Any) -> FinishResult:
    """Write a finished episode with all its steps and frames (in the caller's transaction:
    use one ``Database.write()`` block, so it all commits or nothing does).

    ``steps``: dicts with t (default: position), action, d, reward, detector_count,
    detector_fired, frame_t (see ``steps_from_arrays``). ``frames``: {t: bytes}, [bytes] (t =
    position) or [(t, bytes)]. length, total_return, final_d and min_d default to what the
    steps say. Other keyword arguments are those of ``start_episode`` (task, session, robot,
    checkpoint, job, worker, instruction, seed, source, detector_threshold, meta); they fill a
    row that was not started, and update one that was. Overrides and labels already on the
    row are kept."""
    bad = set(start_fields) - set(_START_FIELDS)
    if bad:
        raise EpisodeError(f"unknown finish_episode arguments {sorted(bad)}")
    if "source" in start_fields:
        _check_source(start_fields["source"])
    ep, _ = _row_for_uid(s, uid, task_id)
    if ep.status == "finished":
        return FinishResult(ep, False)
    ep.task_id = task_id
    for k, v in start_fields.items():
        setattr(ep, k, _float(v) if k == "detector_threshold" else v)
    s.flush()  # the id, for the step rows

    step_rows = _step_rows(ep.id, steps)
    ds = [r["d"] for r in step_rows if r["d"] is not None]
    rewards = [r["reward"] for r in step_rows if r["reward"] is not None]
    ep.status, ep.abort_reason, ep.ended_at = "finished", None, utcnow()
    ep.detector_success = None if detector_success is None else bool(detector_success)
    ep.detector_step = None if detector_step is None else int(detector_step)
    ep.gt_success = None if gt_success is None else bool(gt_success)
    ep.length = int(length) if length is not None else len(step_rows)
    ep.total_return = _float(total_return) if total_return is not None else (float(sum(rewards)) if rewards else None)
    ep.final_d = _float(final_d) if final_d is not None else (ds[-1] if ds else None)
    ep.min_d = min(ds) if ds else ep.final_d

    # A row that was running may hold nothing yet; clearing makes a replay exact regardless.
    s.execute(delete(Step).where(Step.episode_id == ep.id))
    s.execute(delete(Frame).where(Frame.episode_id == ep.id))
    if step_rows:
        s.execute(insert(Step), step_rows)
    frame_rows = _frame_rows(ep.id, frames, frame_media_type)
    if frame_rows:
        s.execute(insert(Frame), frame_rows)
    s.flush()
    return FinishResult(ep, True)


def abort_episode(s: Session, episode_id: int, reason: str, length: Optional[int] = None) -> bool:
    """End a running episode as aborted, saying why; ``length``: the steps it had taken, if known."""
    values: dict = dict(status="aborted", abort_reason=reason, ended_at=utcnow())
    if length is not None:
        values["length"] = int(length)
    res = s.execute(update(Episode).where(Episode.id == episode_id, Episode.status == "running")
                    .values(**values)
                    .execution_options(synchronize_session=False))
    return res.rowcount == 1


def abort_running_episodes(s: Session, *, worker: Optional[str] = None, session_id: Optional[int] = None,
                           job_id: Optional[int] = None, robot_id: Optional[int] = None,
                           reason: str = "aborted", everything: bool = False) -> list[int]:
    """Mark running episodes aborted (a restart, a robot that disconnected, a stopped
    session). At least one filter, or ``everything=True`` (single-worker set-ups). Returns ids."""
    conds = [Episode.status == "running"]
    if worker is not None:
        conds.append(Episode.worker == worker)
    if session_id is not None:
        conds.append(Episode.session_id == session_id)
    if job_id is not None:
        conds.append(Episode.job_id == job_id)
    if robot_id is not None:
        conds.append(Episode.robot_id == robot_id)
    if len(conds) == 1 and not everything:
        raise EpisodeError("abort_running_episodes needs worker, session_id, job_id or robot_id "
                           "(or everything=True): other workers' episodes may be live")
    ids = list(s.scalars(select(Episode.id).where(*conds)))
    if ids:
        s.execute(update(Episode).where(Episode.id.in_(ids), Episode.status == "running")
                  .values(status="aborted", abort_reason=reason, ended_at=utcnow())
                  .execution_options(synchronize_session=False))
        audit(s, None, "abort_episodes", ("episode", None), {"ids": ids, "reason": reason})
    return ids


# --- overrides and labels -------------------------------------------------------------------

def override_episode(s: Session, episode_id: int, success: Optional[bool], *, actor: Actor,
                     note: Optional[str] = None) -> Episode:
    """A supervisor's verdict on a running or finished episode (None clears it). On a running
    episode the worker sees it at its next step (``episode_override``)."""
    by = check_actor(actor, "override")
    ep = s.get(Episode, episode_id, populate_existing=True)
    if ep is None:
        raise NotFound(f"no episode {episode_id}")
    if ep.status == "aborted":
        raise EpisodeError(f"episode {episode_id} was aborted; there is no outcome to override")
    before = ep.override_success
    ep.override_success = None if success is None else bool(success)
    ep.override_by, ep.override_at = (None, None) if success is None else (by, utcnow())
    audit(s, actor, "override", ep, {"from": before, "to": ep.override_success, "status": ep.status,
                                     "detector": ep.detector_success, "note": note}, username=by)
    return ep


def episode_override(s: Session, episode_id: int) -> Optional[bool]:
    """The worker's per-step poll: the override on this episode, if any (one indexed read)."""
    return s.scalar(select(Episode.override_success).where(Episode.id == episode_id))


def label_episode(s: Session, episode_id: int, success: Optional[bool], *, actor: Actor,
                  note: Optional[str] = None) -> Episode:
    """A reviewer's label on a finished episode (None clears it)."""
    by = check_actor(actor, "label")
    ep = s.get(Episode, episode_id, populate_existing=True)
    if ep is None:
        raise NotFound(f"no episode {episode_id}")
    if ep.status != "finished":
        raise EpisodeError(f"episode {episode_id} is {ep.status}; only finished episodes can be labelled")
    before = ep.label_success
    ep.label_success = None if success is None else bool(success)
    ep.label_by, ep.label_at = (None, None) if success is None else (by, utcnow())
    audit(s, actor, "label", ep, {"from": before, "to": ep.label_success, "note": note}, username=by)
    return ep


def episode_outcomes(s: Session, episode_ids: Iterable[int]) -> dict[int, Optional[bool]]:
    """Effective outcomes for the learner: the override where there is one, else the detector."""
    ids = list(episode_ids)
    out: dict[int, Optional[bool]] = {}
    for i in range(0, len(ids), 500):
        rows = s.execute(select(Episode.id, func.coalesce(Episode.override_success, Episode.detector_success))
                         .where(Episode.id.in_(ids[i:i + 500])))
        out.update({r[0]: None if r[1] is None else bool(r[1]) for r in rows})
    return out


# --- reads for the UI -----------------------------------------------------------------------

def get_episode(s: Session, episode_id: int) -> Episode:
    ep = s.get(Episode, episode_id)
    if ep is None:
        raise NotFound(f"no episode {episode_id}")
    return ep


def get_episode_by_uid(s: Session, uid: str) -> Optional[Episode]:
    return s.scalar(select(Episode).where(Episode.uid == uid))


def episode_steps(s: Session, episode_id: int) -> list[Step]:
    return list(s.scalars(select(Step).where(Step.episode_id == episode_id).order_by(Step.t)))


def episode_curve(s: Session, episode_id: int) -> list[tuple[int, Optional[float]]]:
    """(t, d) pairs: the steps-to-go curve, without loading actions."""
    return [(r[0], r[1]) for r in s.execute(select(Step.t, Step.d).where(Step.episode_id == episode_id)
                                            .order_by(Step.t))]


def frame_times(s: Session, episode_id: int) -> list[int]:
    return list(s.scalars(select(Frame.t).where(Frame.episode_id == episode_id).order_by(Frame.t)))


def get_frame(s: Session, episode_id: int, t: int) -> Optional[Frame]:
    """The stored frame at t, or the last one before it (for a scrubber over subsampled frames)."""
    return s.scalar(select(Frame).where(Frame.episode_id == episode_id, Frame.t <= t)
                    .order_by(Frame.t.desc()).limit(1))


@dataclass
class EpisodeFilter:
    task_id: Optional[int] = None
    session_id: Optional[int] = None
    robot_id: Optional[int] = None
    checkpoint_id: Optional[int] = None
    source: Optional[str] = None
    status: Optional[str] = None


def list_episodes(s: Session, *, limit: int = 100, before_id: Optional[int] = None, **filters: Any) -> list[Episode]:
    """Newest first; filters: task_id, session_id, robot_id, checkpoint_id, source, status."""
    f = EpisodeFilter(**filters)
    q = select(Episode).order_by(Episode.id.desc()).limit(limit)
    for k, v in vars(f).items():
        if v is not None:
            q = q.where(getattr(Episode, k) == v)
    if before_id is not None:
        q = q.where(Episode.id < before_id)
    return list(s.scalars(q))
