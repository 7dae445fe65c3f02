"""The worker's practice job re-training its reward model: periodic re-refinement during practice,
and the refine job on a session's judged episodes that a later practice job then uses."""
from __future__ import annotations

import pytest

from core.worker.runner import Worker
from storage import init_db, repo
from tests.core.worker.conftest import TINY_ENV, practice_params


def test_a_practice_job_re_refining_its_detector_records_the_labels_with_each_checkpoint(tmp_path, stage1):
    db = init_db(tmp_path / "dojo.sqlite")
    with db.write() as s:
        job_id = repo.enqueue_job(s, "practice", practice_params(
            stage1, refine_every=1, refine_min_labels=1, refine_steps=2, max_episodes=4, eval_every=0,
            eval_episodes=0)).id
    assert Worker(db, name="w1", data_dir=tmp_path).run(exit_when_idle=True) == 1
    with db.read() as s:
        job = repo.get_job(s, job_id)
        cks = [c for c in repo.list_checkpoints(s, task_id=job.task_id) if c.stage == "si"]
    assert job.status == "done", job.error
    assert cks and all(c.metrics["refine_labels"] >= 1 for c in cks)
    assert max(c.metrics["labels_total"] for c in cks) == sum(c.metrics["refine_labels"] for c in cks)
    assert (tmp_path / "runs" / f"practice-job{job_id}" / "reward_refined.pt").exists()


def test_a_refine_job_retrains_the_head_on_a_sessions_judged_episodes_and_practice_uses_it(tmp_path, stage1):
    """Practice stores each frame and the robot's proprioception; people judge its episodes;
    a refine job re-trains the reward model's steps-to-go head on them from the database;
    a practice session given the new reward model runs with the s it calibrated."""
    import torch

    from core.learning.checkpoint import read_checkpoint

    db = init_db(tmp_path / "dojo.sqlite")
    with db.write() as s:
        task = repo.create_task(s, "b2b", "tabletop", dict(TINY_ENV), detector_threshold=1.0)
        reviewer = repo.create_user(s, "rev", "a-long-password", "reviewer")
        first = repo.enqueue_job(s, "practice", practice_params(stage1, max_episodes=14, eval_every=0, eval_episodes=0),
                                 task_id=task.id).id
    assert Worker(db, name="w1", data_dir=tmp_path).run(exit_when_idle=True) == 1
    with db.write() as s:
        job = repo.get_job(s, first)
        assert job.status == "done", job.error
        sid = job.session_id
        assert repo.get_session(s, sid).params["reward_checkpoint"] == str(stage1.reward)
        eps = [e for e in repo.list_episodes(s, session_id=sid, limit=100) if e.status == "finished"]
        assert len(eps) >= 14
        steps = repo.episode_steps(s, eps[0].id)
        assert all(len(x.proprio) == 2 for x in steps) and len(steps) == eps[0].length + 1
        too_few = repo.enqueue_job(s, "refine", {"session_id": sid}, task_id=task.id).id
        reviewer = s.get(type(reviewer), reviewer.id)
        repo.label_episode(s, eps[0].id, True, actor=reviewer)
    assert Worker(db, name="w2", data_dir=tmp_path).run(exit_when_idle=True) == 1
    with db.write() as s:
        j = repo.get_job(s, too_few)
        assert j.status == "failed" and "1 judged episodes can be used" in j.error and "Review page" in j.error
        reviewer = s.get(type(reviewer), reviewer.id)
        for k, e in enumerate(eps[1:]):  # the reviewer's judgment: every other one a success
            repo.label_episode(s, e.id, k % 2 == 0, actor=reviewer)
        ok = repo.enqueue_job(s, "refine", {"steps": 5}, task_id=task.id).id  # session: the newest judged one
    assert Worker(db, name="w2", data_dir=tmp_path).run(exit_when_idle=True) == 1
    with db.read() as s:
        j = repo.get_job(s, ok)
    assert j.status == "done", j.error
    res = j.result
    assert j.session_id == sid and res["labels"] == len(eps) and res["held_out"] == len(eps[::3])
    assert res["fit"] + res["held_out"] == len(eps) and res["refined_from"] == str(stage1.reward)
    assert res["check_before"]["episodes"] + res["check_after"]["episodes"] > 0 and res["threshold_s"] is not None
    new = read_checkpoint(res["reward_checkpoint"])
    old = read_checkpoint(stage1.reward)
    assert new["meta"]["stage"] == "reward_refined" and new["meta"]["threshold_s"] == res["threshold_s"]
    assert new["meta"]["relabel"]["episode_ids"] == sorted(e.id for e in eps)
    changed = [k for k in old["state_dict"] if not torch.equal(old["state_dict"][k], new["state_dict"][k])]
    assert changed and not any(k.startswith("action_head") for k in changed)
    # A practice session with the re-trained reward model runs with its own s, not the task's 1.0.
    with db.write() as s:
        again = repo.enqueue_job(s, "practice", practice_params(
            stage1, reward_checkpoint=res["reward_checkpoint"], threshold_s=None, max_episodes=2, eval_every=0,
            eval_episodes=0), task_id=task.id).id
    assert Worker(db, name="w3", data_dir=tmp_path).run(exit_when_idle=True) == 1
    with db.read() as s:
        j = repo.get_job(s, again)
        assert j.status == "done", j.error
        ran = {e.detector_threshold for e in repo.list_episodes(s, session_id=j.session_id, limit=100)}
    assert len(ran) == 1 and ran.pop() == pytest.approx(res["threshold_s"])
