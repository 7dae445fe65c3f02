"""Re-calibrating the detector's s from people's labels: the detector replayed on stored
steps-to-go curves (censoring where the live detector ended the episode first), the sweep's
choice, and applying it to the task (role-checked, audited)."""
from __future__ import annotations

import pytest

from storage import repo
from storage.models import Task


def test_replay_detector_leaves_out_what_the_curve_cannot_tell():
    # Fired live at the last step (d 0.5 <= s_run): a stricter s of 0.25 never fires on the
    # stored curve, but the robot stopped there, so it cannot tell.
    assert repo.replay_detector([10, 5, 2, 0.5], True, 0.25) is None
    assert repo.replay_detector([10, 5, 2, 0.5], True, 1.0) is True
    assert repo.replay_detector([10, 5, 2, 0.5], True, 3.0, patience=2) is True   # 2, 0.5
    # Ran to its step limit: a miss at any s that never fires is a real "no".
    assert repo.replay_detector([10, 6, 3, 2.5], False, 2.0) is False
    assert repo.replay_detector([10, 6, 3, 2.5], False, 3.0, patience=3) is False  # 3, 2.5 only twice
    assert repo.replay_detector([10, None, 1.0], False, 2.0) is True


def test_sweep_counts_each_threshold_by_hand_and_picks_the_best_decided_s():
    curves = [[10, 5, 2, 0.5],      # success, fired live
              [10, 6, 3, 2.5, 2.5],  # failure, step limit
              [8, 0.8],              # failure, fired live (a false positive as run)
              [9, 7, 5, 4, 3.5]]     # success the live detector missed
    truths = [True, False, False, True]
    fired = [True, False, True, False]
    out = repo.sweep_judged(curves, truths, fired, [0.25, 0.5, 1.0, 2.5, 4.0], patience=1, beta=0.5,
                            min_decided=0.5)
    rows = {r["threshold"]: r for r in out["rows"]}
    # s = 0.25: A and C cannot tell; B tn; D fn.
    assert [rows[0.25][k] for k in ("tp", "fp", "fn", "tn", "censored")] == [0, 0, 1, 1, 2]
    # s = 0.5: A tp (0.5 <= 0.5); C cannot tell (0.8 > 0.5); B tn; D fn.
    assert [rows[0.5][k] for k in ("tp", "fp", "fn", "tn", "censored")] == [1, 0, 1, 1, 1]
    # s = 1.0: A tp, C fp, B tn, D fn.
    assert [rows[1.0][k] for k in ("tp", "fp", "fn", "tn", "censored")] == [1, 1, 1, 1, 0]
    # s = 2.5: A tp, B fp (2.5), C fp, D fn (3.5 > 2.5).
    assert [rows[2.5][k] for k in ("tp", "fp", "fn", "tn", "censored")] == [1, 2, 1, 0, 0]
    # s = 4.0: everything fires: A tp, B fp, C fp, D tp.
    assert [rows[4.0][k] for k in ("tp", "fp", "fn", "tn", "censored")] == [2, 2, 0, 0, 0]
    assert rows[0.5]["precision"] == 1.0 and rows[0.5]["recall"] == 0.5
    # F0.5: s=0.5 -> 1.25*1*0.5/(0.25+0.5) = 0.833; s=4 -> 1.25*.5*1/(.125+1) = 0.556.
    assert rows[0.5]["f_beta"] == pytest.approx(0.8333, abs=1e-3)
    assert out["best"]["threshold"] == 0.5
    # Requiring 80 % of the episodes decided rules out s = 0.5 (3 of 4) and 0.25 (2 of 4).
    strict = repo.sweep_judged(curves, truths, fired, [0.25, 0.5, 1.0], min_decided=0.8)
    assert strict["best"]["threshold"] == 1.0
    assert repo.sweep_judged(curves, truths, fired, [0.25, 0.5, 1.0, 4.0], min_decided=0.8)["best"]["threshold"] == 4.0
    # A plateau (s = 1 .. 4 all score the same on these curves) keeps the s in use.
    flat = repo.sweep_judged([[9, 0.5], [9, 8, 7]], [True, False], [True, False], [0.5, 1.0, 2.0, 3.0, 4.0], current=3.0)
    assert flat["best"]["threshold"] == 3.0
    assert repo.sweep_judged([[9, 0.5], [9, 8, 7]], [True, False], [True, False], [0.5, 1.0, 2.0])["best"]["threshold"] == 0.5
    with pytest.raises(ValueError, match="differ in length"):
        repo.sweep_judged(curves, truths[:2], fired, [1.0])


def _judged(db, task_id, session_id, uid, d, *, live_fired, truth, users, how="label", s_run=1.0):
    with db.write() as s:
        eid = repo.finish_episode(s, uid=uid, task_id=task_id, session_id=session_id, detector_success=live_fired,
                                  steps=repo.steps_from_arrays(d=d), detector_threshold=s_run).episode.id
        if how == "label":
            repo.label_episode(s, eid, truth, actor=users["reviewer"])
        elif how == "override":
            repo.override_episode(s, eid, truth, actor=users["supervisor"])
    return eid


def test_threshold_sweep_on_a_session_and_applying_it(db, task_id, users):
    with db.write() as s:
        sid = repo.start_session(s, task_id, name="p1").id
        other = repo.start_session(s, task_id, name="p2").id
    # A detector too eager at s = 1 (as run): failures park at d ~ 0.8-0.9, successes reach ~0.2.
    for i in range(6):
        _judged(db, task_id, sid, f"ok{i}", [9, 5, 2, 0.2], live_fired=True, truth=True, users=users)
    for i in range(4):
        _judged(db, task_id, sid, f"near{i}", [9, 4, 0.9], live_fired=True, truth=False, users=users,
                how="override" if i % 2 else "label")
    for i in range(4):
        _judged(db, task_id, sid, f"far{i}", [9, 8, 6, 5], live_fired=False, truth=False, users=users)
    _judged(db, task_id, other, "elsewhere", [9, 0.1], live_fired=True, truth=False, users=users)
    with db.write() as s:  # an unjudged episode is not counted
        repo.finish_episode(s, uid="unjudged", task_id=task_id, session_id=sid, detector_success=True,
                            steps=repo.steps_from_arrays(d=[9, 0.5]), detector_threshold=1.0)
    with db.read() as s:
        sessions = repo.labeled_sessions(s, task_id)
        assert [(x["session_id"], x["judged"], x["ran_with"]) for x in sessions] == [(other, 1, [1.0]), (sid, 14, [1.0])]
        assert sessions[0]["patience"] is None  # these rows carry no meta.patience
        few = repo.threshold_sweep(s, task_id, session_id=other)
        assert few["best"] is None and "only 1 judged episodes" in few["reason"]
        sw = repo.threshold_sweep(s, task_id, session_id=sid, patience=1)
    assert sw["judged"] == 14 and sw["ran_with"] == [1.0]
    assert sw["as_run"]["precision"] == pytest.approx(0.6) and sw["as_run"]["recall"] == 1.0
    # s in [0.25, 0.75]: the six successes fire, the near-misses cannot tell (4 of 14), the far
    # ones are true negatives: precision 1, recall 1; the tie goes to the s closest to the one in
    # use (1.0, as run: the task has none set), 0.75.
    assert sw["best"]["threshold"] == 0.75
    assert (sw["best"]["precision"], sw["best"]["recall"], sw["best"]["censored"]) == (1.0, 1.0, 4)
    assert sw["rows"][0]["threshold"] == 0.25 and sw["rows"][-1]["threshold"] == 8.0
    with db.write() as s:
        with pytest.raises(repo.PermissionDenied):
            repo.apply_threshold_from_labels(s, task_id, sw, 0.75, actor=users["reviewer"])
    with db.write() as s:
        with pytest.raises(ValueError, match="not one of the swept"):
            repo.apply_threshold_from_labels(s, task_id, sw, 0.3, actor=users["supervisor"])
    with db.write() as s:
        repo.apply_threshold_from_labels(s, task_id, sw, 0.75, actor=users["supervisor"])
    with db.read() as s:
        task = s.get(Task, task_id)
        assert task.detector_threshold == 0.75 and task.detector_patience == 1
        cal = task.calibration
        assert cal["threshold_s"] == 0.75 and cal["precision"] == 1.0 and cal["judged"] == 14
        assert cal["session_id"] == sid and "14 episodes of session" in cal["source"]
        assert cal["as_run"]["precision"] == pytest.approx(0.6)
        log = repo.audit_log(s, action="update_task")
        assert log and log[0].username == users["supervisor"].username and log[0].details["after"]["detector_threshold"] == 0.75
