"""One Stage-1 model over several tasks, asked for from the Tasks page (ui/prepare.py) and run by
the worker: the checkpoint joins the task it was asked for, and that task's evaluation runs in its
own environment, not in every task the model read."""
from __future__ import annotations

import json

from storage import init_db, repo
from ui import prepare

B2B = {"family": "block2block", "image_size": 32, "max_steps": 20}
B2L = {"family": "block2location", "image_size": 32, "max_steps": 20}


def test_one_model_over_two_tasks_is_evaluated_on_the_task_it_belongs_to(tmp_path):
    from core.learning.checkpoint import read_checkpoint
    from core.worker.checkpoints import task_environment
    from core.worker.runner import Worker

    db = init_db(tmp_path / "dojo.sqlite")
    with db.write() as s:
        sup = repo.create_user(s, "sup", "sup-password", "supervisor")
        a = repo.create_task(s, "blocks", "tabletop", B2B).id
        b = repo.create_task(s, "places", "tabletop", B2L).id
        da = prepare.enqueue_demos(s, a, 4, actor=sup).id
        db_ = prepare.enqueue_demos(s, b, 4, actor=sup).id
    worker = Worker(db, name="w", data_dir=tmp_path)
    assert worker.run(exit_when_idle=True) == 2
    with db.read() as s:
        other = prepare.readiness(s, a).other_tasks
        b_dataset = repo.get_job(s, db_).result["dataset"]
    assert [d["path"] for d in other] == [b_dataset] and other[0]["task"] == "places"
    with db.write() as s:
        sup = repo.get_user(s, "sup")
        job = prepare.enqueue_sft(s, a, da, epochs=1, max_minutes=5, also=[b_dataset], actor=sup,
                                  policy={"d_model": 32, "n_layers": 1})
        assert job.params["data"] == f"{repo.get_job(s, da).result['dataset']},{b_dataset}"
        job.params = {**job.params, "eval_episodes": 0, "threads": 1, "device": "cpu", "batch_size": 32}
    assert worker.run(exit_when_idle=True) == 1
    with db.read() as s:
        sft = repo.list_jobs(s, kind="sft")[0]
        assert sft.status == "done", sft.error
        ck = repo.list_checkpoints(s, task_id=a)[0]
        cid, path = ck.id, ck.path
    meta = read_checkpoint(path)["meta"]
    assert meta["backend"] == "multitask" and len(meta["env_config"]["tasks"]) == 2
    assert task_environment(db, a, meta) == ("tabletop", B2B)
    assert task_environment(db, b, meta) == ("tabletop", B2L)
    with db.write() as s:
        repo.enqueue_job(s, "eval", {"checkpoint_id": cid, "episodes": 2, "n_envs": 2, "device": "cpu",
                                     "threshold": 2.0}, task_id=a)
    assert worker.run(exit_when_idle=True) == 1
    with db.read() as s:
        ev = repo.list_jobs(s, kind="eval")[0]
        assert ev.status == "done", ev.error
        assert ev.result["environment"] == {"backend": "tabletop", "env_config": B2B} and ev.result["episodes"] == 2
    run = json.loads((tmp_path / "runs" / f"sft-job{sft.id}" / "run.json").read_text())
    assert run["backend"] == "multitask" and run["train_episodes"] + run["val_episodes"] == 8


def test_a_dataset_of_this_task_or_an_unknown_path_is_not_another_tasks(tmp_path):
    import pytest

    db = init_db(tmp_path / "dojo.sqlite")
    with db.write() as s:
        sup = repo.create_user(s, "sup", "sup-password", "supervisor")
        a = repo.create_task(s, "blocks", "tabletop", B2B).id
        j = prepare.enqueue_demos(s, a, 4, actor=sup)
        j.status, j.result = "done", {"dataset": "/d/a", "episodes": 4}
        jid = j.id
    with pytest.raises(ValueError, match="not a finished or imported dataset of another task"), db.write() as s:
        prepare.enqueue_sft(s, a, jid, epochs=1, max_minutes=1, also=["/d/a"], actor=repo.get_user(s, "sup"))
