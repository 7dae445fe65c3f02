"""Stored episodes (the database) as input for ``lerobot.export_lerobot_v3``: one episode at a
time, so an export of thousands holds one episode's frames in memory."""
from __future__ import annotations

from typing import Iterator, Optional

from sqlalchemy import select

from core.datasets.lerobot_export import ExportEpisode
from storage.models import Episode, Frame, Step


def select_episode_ids(db, *, task_id: Optional[int] = None, source: Optional[str] = None,
                       session_id: Optional[int] = None, limit: int = 100) -> list[int]:
    """Ids of the newest ``limit`` finished episodes matching the filters, oldest first."""
    with db.read() as s:
        q = select(Episode.id).where(Episode.status == "finished").order_by(Episode.id.desc()).limit(limit)
        for col, v in ((Episode.task_id, task_id), (Episode.source, source), (Episode.session_id, session_id)):
            if v is not None:
                q = q.where(col == v)
        return list(s.scalars(q))[::-1]


def db_episodes(db, ids: list[int]) -> Iterator[ExportEpisode]:
    """Each episode's frames (JPEG bytes), actions, steps-to-go, rewards, detector state,
    ground truth and override. An episode with a missing frame repeats the previous one (the
    web app may store every k-th frame); one with no frame at all is skipped."""
    for eid in ids:
        with db.read() as s:
            ep = s.get(Episode, eid)
            steps = list(s.execute(select(Step.t, Step.action, Step.d, Step.reward, Step.detector_fired, Step.frame_t,
                                          Step.proprio).where(Step.episode_id == eid).order_by(Step.t)))
            frames = {t: data for t, data in s.execute(select(Frame.t, Frame.data).where(Frame.episode_id == eid))}
            if not steps or not frames:
                continue
            images, last = [], None
            for st in steps:
                key = st.frame_t if st.frame_t is not None else st.t
                img = frames.get(key, last)
                if img is None:
                    img = frames[min(frames)]
                images.append(img)
                last = img
            actions = [a for a in (st.action for st in steps[:-1])]
            if any(a is None for a in actions) or not actions:
                continue  # an episode without its actions cannot be a training demonstration
            proprio = None
            if all(st.proprio is not None for st in steps):
                proprio = [list(st.proprio) for st in steps]
            fired, acc = [], False
            for st in steps:
                acc = acc or bool(st.detector_fired)
                fired.append(acc)
            yield ExportEpisode(
                frames=images, actions=actions, instruction=ep.instruction or "", proprio=proprio,
                d=[st.d for st in steps], reward=[st.reward for st in steps], detector_fired=fired,
                gt_success=ep.gt_success, override_success=ep.override_success,
                meta={"episode_id": ep.id, "source": ep.source, "seed": ep.seed, "checkpoint_id": ep.checkpoint_id,
                      "session_id": ep.session_id, "detector_success": ep.detector_success,
                      "label_success": ep.label_success})
