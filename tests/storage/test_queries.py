"""UI queries: review queue order, counts, detector quality, metrics; fast at 10,000 episodes."""
from __future__ import annotations

import datetime as dt
import time

import pytest
from sqlalchemy import insert

from storage import repo
from storage.models import Episode, utcnow


def _ep(db, task_id, uid, *, det, gt=None, final_d=5.0, ck=None, d=None):
    d = d or [8.0, 6.0, final_d]
    with db.write() as s:
        return repo.finish_episode(s, uid=uid, task_id=task_id, checkpoint_id=ck, detector_success=det,
                                   gt_success=gt, steps=repo.steps_from_arrays(d=d), detector_threshold=2.0,
                                   ).episode.id


def test_review_queue_puts_disagreements_then_ambiguity_first(db, task_id, users):
    far = _ep(db, task_id, "far", det=False, final_d=9.0)
    near = _ep(db, task_id, "near", det=False, final_d=2.2)
    nearer = _ep(db, task_id, "nearer", det=True, final_d=1.95)
    vs_gt = _ep(db, task_id, "vs-gt", det=True, gt=False, final_d=0.5)
    vs_override = _ep(db, task_id, "vs-override", det=True, final_d=0.1)
    labeled = _ep(db, task_id, "labeled", det=True, final_d=2.0)
    with db.write() as s:
        repo.override_episode(s, vs_override, False, actor=users["supervisor"])
        repo.label_episode(s, labeled, True, actor=users["reviewer"])
        repo.start_episode(s, uid="running", task_id=task_id)
    with db.read() as s:
        q = repo.review_queue(s)
        assert [i.episode.id for i in q] == [vs_gt, vs_override, nearer, near, far]
        assert [i.reason for i in q[:3]] == ["detector vs ground truth", "detector vs override", "near threshold"]
        assert q[2].ambiguity == pytest.approx(0.05)
        assert repo.review_backlog(s) == 5
        assert len(repo.review_queue(s, include_labeled=True)) == 6


def test_detector_quality_against_human_labels(db, task_id, users):
    ck = None
    with db.write() as s:
        ck = repo.add_checkpoint(s, "si", "/c.pt", task_id=task_id).id
    # detector (as run) vs label: tp, fp, fn, tn, tp
    cases = [(True, True, [3, 1, 1]), (True, False, [3, 1.5, 1.9]), (False, True, [3, 2.5, 2.1]),
             (False, False, [9, 8, 7]), (True, True, [2, 1, 0.5])]
    ids = [_ep(db, task_id, f"q{i}", det=det, ck=ck, d=d) for i, (det, _, d) in enumerate(cases)]
    _ep(db, task_id, "unlabeled", det=True, ck=ck)
    with db.write() as s:
        for eid, (_, lab, _) in zip(ids, cases):
            repo.label_episode(s, eid, lab, actor=users["reviewer"])
    with db.write() as s:
        live = repo.compute_detector_quality(s, ck)
        assert (live.tp, live.fp, live.fn, live.tn, live.n_labeled) == (2, 1, 1, 1, 5)
        assert live.precision == pytest.approx(2 / 3) and live.recall == pytest.approx(2 / 3)
        # Re-run on the stored curves at s=1.0, patience 2 (d <= 1 twice in a row): q0 and q4 fire;
        # q1 ended at the live detector's fire before the stricter one fired: it cannot tell, left out.
        strict = repo.compute_detector_quality(s, ck, threshold=1.0, patience=2)
        assert (strict.tp, strict.fp, strict.fn, strict.tn, strict.n_labeled) == (2, 0, 1, 1, 4)
        assert strict.precision == 1.0 and strict.recall == pytest.approx(2 / 3)
    with db.read() as s:
        hist = repo.detector_quality_history(s, checkpoint_id=ck)
        assert [h.threshold for h in hist] == [1.0, None]


def test_success_by_checkpoint_and_episodes_per_hour(db, task_id, users):
    with db.write() as s:
        c1 = repo.add_checkpoint(s, "sft", "/1.pt", task_id=task_id).id
        c2 = repo.add_checkpoint(s, "si", "/2.pt", parent_id=c1, task_id=task_id).id
    for i, det in enumerate([True, False, False]):
        _ep(db, task_id, f"a{i}", det=det, gt=det, ck=c1)
    for i, det in enumerate([True, True]):
        _ep(db, task_id, f"b{i}", det=det, ck=c2)
    with db.write() as s:  # an override counts as the episode's outcome
        repo.override_episode(s, repo.get_episode_by_uid(s, "a1").id, True, actor=users["supervisor"])
    with db.read() as s:
        stats = {st.checkpoint_id: st for st in repo.success_by_checkpoint(s, task_id=task_id)}
        assert (stats[c1].episodes, stats[c1].successes, stats[c1].gt_successes, stats[c1].overrides) == (3, 2, 1, 1)
        assert stats[c2].rate == 1.0 and stats[c2].gt_rate is None
        hours = repo.episodes_per_hour(s, hours=2)
        assert sum(n for _, n, _ in hours) == 5 and sum(k for _, _, k in hours) == 4
        assert hours[-1][0] == utcnow().replace(minute=0, second=0, microsecond=0)
        counts = repo.status_counts(s)
        assert counts["episodes"] == {"finished": 5}


def test_metrics_series(db, task_id):
    with db.write() as s:
        ps = repo.start_session(s, task_id).id
        for it in range(5):
            repo.log_metrics(s, {"success_rate": it / 10, "loss": 1 / (it + 1)}, it, session_id=ps)
    with db.read() as s:
        assert repo.metric_series(s, "success_rate", session_id=ps) == [(float(i), i / 10) for i in range(5)]
        assert repo.metric_series(s, "loss", session_id=ps, since_x=2.5) == [(3.0, 0.25), (4.0, 0.2)]
        assert repo.metric_names(s, session_id=ps) == ["loss", "success_rate"]


def test_page_queries_stay_fast_with_10000_episodes(db, task_id):
    with db.write() as s:
        cks = [repo.add_checkpoint(s, "si", f"/{i}.pt", task_id=task_id).id for i in range(10)]
        robot = repo.register_robot(s, "sim-0", task_id=task_id).id
        now = utcnow()
        rows = [{"uid": f"bulk{i}", "task_id": task_id, "checkpoint_id": cks[i % 10], "robot_id": robot,
                 "source": "practice", "status": "finished", "detector_success": i % 3 == 0,
                 "gt_success": i % 4 == 0, "final_d": (i % 97) / 10, "detector_threshold": 2.0,
                 "started_at": now - dt.timedelta(minutes=i // 10), "ended_at": now - dt.timedelta(minutes=i // 10)}
                for i in range(10_000)]
        s.execute(insert(Episode), rows)
    timings = {}
    with db.read() as s:
        for name, fn in [("review_queue", lambda: repo.review_queue(s, limit=50)),
                         ("success_by_checkpoint", lambda: repo.success_by_checkpoint(s)),
                         ("episodes_per_hour", lambda: repo.episodes_per_hour(s, hours=24)),
                         ("status_counts", lambda: repo.status_counts(s)),
                         ("robot_summary", lambda: repo.robot_summary(s)),
                         ("review_backlog", lambda: repo.review_backlog(s)),
                         ("list_episodes", lambda: repo.list_episodes(s, limit=100, checkpoint_id=cks[3]))]:
            best = float("inf")
            for _ in range(3):  # the best of three: a busy box's scheduler stall is not the query's cost
                t0 = time.perf_counter()
                out = fn()
                best = min(best, time.perf_counter() - t0)
            timings[name] = best
            assert out
        assert sum(st.episodes for st in repo.success_by_checkpoint(s)) == 10_000
        assert sum(n for _, n, _ in repo.episodes_per_hour(s, hours=24)) == 10_000
    # Generous bound for a busy 2-core box; typical is 5-30 ms each.
    assert max(timings.values()) < 0.5, timings
