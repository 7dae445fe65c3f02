"""Evaluate and compare checkpoints from the Training page (issue 32, items 2 and 3), and the
Live page's fleet instruction (item 6): AppTests against this module's seeded SQLite file
(tests/ui/conftest.py), and the pure functions behind them."""
from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from sqlalchemy import insert, select

from core.method.seeds import EVAL_SEED0
from core.method.stats import paired_gain
from storage import init_db, repo
from storage.models import Episode, Job, User
from ui import evaluation, queries
from ui.actions import queue_evaluation


def _ok(at):
    assert not at.exception, [e.value for e in at.exception]
    return at


def _md(at) -> str:
    return "\n".join(str(m.value) for m in at.markdown)


def _button(at, label):
    return next(b for b in at.button if b.label == label)


def _select(at, label):
    return next(b for b in at.selectbox if b.label == label)


def test_a_supervisor_queues_an_evaluation_of_any_checkpoint(app, seeded):
    sft, si1, _ = seeded.checkpoint_ids
    at = _ok(app("training", "supervisor").run())
    _select(at, "Checkpoint").set_value(si1)
    next(n for n in at.number_input if n.label == "Test seeds").set_value(20)
    _ok(at.run())
    _ok(_button(at, f"Evaluate #{si1} on 20 test seeds").click().run())
    db = init_db(seeded.url)
    with db.read() as s:
        job = s.scalars(select(Job).where(Job.kind == "eval").order_by(Job.id.desc())).first()
        assert (job.task_id, job.status, job.created_by) == (seeded.task_id, "queued", "supervisor")
        assert job.params == {"checkpoint_id": si1, "episodes": 20, "seed0": EVAL_SEED0, "promote": False}
    table = next(d.value for d in at.dataframe if "queued by" in d.value.columns)
    row = table[table["job"] == job.id].iloc[0]
    assert (row["checkpoint"], row["seeds"], row["status"]) == (f"#{si1}", 20, "queued")
    # another task's checkpoint is refused (the page only offers the task's, the action checks too)
    with db.write() as s:
        other = repo.create_task(s, "other task", "tabletop", {"family": "block2block"})
        ck = repo.add_checkpoint(s, "sft", "data/runs/other.pt", task_id=other.id)
        sup = s.get(User, seeded.user_ids["supervisor"])
        with pytest.raises(ValueError, match="not one of this task's"):
            queue_evaluation(s, seeded.task_id, ck.id, 10, actor=sup)
        with pytest.raises(ValueError, match="seeds must be 1 to"):
            queue_evaluation(s, seeded.task_id, si1, 0, actor=sup)


def test_a_viewer_cannot_queue_an_evaluation(app, seeded):
    at = _ok(app("training", "viewer").run())
    assert next(b for b in at.button if b.label.startswith("Evaluate #")).disabled
    assert any("Queueing an evaluation needs role supervisor" in c.value for c in at.caption)


def test_a_finished_evaluation_shows_on_its_checkpoint(app, seeded):
    _, si1, _ = seeded.checkpoint_ids
    db = init_db(seeded.url)
    res = {"success": 0.4, "success_ci": [0.28, 0.54], "detector_precision": 0.9, "detector_recall": 0.8,
           "threshold_s": 2.0, "mean_length": 40.0, "episodes": 50}
    with db.write() as s:  # what core/worker/jobs/evaluate.py writes
        job = repo.enqueue_job(s, "eval", {"checkpoint_id": si1, "episodes": 50}, task_id=seeded.task_id)
        job.status, job.progress = "done", 1.0
        job.result = {**res, "stg_mae_steps": 1.25, "checkpoint_id": si1, "promoted": False}
        repo.set_evaluation(s, si1, 0.4, 50, metrics={"eval": res, "eval_seeds": "test"})
    at = _ok(app("training", "viewer").run())
    _select(at, "Checkpoint").set_value(si1)
    _ok(at.run())
    assert (f"#{si1}: Evaluated success **40 %** (95 % interval 28 % to 54 %) on 50 test seeds; detector "
            f"precision 0.90, recall 0.80 at s = 2; steps-to-go error 1.2 steps on held-out demonstrations "
            f"(eval job {job.id}).") in _md(at)
    table = next(d.value for d in at.dataframe if "origin" in d.value.columns)
    row = table[table["checkpoint"] == f"#{si1}"].iloc[0]
    assert (row["seeds"], row["success"], row["95 % low"], row["detector precision"]) == ("test", 0.4, 0.28, 0.9)
    assert row["steps-to-go error"] == 1.25
    jobs = next(d.value for d in at.dataframe if "queued by" in d.value.columns)
    assert jobs[jobs["job"] == job.id].iloc[0]["success"] == 0.4


def test_compare_lists_every_evaluated_checkpoint_and_pairs_two_on_their_seeds(app, seeded):
    sft, si1, si2 = seeded.checkpoint_ids
    db = init_db(seeded.url)
    before = [1] * 15 + [0] * 35
    after = [1] * 15 + [1] * 10 + [0] * 25  # 30 % -> 50 % on the same 50 seeds
    rows = []
    for cid, outcomes in ((sft, before), (si2, after)):
        for k, ok in enumerate(outcomes):
            rows.append({"uid": f"eval-{cid}-{k}", "task_id": seeded.task_id, "checkpoint_id": cid, "seed": EVAL_SEED0 + k,
                         "source": "eval", "status": "finished", "gt_success": bool(ok), "detector_success": not ok})
    with db.write() as s:
        s.execute(insert(Episode.__table__), rows)
    at = _ok(app("training", "viewer").run())
    table = next(d.value for d in at.dataframe if "origin" in d.value.columns)
    assert list(table["checkpoint"]) == [f"#{sft}", f"#{si1}", f"#{si2}"]
    assert list(table["origin"]) == ["imported", "practice it 1", "practice it 2, best of its run"]
    assert (table["95 % low"] < table["success"]).all() and (table["success"] < table["95 % high"]).all()
    spec = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    fig = next(f for f in spec if "Evaluated checkpoints" in json.dumps(f["layout"].get("title")))
    assert sum(len(t["x"]) for t in fig["data"]) == 3 and all("error_y" in t for t in fig["data"])
    assert _select(at, "Baseline").value == sft and _select(at, "Compared with").value == si2
    g = paired_gain(before, after)  # ground truth, not the (here contrary) detector
    lo, hi = round(100 * g["ci"][0]), round(100 * g["ci"][1])
    assert (f"#{si2} vs #{sft}, on the same 50 seeds: +20 pts, 95 % interval [+{lo}, +{hi}]: rise beyond noise"
            in _md(at))
    _select(at, "Baseline").set_value(si1)
    _ok(at.run())
    assert any(f"#{si1} and #{si2} have no per-seed outcomes" in i.value for i in at.info)


def test_compare_uses_practice_s_paired_gain_against_its_start_either_way():
    rows = [{"checkpoint_id": 1, "gain_vs_start": None, "gain_lo": None, "gain_hi": None, "start_checkpoint_id": None},
            {"checkpoint_id": 5, "gain_vs_start": 0.2, "gain_lo": 0.05, "gain_hi": 0.33, "start_checkpoint_id": 1}]
    up = evaluation.compare(1, 5, {}, rows)
    assert (up["gain"], up["lo"], up["hi"], up["verdict"]) == (0.2, 0.05, 0.33, "rise beyond noise")
    down = evaluation.compare(5, 1, {}, rows)
    assert (down["gain"], down["lo"], down["hi"], down["verdict"]) == (-0.2, -0.33, -0.05, "drop beyond noise")
    assert evaluation.compare(1, 7, {}, rows) is None
    # seeds both ran win over the stored figure, and only the common seeds count
    paired = evaluation.compare(1, 5, {1: {10: False, 11: True, 12: False}, 5: {10: True, 11: True}}, rows)
    assert (paired["n"], paired["gained"], paired["lost"], paired["source"]) == (2, 1, 0, "evaluation episodes")


def test_evaluated_rows_interval_origin_and_stale_eval_figures():
    ck = lambda i, stage, ev, n, metrics, it=0: SimpleNamespace(  # noqa: E731
        id=i, stage=stage, iteration=it, eval_success=ev, eval_episodes=n, metrics=metrics, promoted=False)
    cks = [ck(1, "sft", 0.3, 50, {"job_id": 4, "eval_seeds": "selection", "calibration": {"stg_mae_steps": 2.5}}),
           ck(2, "si", None, None, {"job_id": 9}, 1),
           ck(3, "si", 0.5, 100, {"job_id": 9, "eval_seeds": "selection",  # practice replaced the eval job's figures
                                  "eval": {"success": 0.2, "success_ci": [0.1, 0.3], "detector_precision": 0.5}}, 2)]
    rows = evaluation.evaluated_rows(cks)
    assert [r["origin"] for r in rows] == ["Stage 1 (job 4)", "practice it 2, best of its run"]
    assert rows[0]["stg_mae_steps"] == 2.5 and rows[0]["seeds"] == "selection"
    assert rows[1]["detector_precision"] is None and 0.39 < rows[1]["lo"] < 0.5 < rows[1]["hi"] < 0.61


def test_the_fleet_instruction_is_the_running_or_else_the_last_episode_s(seeded):
    db = init_db(seeded.url)
    robot = seeded.robot_ids[2]
    with db.write() as s:
        repo.start_episode(s, uid="fleet-instr-run", task_id=seeded.task_id, robot_id=robot, instruction="running one")
    with db.read() as s:
        eps = queries.last_episodes(s, [robot])
    assert eps[robot].instruction == "running one"
    with db.write() as s:
        for ep in s.scalars(select(Episode).where(Episode.robot_id == robot, Episode.status == "running")):
            ep.status = "aborted"
        repo.start_episode(s, uid="fleet-instr-other", task_id=seeded.task_id, robot_id=seeded.robot_ids[3],
                           instruction="someone else's")
    with db.read() as s:
        eps = queries.last_episodes(s, [robot, seeded.robot_ids[3]])
    assert eps[robot].instruction == "running one" and eps[robot].status == "aborted"  # the last one, not running
    assert eps[seeded.robot_ids[3]].instruction == "someone else's"


def test_the_live_fleet_table_fills_the_instruction(app, seeded):
    at = _ok(app("live", "viewer").run())
    fleet = next(d.value for d in at.dataframe if "instruction" in d.value.columns)
    assert (fleet["instruction"] != "").all(), fleet


def test_the_eval_job_s_kept_outcomes_pair_two_checkpoints(seeded):
    """The eval job keeps each test seed's ground truth on the checkpoint (metrics["eval"]):
    two checkpoints evaluated from the same seed0 pair up seed by seed."""
    db = init_db(seeded.url)
    with db.write() as s:
        task = repo.create_task(s, "kept-outcomes", "tabletop", {"family": "block2block"})
        ids = []
        for k, outcomes in enumerate(([0, 1, 0, 0], [1, 1, 1, 0])):
            ck = repo.add_checkpoint(s, "sft", f"/x/kept{k}.pt", task_id=task.id,
                                     metrics={"eval": {"success": sum(outcomes) / 4, "seed0": EVAL_SEED0,
                                                       "outcomes": outcomes}})
            ids.append(ck.id)
        task_id = task.id
    with db.read() as s:
        got = evaluation.eval_outcomes(s, task_id)
    assert got[ids[0]] == {EVAL_SEED0 + i: bool(o) for i, o in enumerate([0, 1, 0, 0])}
    g = evaluation.compare(ids[0], ids[1], got, [])
    assert (g["n"], g["gained"], g["lost"], g["source"]) == (4, 2, 0, "evaluation episodes")
