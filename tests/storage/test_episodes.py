"""Episodes with their steps and frames: one transaction, idempotent replays, overrides, labels."""
from __future__ import annotations


import numpy as np
import pytest
from sqlalchemy import func, select

from storage import repo
from storage.models import AuditEntry, Episode, Frame, Step
from tests.storage import procs


def _counts(db):
    with db.read() as s:
        return tuple(s.scalar(select(func.count()).select_from(m)) for m in (Episode, Step, Frame))


def _write(db, task_id, uid="s1-r1-seed7", n=30, **kw):
    d = np.linspace(10, 1, n).astype(np.float32)
    steps = repo.steps_from_arrays(d=d, actions=np.zeros((n, 2), np.float32), rewards=-np.diff(d, append=d[-1]),
                                   detector_counts=np.arange(n), frame_every=2)
    frames = {t: f"jpeg{t}".encode() for t in range(0, n, 2)}
    with db.write() as s:
        return repo.finish_episode(s, uid=uid, task_id=task_id, steps=steps, frames=frames, detector_success=True,
                                   detector_step=n - 1, gt_success=True, seed=7, instruction="push the red cube",
                                   **kw)


def test_finish_episode_writes_row_steps_and_frames(db, task_id):
    res = _write(db, task_id, detector_threshold=2.0)
    assert res.written
    with db.read() as s:
        ep = repo.get_episode_by_uid(s, "s1-r1-seed7")
        assert (ep.status, ep.length, ep.seed, ep.source, ep.detector_step) == ("finished", 30, 7, "practice", 29)
        assert ep.final_d == pytest.approx(1.0) and ep.min_d == pytest.approx(1.0)
        assert ep.total_return == pytest.approx(9.0, abs=1e-4) and ep.ended_at.tzinfo is not None
        steps = repo.episode_steps(s, ep.id)
        assert [st.t for st in steps] == list(range(30)) and steps[3].action == [0.0, 0.0]
        assert steps[3].frame_t == 2 and steps[5].detector_count == 5
        assert repo.frame_times(s, ep.id) == list(range(0, 30, 2))
        assert repo.get_frame(s, ep.id, 5).data == b"jpeg4"  # scrubber: last stored frame at or before t
        assert len(repo.episode_curve(s, ep.id)) == 30
    assert _counts(db) == (1, 30, 15)


def test_replaying_a_finished_episode_writes_nothing(db, task_id):
    first = _write(db, task_id)
    again = _write(db, task_id, n=12)  # a crash-replay of the same rollout
    assert first.written and not again.written
    assert again.episode.id == first.episode.id and again.episode.length == 30
    assert _counts(db) == (1, 30, 15)


def test_an_error_mid_write_commits_nothing(db, task_id):
    bad_steps = [{"t": 0, "d": 1.0}, {"t": 0, "d": 2.0}]  # duplicate t
    with pytest.raises(repo.EpisodeError, match="t=0"):
        with db.write() as s:
            repo.finish_episode(s, uid="bad", task_id=task_id, steps=bad_steps, frames=[b"x"])
    with pytest.raises(repo.EpisodeError, match="encoded image bytes"):
        with db.write() as s:
            repo.finish_episode(s, uid="bad", task_id=task_id, steps=[{"d": 1.0}], frames=[np.zeros(3)])
    assert _counts(db) == (0, 0, 0)


def test_start_then_finish_keeps_one_row_and_an_override_made_while_running(db, task_id, users):
    with db.write() as s:
        ep = repo.start_episode(s, uid="u1", task_id=task_id, seed=3, source="eval", worker="w")
        assert ep.status == "running"
    with db.write() as s:
        repo.override_episode(s, ep.id, True, actor=users["supervisor"])
    with db.read() as s:
        assert repo.episode_override(s, ep.id) is True  # what the worker polls each step
    res = _write(db, task_id, uid="u1")
    assert res.written and res.episode.id == ep.id
    with db.read() as s:
        e = repo.get_episode(s, ep.id)
        assert (e.status, e.source, e.override_success, e.override_by) == ("finished", "eval", True, "sup")
        assert repo.episode_outcomes(s, [ep.id]) == {ep.id: True}
    assert _counts(db)[0] == 1


def test_crash_recovery_aborts_running_and_a_replay_completes_the_same_row(db, task_id):
    with db.write() as s:
        ep_id = repo.start_episode(s, uid="job1-robot0-ep4", task_id=task_id, worker="host:0").id
    with db.write() as s:  # the worker restarts
        assert repo.abort_running_episodes(s, worker="host:0", reason="worker restarted") == [ep_id]
    with db.read() as s:
        assert repo.get_episode(s, ep_id).status == "aborted"
    with db.write() as s:  # the resumed job starts that rollout again
        again = repo.start_episode(s, uid="job1-robot0-ep4", task_id=task_id, worker="host:0")
        assert again.id == ep_id and again.status == "running" and again.abort_reason is None
    _write(db, task_id, uid="job1-robot0-ep4")
    with db.read() as s:
        assert s.scalar(select(func.count()).select_from(Episode).where(Episode.status == "finished")) == 1
    with pytest.raises(repo.EpisodeError, match="needs worker"):
        with db.write() as s:
            repo.abort_running_episodes(s)


def test_two_processes_replaying_the_same_episode_write_it_once(db, db_url, task_id):
    ctx = procs.CTX
    start, out = ctx.Event(), ctx.Queue()
    children = [ctx.Process(target=procs.finish_same_episode, args=(db_url, "dup", task_id, start, out))
                for _ in range(2)]
    for p in children:
        p.start()
    start.set()
    results = sorted(out.get(timeout=120) for _ in children)
    for p in children:
        p.join(30)
    assert results == [("ok", False), ("ok", True)]
    assert _counts(db) == (1, 3, 3)


def test_overrides_and_labels_are_recorded_with_who_and_when_and_audited(db, task_id, users):
    ep_id = _write(db, task_id).episode.id
    with db.write() as s:
        repo.override_episode(s, ep_id, False, actor=users["supervisor"], note="cube fell off")
        repo.label_episode(s, ep_id, False, actor=users["reviewer"])
    with db.read() as s:
        ep = repo.get_episode(s, ep_id)
        assert (ep.override_success, ep.override_by, ep.label_success, ep.label_by) == (False, "sup", False, "rev")
        assert ep.override_at is not None and ep.label_at is not None and ep.outcome is False
        log = repo.audit_log(s, target_type="episode", target_id=ep_id)
        assert [(e.action, e.username) for e in log] == [("label", "rev"), ("override", "sup")]
        assert log[1].details["from"] is None and log[1].details["to"] is False
        assert log[1].details["note"] == "cube fell off"
    with db.write() as s:  # clearing an override
        repo.override_episode(s, ep_id, None, actor=users["admin"])
    with db.read() as s:
        ep = repo.get_episode(s, ep_id)
        assert ep.override_success is None and ep.override_by is None and ep.outcome is True


def test_overrides_and_labels_need_the_right_role_and_episode_state(db, task_id, users):
    ep_id = _write(db, task_id).episode.id
    with db.write() as s:
        running = repo.start_episode(s, uid="live", task_id=task_id).id
    for who, fn in (("reviewer", repo.override_episode), ("viewer", repo.label_episode)):
        with pytest.raises(repo.PermissionDenied), db.write() as s:
            fn(s, ep_id, True, actor=users[who])
    with pytest.raises(repo.EpisodeError, match="only finished"), db.write() as s:
        repo.label_episode(s, running, True, actor=users["reviewer"])
    with db.write() as s:
        repo.abort_episode(s, running, "robot disconnected")
    with pytest.raises(repo.EpisodeError, match="aborted"), db.write() as s:
        repo.override_episode(s, running, True, actor=users["supervisor"])
    with db.read() as s:
        assert s.scalar(select(func.count()).select_from(AuditEntry).where(AuditEntry.action == "label")) == 0
