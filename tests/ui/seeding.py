"""A seeded Dojo database for the UI tests and the page-load bench: one user per role, the
demo task, robots, a practice session, checkpoints with lineage, jobs, metrics and finished
episodes (with steps and frames for a few) plus one running episode per robot.

Bulk inserts, so 10,000 episodes take seconds, not minutes.
"""
from __future__ import annotations

import datetime as dt
import io
import random
from dataclasses import dataclass

import numpy as np
from sqlalchemy import insert

from storage import init_db, repo
from storage.models import Episode, Frame, Step, User, utcnow

PASSWORD = "password123"
ROLES = ("admin", "supervisor", "reviewer", "viewer")


@dataclass
class Seeded:
    url: str
    task_id: int
    robot_ids: list[int]
    session_id: int
    checkpoint_ids: list[int]
    episode_ids: list[int]
    running_ids: list[int]
    user_ids: dict[str, int]


def tiny_jpeg(seed: int, size: int = 32) -> bytes:
    from PIL import Image

    rng = np.random.default_rng(seed)
    arr = (rng.random((size, size, 3)) * 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=70)
    return buf.getvalue()


def seed(url: str, *, episodes: int = 60, robots: int = 4, steps: int = 20, frames_for: int | None = None, steps_for: int | None = None,
         rng_seed: int = 0) -> Seeded:
    rnd = random.Random(rng_seed)
    db = init_db(url)
    with db.write() as s:
        users = {r: repo.create_user(s, r, PASSWORD, r).id for r in ROLES}
        task = repo.create_task(s, "Block2Block tabletop", "tabletop", {"family": "block2block"},
                                instruction_family="block2block", detector_threshold=2.0, fleet_size=robots,
                                calibration={"f1": 0.8, "precision": 0.85, "recall": 0.75, "on": "held-out demos"})
        robot_ids = [repo.register_robot(s, f"robot-{i}", task_id=task.id, spec={"index": i}).id
                     for i in range(robots)]
        sft = repo.add_checkpoint(s, "sft", "data/runs/sft/best_policy.pt", task_id=task.id, eval_success=0.3,
                                  eval_episodes=50)
        si1 = repo.add_checkpoint(s, "si", "data/runs/p/iter_0001.pt", parent_id=sft.id, task_id=task.id,
                                  iteration=1, eval_success=0.4, eval_episodes=50)
        si2 = repo.add_checkpoint(s, "si", "data/runs/p/iter_0002.pt", parent_id=si1.id, task_id=task.id,
                                  iteration=2, eval_success=0.5, eval_episodes=50)
        repo.promote(s, sft.id)
        ps = repo.start_session(s, task.id, name="seeded", params={"fleet_size": robots})
        for kind, status in (("demos", "done"), ("sft", "done"), ("practice", "running")):
            job = repo.enqueue_job(s, kind, {}, task_id=task.id,
                                   session_id=ps.id if kind == "practice" else None)
            job.status, job.progress = status, 1.0 if status == "done" else 0.4
        for i in range(30):
            repo.log_metrics(s, {"sft/loss": 3.0 / (1 + i), "sft/val_loss": 3.2 / (1 + i)}, i, task_id=task.id)
        ckpts = [sft.id, si1.id, si2.id]
        now = utcnow()
        rows = []
        for i in range(episodes):
            ck = ckpts[min(2, i * 3 // max(1, episodes))]
            p_success = 0.3 + 0.4 * i / max(1, episodes)
            gt = rnd.random() < p_success
            det = gt if rnd.random() < 0.85 else not gt
            final_d = rnd.uniform(0.0, 1.8) if det else rnd.uniform(2.2, 8.0)
            rows.append({"uid": f"seed-{i}", "task_id": task.id, "session_id": ps.id,
                         "robot_id": robot_ids[i % robots], "checkpoint_id": ck, "worker": "seed",
                         "instruction": "push the red moon to the blue cube", "seed": 10_000 + i,
                         "source": "practice", "status": "finished", "detector_success": det,
                         "detector_step": steps - 1 if det else None, "detector_threshold": 2.0,
                         "final_d": final_d, "min_d": final_d, "gt_success": gt, "length": steps,
                         "total_return": rnd.uniform(0, 10),
                         "started_at": (now - dt.timedelta(minutes=episodes - i + 1)),
                         "ended_at": (now - dt.timedelta(minutes=episodes - i))})
        for i in range(0, len(rows), 1000):
            s.execute(insert(Episode.__table__), rows[i:i + 1000])
        s.flush()
        ids = [e.id for e in repo.list_episodes(s, limit=episodes)][::-1]
        # Steps for the newest ``steps_for`` episodes, frames for the newest ``frames_for`` (None: all).
        step_rows, frame_rows = [], []
        with_steps = ids if steps_for is None else ids[len(ids) - steps_for:]
        with_frames = set(ids if frames_for is None else ids[len(ids) - frames_for:])
        for eid in with_steps:
            d0 = rnd.uniform(10, 20)
            for t in range(steps):
                step_rows.append({"episode_id": eid, "t": t, "action": [0.1, -0.2], "d": d0 * (1 - t / steps),
                                  "reward": d0 / steps, "detector_count": 0, "detector_fired": False,
                                  "frame_t": t if eid in with_frames else None})
                if eid in with_frames:
                    frame_rows.append({"episode_id": eid, "t": t, "media_type": "image/jpeg",
                                       "data": tiny_jpeg(eid * 100 + t)})
        for i in range(0, len(step_rows), 20_000):
            s.execute(insert(Step), step_rows[i:i + 20_000])
        for i in range(0, len(frame_rows), 5_000):
            s.execute(insert(Frame), frame_rows[i:i + 5_000])
        running = [repo.start_episode(s, uid=f"seed-running-{r}", task_id=task.id, session_id=ps.id,
                                      robot_id=r, checkpoint_id=sft.id, worker="seed",
                                      instruction="push the red moon to the blue cube").id for r in robot_ids]
        # Some human effort in the last hours.
        reviewer = s.get(User, users["reviewer"])
        repo.label_episode(s, ids[0], True, actor=reviewer)
        sup = s.get(User, users["supervisor"])
        repo.override_episode(s, ids[1], False, actor=sup)
    db.dispose()
    return Seeded(url=url, task_id=task.id, robot_ids=robot_ids, session_id=ps.id, checkpoint_ids=ckpts,
                  episode_ids=ids, running_ids=running, user_ids=users)
