"""Re-training the steps-to-go head on judged episodes read back from a real SQLite file:
what is usable (a frame and proprioception for every step), what is skipped and why, and
the errors that name the fix. The worker's job around it: tests/core/worker/test_worker.py."""
from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch

from core.learning.checkpoint import read_checkpoint, save_checkpoint
from core.learning.policy import DojoPolicy
from core.worker.refine_from_labels import RefineFromLabelsError, judged_episodes, refine_from_labels
from storage import init_db, repo
from tests.core.learning.helpers import INSTRUCTIONS, tiny_config


def _jpeg(value: int, size: int = 16) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.full((size, size, 3), value, np.uint8)).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def _write(db, task_id, sid, uid, *, success, T=5, proprio=True, frames="all", label=True, actor=None):
    d = np.linspace(8, 0.5 if success else 2.5, T + 1)
    with db.write() as s:
        ep = repo.finish_episode(
            s, uid=uid, task_id=task_id, session_id=sid, instruction=INSTRUCTIONS[0], seed=3,
            steps=repo.steps_from_arrays(d=d, proprio=np.full((T + 1, 2), 0.1) if proprio else None),
            frames={t: _jpeg(250 if success and t == T else 120) for t in range(T + 1)
                    if frames == "all" or t % 2 == 0},
            detector_success=success, detector_threshold=1.0).episode
        if label:
            repo.label_episode(s, ep.id, success, actor=actor)
        return ep.id


@pytest.fixture
def setup(tmp_path):
    db = init_db(tmp_path / "dojo.sqlite")
    with db.write() as s:
        task = repo.create_task(s, "t", "tabletop")
        sid = repo.start_session(s, task.id).id
        rev = repo.create_user(s, "rev", "a-long-password", "reviewer")
    torch.manual_seed(0)
    path = tmp_path / "stg.pt"
    save_checkpoint(path, DojoPolicy(tiny_config(image_size=16)), {"threshold_s": 1.0, "patience": 1})
    return db, task.id, sid, rev, path


def test_judged_episodes_come_back_with_frames_and_proprio_and_the_rest_is_counted(setup):
    db, task_id, sid, rev, _ = setup
    ok = [_write(db, task_id, sid, f"ok{i}", success=i % 2 == 0, actor=rev) for i in range(3)]
    _write(db, task_id, sid, "old", success=True, proprio=False, actor=rev)
    _write(db, task_id, sid, "sparse", success=False, frames="every 2nd", actor=rev)
    _write(db, task_id, sid, "unjudged", success=True, label=False)
    with db.read() as s:
        eps, ids, skipped = judged_episodes(s, task_id=task_id, session_id=sid, image_size=16, proprio_dim=2)
    assert ids == ok and [e.success for e in eps] == [True, False, True]
    assert eps[0].frames.shape == (6, 16, 16, 3) and eps[0].proprio.shape == (6, 2)
    assert abs(int(eps[0].frames[-1].mean()) - 250) <= 3 and eps[0].goal_index is None
    assert skipped == {"no proprioception stored (episodes written before Dojo stored it)": 1,
                       "frames stored for some steps only (frame_every > 1)": 1}
    with db.read() as s:  # resized to the model's input when the robot's camera differs
        eps8, _, _ = judged_episodes(s, task_id=task_id, session_id=sid, image_size=8)
    assert eps8[0].frames.shape == (6, 8, 8, 3)


def test_refining_needs_enough_labels_of_both_kinds_and_writes_nothing_otherwise(setup, tmp_path):
    db, task_id, sid, rev, path = setup
    for i in range(4):
        _write(db, task_id, sid, f"a{i}", success=True, actor=rev)
    out = tmp_path / "out"
    with pytest.raises(RefineFromLabelsError, match="4 judged episodes can be used.*at least 10.*Review page"):
        refine_from_labels(db.read, task_id=task_id, session_id=sid, reward_checkpoint=str(path), out=out)
    with pytest.raises(RefineFromLabelsError, match="all 4 judged episodes are successes"):
        refine_from_labels(db.read, task_id=task_id, session_id=sid, reward_checkpoint=str(path), out=out,
                           min_labels=3)
    assert not out.exists()


def test_refining_from_labels_writes_a_reward_model_with_its_held_out_figures(setup, tmp_path):
    db, task_id, sid, rev, path = setup
    ids = [_write(db, task_id, sid, f"e{i}", success=i % 2 == 0, actor=rev) for i in range(12)]
    res = refine_from_labels(db.read, task_id=task_id, session_id=sid, reward_checkpoint=str(path),
                             out=tmp_path / "out", steps=3, log=lambda m: None)
    assert (res["labels"], res["fit"], res["held_out"], res["episode_ids"]) == (12, 8, 4, ids)
    assert res["check_before"]["episodes"] == res["check_after"]["episodes"] == 2  # same second half
    ck = read_checkpoint(res["reward_checkpoint"])
    assert ck["meta"]["stage"] == "reward_refined" and ck["meta"]["threshold_s"] == res["threshold_s"]
    assert ck["meta"]["relabel"]["session_id"] == sid and (tmp_path / "out" / "relabel.json").exists()


def test_the_cli_refines_from_a_sessions_labels(setup, tmp_path, capsys):
    from core.cli import main

    db, task_id, sid, rev, path = setup
    for i in range(10):
        _write(db, task_id, sid, f"c{i}", success=i % 2 == 0, actor=rev)
    url = str(db.engine.url.database)
    assert main(["refine-labels", "--db", url, "--session", str(sid), "--out", str(tmp_path / "cli")]) == 2
    assert "does not record its reward model: pass --reward" in capsys.readouterr().err
    assert main(["refine-labels", "--db", url, "--session", str(sid), "--reward", str(path), "--steps", "2",
                 "--out", str(tmp_path / "cli")]) == 0
    out = capsys.readouterr().out
    res = json.loads(out[out.index("{"):])
    assert res["labels"] == 10 and res["held_out"] == 0 and res["threshold_s"] is None  # < 12: none held out
    assert read_checkpoint(res["reward_checkpoint"])["meta"].get("threshold_s") is None
