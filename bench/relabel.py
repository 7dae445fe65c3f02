"""Re-training the steps-to-go head on people's labels (the refine job), measured on a
simulated practice session's stored episodes.

    python -m bench.relabel --db data/dojo.sqlite [--session N] [--labels 150] [--score 400]
                            [--steps 300] [--reward best_stg.pt]

Works on a copy of the database (the original is not touched). A stand-in reviewer labels the
session's first ``--labels`` finished episodes (of those stored with their proprioception) by
the simulator's ground truth stored beside them (so the session must be simulated), then the refine job's code
(``core.worker.refine_from_labels.refine_from_labels``) re-trains a copy of the session's reward model on them
from the copied database. Both detectors are then scored on ``--score`` of the session's
*other* finished episodes (never labeled, ground truth known): s for each is calibrated
(F0.5) on the first half of those and precision/recall measured on the second half, from the
same stored frames, and as a progress reward (``progress_signal``: d against the steps left on
successes, the share of steps with a negative reward, its spread). Last line ``RESULT {json}``.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from bench.common import print_result


def progress_signal(model, episodes) -> dict:
    """How well d works as the progress reward on these episodes: the correlation of d with
    the steps left on successes (goal at the last frame), the share of steps whose reward
    r = d_t - d_t+1 is negative, and the per-step reward's spread."""
    import numpy as np

    from core.learning.refine import episode_d

    ds = episode_d(model, episodes)
    corr = [np.corrcoef(d, len(d) - 1 - np.arange(len(d)))[0, 1] for d, e in zip(ds, episodes)
            if e.success and len(d) > 2]
    return {"corr_success": float(np.nanmean(corr)) if corr else float("nan"),
            "negative_share": float(np.mean([(np.diff(d) > 0).mean() for d in ds if len(d) > 1])),
            "std": float(np.mean([np.std(np.diff(d)) for d in ds if len(d) > 1]))}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--db", required=True, help="SQLite file of a Dojo run with a simulated practice session")
    ap.add_argument("--session", type=int, default=None, help="default: the newest session with episodes")
    ap.add_argument("--reward", default=None, help="default: the reward model the session ran with")
    ap.add_argument("--labels", type=int, default=150, help="episodes the stand-in reviewer labels")
    ap.add_argument("--score", type=int, default=400, help="other episodes both detectors are scored on")
    ap.add_argument("--steps", type=int, default=300, help="refinement gradient steps")
    ap.add_argument("--tolerance", type=int, default=3)
    ap.add_argument("--fail-tail", type=int, default=10, help="refine job's fail_tail (0: every frame)")
    ap.add_argument("--anchor", type=float, default=1.0, help="refine job's anchor (with --fail-tail)")
    args = ap.parse_args(argv)

    from sqlalchemy import func, select

    from core.learning.checkpoint import load_checkpoint
    from core.worker.refine_from_labels import load_episodes, refine_from_labels, score_detector, session_detector
    from storage import init_db, repo
    from storage.models import Episode, PracticeSession, Step

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="dojo-relabel-") as tmp:
        copy = Path(tmp) / "dojo.sqlite"
        import sqlite3

        src = sqlite3.connect(f"file:{Path(args.db).resolve()}?mode=ro", uri=True)  # a consistent copy, WAL included
        dst = sqlite3.connect(copy)
        src.backup(dst)
        src.close()
        dst.close()
        db = init_db(str(copy))  # migrates the copy only
        with db.write() as s:
            sid = args.session or s.scalar(select(Episode.session_id).where(Episode.session_id.is_not(None))
                                           .group_by(Episode.session_id).order_by(func.count().desc()).limit(1))
            sess = s.get(PracticeSession, sid)
            task = repo.get_task(s, sess.task_id)
            reward = args.reward or (sess.params or {}).get("reward_checkpoint")
            if not reward:
                raise SystemExit(f"session {sid} does not record its reward model: pass --reward")
            has_proprio = select(Step.episode_id).where(Step.t == 0, Step.proprio.is_not(None))
            eps = list(s.scalars(select(Episode).where(Episode.session_id == sid, Episode.status == "finished",
                                                       Episode.gt_success.is_not(None), Episode.id.in_(has_proprio))
                                 .order_by(Episode.id)))
            if len(eps) < args.labels + 20:
                raise SystemExit(f"session {sid} has {len(eps)} finished simulated episodes; need > {args.labels + 20}")
            s_ran, p_ran = session_detector(s, sid)
            reviewer = repo.create_user(s, "bench-reviewer", "bench-reviewer-password", "reviewer")
            for e in eps[:args.labels]:
                repo.label_episode(s, e.id, bool(e.gt_success), actor=reviewer)
            scored_rows = eps[args.labels:args.labels + args.score]
            patience = int(p_ran or task.detector_patience or 1)
        res = refine_from_labels(db.read, task_id=sess.task_id, session_id=sid, reward_checkpoint=reward,
                                 out=Path(tmp) / "out", steps=args.steps, threshold_s=s_ran,
                                 patience=patience, tolerance=args.tolerance, min_labels=10, fail_tail=args.fail_tail or None,
                                 anchor=args.anchor)
        old, meta = load_checkpoint(reward, "cpu")
        new, _ = load_checkpoint(res["reward_checkpoint"], "cpu")
        with db.read() as s:
            scored, _, skipped = load_episodes(s, scored_rows, truth=lambda e: e.gt_success,
                                               image_size=old.config.image_size, proprio_dim=old.config.proprio_dim)
        s_run = s_ran if s_ran is not None else float(meta.get("threshold_s") or 1.0)
        before = score_detector(old, scored, s_run, patience, args.tolerance, 0.5, wide=False)
        after = score_detector(new, scored, s_run, patience, args.tolerance, 0.5, wide=True)
        before["progress"], after["progress"] = progress_signal(old, scored), progress_signal(new, scored)
        db.dispose()

    keep = ("precision", "recall", "threshold_s", "episodes", "counts", "progress")
    out = {"session": sid, "patience": patience, "labels": res["labels"], "labels_success": res["labels_success"],
           "scored": len(scored), "scored_success": sum(e.success for e in scored), "skipped": skipped,
           "s_ran_with": s_run, "before": {k: before[k] for k in keep}, "after": {k: after[k] for k in keep},
           "held_out_in_job": {"before": res["check_before"], "after": res["check_after"]},
           "steps": args.steps, "fail_tail": args.fail_tail, "anchor": args.anchor, "minutes": round((time.perf_counter() - t0) / 60, 2)}
    print(f"labels {out['labels']} ({out['labels_success']} successes); scored on {out['scored']} other episodes "
          f"({out['scored_success']} successes), s calibrated on half, figures on the other half:")
    for k in ("before", "after"):
        b = out[k]
        g = b["progress"]
        print(f"  {k:6s}: s {b['threshold_s']:.2f}  precision {b['precision']:.2f}  recall {b['recall']:.2f}  "
              f"({b['episodes']} episodes, {b['counts']}); progress reward: corr(d, steps left) on successes "
              f"{g['corr_success']:.2f}, steps with r < 0 {g['negative_share']:.2f}, per-step std {g['std']:.2f}")
    print_result(out)
    return out


if __name__ == "__main__":
    main()
