"""The ``refine`` job: re-train a reward model's steps-to-go head on a practice session's
judged episodes (``core.worker.refine_from_labels``); the result names the new reward
checkpoint, which a practice session can then use (Tasks & fleet: "Reward model")."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from sqlalchemy import select, update

from core.method.jobs import JobParamsError
from core.worker.checkpoints import norm_path
from core.worker.job import JobContext
from core.worker.params import check_params
from storage import repo
from storage.models import Job


def _session_and_reward(w: Any, ctx: JobContext, p: dict[str, Any]) -> tuple[int, Any, str, float | None, int]:
    """(session id, its row, the reward model it ran with, the s and patience it ran with)."""
    from core.worker.refine_from_labels import session_detector

    sid = p["session_id"] if p["session_id"] is not None else ctx.session_id
    with w.db.read() as s:
        if sid is None:
            if ctx.task_id is None:
                raise JobParamsError("refine needs session_id (or a job task with judged episodes)")
            judged = [x for x in repo.labeled_sessions(s, ctx.task_id) if x["session_id"] is not None]
            if not judged:
                raise JobParamsError(f"task {ctx.task_id} has no practice session with judged episodes: label "
                                     "some on the Review page first")
            sid = judged[0]["session_id"]
        sess = repo.get_session(s, sid)
        task = repo.get_task(s, sess.task_id)
        reward = p["reward_checkpoint"] or (sess.params or {}).get("reward_checkpoint")
        if not reward:
            job = s.scalar(select(Job).where(Job.session_id == sid, Job.kind == "practice").order_by(Job.id))
            reward = ((job.params or {}).get("reward_checkpoint") if job is not None else None)
        if not reward:
            raise JobParamsError(f"session {sid} does not record its reward model (it ran before Dojo kept it): "
                                 "pass reward_checkpoint, the best_stg.pt it used")
        s_ran, p_ran = session_detector(s, sid)
        return sid, sess, reward, s_ran, int(p_ran or task.detector_patience or 1)


def run(w: Any, ctx: JobContext) -> dict[str, Any]:
    from core.worker.refine_from_labels import refine_from_labels

    p = check_params("refine", ctx.params)
    sid, sess, reward, s_ran, patience = _session_and_reward(w, ctx, p)
    with w.db.write() as s:
        s.execute(update(Job).where(Job.id == ctx.job_id).values(session_id=sid, task_id=sess.task_id)
                  .execution_options(synchronize_session=False))
    ctx.session_id, ctx.task_id = sid, sess.task_id
    out = p["out"] or str(w.data_dir / "runs" / f"refine-job{ctx.job_id}")
    ctx.message = f"re-training the steps-to-go head of {Path(reward).name} on session {sid}'s judged episodes"

    def interrupt() -> None:
        if w.should_stop(ctx):
            raise w.stop_reason(ctx)

    res = refine_from_labels(w.db.read, task_id=sess.task_id, session_id=sid, reward_checkpoint=norm_path(reward),
                             out=norm_path(out), steps=p["steps"], lr=p["lr"], seed=p["seed"],
                             threshold_s=s_ran, patience=patience, min_labels=p["min_labels"],
                             fail_tail=p["fail_tail"] or None, anchor=p["anchor"], interrupt=interrupt,
                             log=logging.getLogger("dojo.worker").info)
    after = res.get("check_after")
    ctx.message = (f"steps-to-go head re-trained on {res['fit']} judged episodes of session {sid}"
                   + (f"; held-out precision {res['check_before']['precision']:.2f} -> {after['precision']:.2f}, "
                      f"recall {res['check_before']['recall']:.2f} -> {after['recall']:.2f}" if after else ""))
    r = res["refine"]
    return {k: v for k, v in res.items() if k != "refine"} | {
        "separation_before": r["before"], "separation_after": r["after"], "demo_episodes": r["demo_episodes"],
        "loss_first": r["loss_first"], "loss_last": r["loss_last"]}
