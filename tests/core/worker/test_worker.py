"""The worker: job kinds, failure handling, practice recording, checkpoint lineage and the
supervisor's commands (pause/resume/stop of a robot or a session, overrides)."""
from __future__ import annotations

import io
import json
import re
import threading
import time

import pytest
from sqlalchemy import select

from core.method.jobs import JobParamsError
from core.worker.params import check_params, job_params_spec
from core.worker.runner import Worker
from storage import init_db, repo
from storage.models import Episode, Robot
from tests.core.worker.conftest import TINY_ENV, practice_params


class Recorder:
    """Stands in for the TelemetryHub: keeps what the control loop published."""

    n_clients = 0

    def __init__(self):
        self.frames: list[tuple[float, str, dict]] = []
        self.events: list[dict] = []
        self.lock = threading.Lock()

    def publish(self, robot, msg, jpeg=None):
        with self.lock:
            self.frames.append((time.monotonic(), robot, dict(msg)))

    def publish_event(self, robot, msg):
        with self.lock:
            self.events.append({**msg, "robot": robot})

    def of(self, robot, since=0.0):
        with self.lock:
            return [m for t, r, m in self.frames if r == robot and t >= since]


def wait_for(pred, timeout=30.0, every=0.05, what="condition"):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        v = pred()
        if v:
            return v
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def test_params_are_checked_against_the_published_schema():
    assert check_params("demos", {"n": 3})["seed0"] == 0
    with pytest.raises(JobParamsError, match="unknown params"):
        check_params("demos", {"n": 3, "nn": 4})
    with pytest.raises(JobParamsError, match="required"):
        check_params("demos", {})
    with pytest.raises(JobParamsError, match="must be int"):
        check_params("practice", {"max_episodes": "many"})
    spec = job_params_spec("practice")
    for key in ("policy_checkpoint", "checkpoint_id", "reward_checkpoint", "fleet", "max_episodes", "threshold_s"):
        assert key in spec
    assert spec["env_config"]["type"] == "dict" and spec["freeze_vision"]["type"] == "bool"


def test_the_training_pages_refine_options_are_the_refine_jobs_params():
    """The page offers the refine job's own params (core.method.jobs.REFINE_PARAMS), by name and
    default, and the worker accepts what it enqueues."""
    from ui.actions import REFINE_OPTIONS

    spec = job_params_spec("refine")
    for name, _label, default, _hint in REFINE_OPTIONS:
        assert spec[name]["default"] == default and type(spec[name]["default"]) is type(default), name
    assert check_params("refine", {name: d for name, _, d, _ in REFINE_OPTIONS})


def test_bad_jobs_fail_with_a_fix_and_the_worker_goes_on(tmp_path, stage1):
    db = init_db(tmp_path / "dojo.sqlite")
    with db.write() as s:
        task = repo.create_task(s, "b2b", "tabletop", {"family": "block2block", "image_size": 32})
        ck = repo.add_checkpoint(s, "sft", str(stage1.policy), task_id=task.id,
                                 metrics={"reward_checkpoint": str(stage1.reward)})
        bad_key = repo.enqueue_job(s, "practice", {"bogus": 1}, task_id=task.id).id
        missing = repo.enqueue_job(s, "eval", {"checkpoint": str(tmp_path / "nope.pt")}, task_id=task.id).id
        good = repo.enqueue_job(s, "eval", {"checkpoint_id": ck.id, "episodes": 2, "n_envs": 2, "promote": True},
                                task_id=task.id).id
    assert Worker(db, name="w", data_dir=tmp_path).run(exit_when_idle=True) == 3
    with db.read() as s:
        j1, j2, j3 = (repo.get_job(s, i) for i in (bad_key, missing, good))
        ck = repo.get_checkpoint(s, ck.id)
    assert j1.status == "failed" and "bogus" in j1.error and "Fix:" in j1.error
    assert j2.status == "failed" and "nope.pt" in j2.error and "Fix:" in j2.error
    assert j3.status == "done", j3.error
    assert ck.eval_episodes == 2 and ck.eval_success is not None and ck.promoted
    kept = ck.metrics["eval"]  # each test seed's outcome, so two checkpoints pair up seed by seed
    assert len(kept["outcomes"]) == 2 and sum(kept["outcomes"]) / 2 == ck.eval_success and kept["seed0"] == 1_000_000
    assert j3.result["checkpoint_id"] == ck.id and j3.result["promoted"] is True
    # Each job keeps its log's tail: the progress messages and its own log records, not the next job's.
    assert "evaluating" in j3.log_tail and "success" in j3.log_tail.splitlines()[-1]
    assert "job %d failed" % missing not in j3.log_tail
    assert "error: job %d failed" % missing in j2.log_tail


def test_an_eval_job_that_cannot_calibrate_fails_once_with_the_fix_and_the_worker_stays_up(tmp_path, stage1):
    """A checkpoint with no detector threshold and no held-out demonstrations: evaluation is
    refused with what to pass. It used to raise SystemExit, which ended the worker process; the
    job was then retried on every restart and failed 20 times later as "worker restarted"."""
    from core.learning.checkpoint import load_checkpoint, save_checkpoint

    model, meta = load_checkpoint(stage1.policy)
    bare = tmp_path / "bare.pt"
    save_checkpoint(bare, model, {k: v for k, v in meta.items()
                                  if k not in ("threshold_s", "held_out_seeds", "dataset", "held_out")})
    db = init_db(tmp_path / "dojo.sqlite")
    with db.write() as s:
        refused = repo.enqueue_job(s, "eval", {"checkpoint": str(bare), "reward_checkpoint": str(bare),
                                               "episodes": 2, "n_envs": 2}).id
        after = repo.enqueue_job(s, "eval", {"checkpoint": str(tmp_path / "nope.pt")}).id
    assert Worker(db, name="w", data_dir=tmp_path).run(exit_when_idle=True) == 2  # it went on to the next job
    with db.read() as s:
        j1, j2 = repo.get_job(s, refused), repo.get_job(s, after)
    assert j1.status == "failed" and j1.attempts == 1, j1.error
    assert j1.error.startswith("EvaluationRefused:") and "threshold" in j1.error and "Fix:" in j1.error
    assert j2.status == "failed"


def test_practice_job_records_episodes_checkpoints_and_metrics(tmp_path, stage1):
    from PIL import Image

    from core.learning.checkpoint import read_checkpoint

    db = init_db(tmp_path / "dojo.sqlite")
    with db.write() as s:
        job_id = repo.enqueue_job(s, "practice", practice_params(stage1, max_episodes=4)).id
    tele = Recorder()
    tele.n_clients = 1  # a browser is watching: frames are encoded and evaluations streamed
    t0 = time.perf_counter()
    assert Worker(db, name="w1", data_dir=tmp_path, telemetry=tele).run(exit_when_idle=True) == 1
    elapsed = time.perf_counter() - t0
    with db.read() as s:
        job = repo.get_job(s, job_id)
        assert job.status == "done", job.error
        sess = repo.get_session(s, job.session_id)
        eps = repo.list_episodes(s, session_id=sess.id, limit=1000)
        cks = sorted(repo.list_checkpoints(s, task_id=job.task_id), key=lambda c: c.id)
        robots = repo.list_robots(s, worker="w1")
        steps = {e.id: repo.episode_steps(s, e.id) for e in eps}
        frames = {e.id: repo.frame_times(s, e.id) for e in eps}
        one_frame = repo.get_frame(s, eps[0].id, 0)
        metric_names = repo.metric_names(s, session_id=sess.id)
    assert sess.status == "finished"
    run_dir = tmp_path / "runs" / f"practice-job{job_id}"
    iters = sorted(int(p.stem.split("_")[1]) for p in run_dir.glob("iter_*.pt"))
    assert iters and iters == list(range(1, len(iters) + 1))

    # every episode the learner used is one finished row, under its deterministic uid
    finished = [e for e in eps if e.status == "finished"]
    assert len(finished) == len(eps) == job.result["episodes_recorded"]
    for it in iters:
        stats = read_checkpoint(run_dir / f"iter_{it:04d}.pt")["meta"]["stats"]
        assert sum(e.uid.startswith(f"job{job_id}-it{it:04d}-seed") for e in finished) == stats["episodes"]
    for e in finished:
        assert re.fullmatch(rf"job{job_id}-it\d{{4}}-seed\d+", e.uid)
        st = steps[e.id]
        assert [x.t for x in st] == list(range(e.length + 1))
        assert all(x.d is not None and x.detector_count is not None for x in st)
        assert all(x.reward is not None and len(x.action) == 2 for x in st[:-1]) and st[-1].action is None
        assert sum(x.reward for x in st[:-1]) == pytest.approx(e.total_return, abs=1e-4)
        assert frames[e.id] == list(range(e.length + 1))  # frame_every=1
        assert e.detector_threshold == 1.0 and e.gt_success is not None and e.robot_id is not None
        assert e.checkpoint_id is not None and e.meta["end_reason"]
    assert Image.open(io.BytesIO(one_frame.data)).size == (32, 32)

    # lineage: sft start -> iteration 1 -> 2 ...; each evaluated; one promoted
    start, si = cks[0], cks[1:]
    assert start.stage == "sft" and [c.iteration for c in si] == iters
    assert [c.parent_id for c in si] == [start.id] + [c.id for c in si[:-1]]
    assert all(c.eval_success is not None for c in cks)
    assert sum(c.promoted for c in cks) == 1
    assert {"mean_return", "loss", "eval_success", "episodes"} <= set(metric_names)
    assert {r.name for r in robots} == {"w1/sim-0", "w1/sim-1"} and all(r.status == "offline" for r in robots)

    # telemetry: a frame per control step with the documented fields, and episode events
    msgs = tele.of("w1/sim-0")
    msg = [m for m in msgs if m["status"] not in ("evaluating", "offline")][-1]
    for key in ("step", "d", "reward", "detector", "checkpoint_id", "episode_uid", "status", "instruction"):
        assert key in msg
    assert {"count", "patience", "threshold", "fired"} == set(msg["detector"])
    assert len(tele.events) == len(finished)
    # each evaluation on the selection seeds tells every robot's card, with no episode of its own
    # (a phase message with no step), then streams the evaluation's own frames, never stored;
    # the job's end leaves "offline" as each robot's last message
    n_evals = sum(c.eval_success is not None for c in cks)
    for robot in ("w1/sim-0", "w1/sim-1"):
        ev = [m for m in tele.of(robot) if m["status"] == "evaluating"]
        phase = [m for m in ev if m["step"] is None]
        assert len(phase) == n_evals
        assert all(m["detector"] == "evaluating" and m["episode_uid"] is None for m in phase)
        frames_ev = [m for m in ev if m["step"] is not None]
        assert frames_ev and all(m["episode_uid"].startswith("eval-") and m["episode_id"] is None
                                 and m["detector"] == "evaluating" and isinstance(m["d"], float) for m in frames_ev)
        assert tele.of(robot)[-1]["status"] == "offline" and tele.of(robot)[-1]["detector"] == "job ended"
    assert not any(e.uid.startswith("eval-") for e in eps)
    print(f"practice job: {len(iters)} iterations, {len(finished)} episodes in {elapsed:.1f} s")


def _running_episode(db, robot_id):
    with db.read() as s:
        return s.scalar(select(Episode).where(Episode.robot_id == robot_id, Episode.status == "running")
                        .order_by(Episode.id.desc()))


def test_supervisor_commands_take_effect_at_the_next_control_step(tmp_path, stage1):
    db = init_db(tmp_path / "dojo.sqlite")
    with db.write() as s:
        sup = repo.create_user(s, "sup", "a-long-password", "supervisor")
        task = repo.create_task(s, "b2b", "tabletop", {"family": "block2block", "image_size": 32})
        sess = repo.start_session(s, task.id)
        params = practice_params(stage1, tuples_per_iteration=100_000, eval_every=0, max_episodes=100_000)
        params["env_config"]["max_steps"] = 80
        job_id = repo.enqueue_job(s, "practice", params, session_id=sess.id, task_id=task.id).id
    tele = Recorder()
    w = Worker(db, name="w2", data_dir=tmp_path, telemetry=tele, poll_s=0.05)
    th = threading.Thread(target=w.run, kwargs={"exit_when_idle": True}, daemon=True)
    th.start()
    try:
        r0, r1 = "w2/sim-0", "w2/sim-1"
        wait_for(lambda: len(tele.of(r0)) > 20 and len(tele.of(r1)) > 20, 60, what="both robots stepping")
        with db.read() as s:
            rid = {r.name: r.id for r in repo.list_robots(s, worker="w2")}
        with tele.lock:
            times = [t for t, r, _ in tele.frames if r == r0][-20:]
        dt_step = (times[-1] - times[0]) / 19  # one control step of the fleet
        print(f"control step {dt_step * 1000:.1f} ms")

        # pause one robot: it holds mid-episode within a poll + a step; the other goes on
        wait_for(lambda: _running_episode(db, rid[r1]), 30, what="robot 1's episode row")
        with db.write() as s:
            repo.set_robot_status(s, rid[r1], "paused", actor=sup)
        t_cmd = time.monotonic()
        first = wait_for(lambda: next((m for m in tele.of(r1, t_cmd) if m["status"] == "paused"), None), 5,
                         what="robot 1 paused")
        held_at = (first["episode_uid"], first["step"])
        n0 = len(tele.of(r0))
        time.sleep(0.6)
        later = tele.of(r1, t_cmd + 0.05 + 3 * dt_step + 0.2)
        assert later and {(m["episode_uid"], m["step"]) for m in later} == {held_at}
        assert {m["status"] for m in later} == {"paused"}
        assert len(tele.of(r0)) > n0  # the rest of the fleet goes on

        # resume: it continues the same episode
        with db.write() as s:
            repo.set_robot_status(s, rid[r1], "online", actor=sup)
        t_cmd = time.monotonic()
        wait_for(lambda: any(m["episode_uid"] == held_at[0] and m["step"] > held_at[1]
                             for m in tele.of(r1, t_cmd)), 5, what="robot 1 resumed")

        # override a running episode as a success: it ends at its next step, as a success
        eid = _fresh_episode(tele, r0)
        with db.write() as s:
            repo.override_episode(s, eid, True, actor=sup)
        done = wait_for(lambda: _finished(db, eid), 5, what="overridden episode finished")
        assert done.override_success is True and done.outcome is True
        assert done.meta["end_reason"] == "detector" and done.detector_success is False
        assert done.length < 80

        # stop one robot: its episode ends now as "stopped", then it holds
        eid = _fresh_episode(tele, r1)
        with db.write() as s:
            repo.set_robot_status(s, rid[r1], "stopped", actor=sup)
        done = wait_for(lambda: _finished(db, eid), 5, what="stopped episode finished")
        assert done.meta["end_reason"] == "stopped" and done.length < 80
        t_cmd = time.monotonic()
        wait_for(lambda: [m for m in tele.of(r1, t_cmd) if m["status"] == "stopped"], 5, what="robot 1 held")

        # pause the session: every robot holds; resume: they go on
        with db.write() as s:
            repo.pause_session(s, sess.id, actor=sup)
        t_cmd = time.monotonic()
        first = wait_for(lambda: next((m for m in tele.of(r0, t_cmd) if m["status"] == "session_paused"), None), 5,
                         what="session paused")
        time.sleep(0.5)
        assert {(m["episode_uid"], m["step"]) for m in tele.of(r0, t_cmd + 0.4 + 3 * dt_step)} <= \
            {(first["episode_uid"], first["step"])}
        with db.write() as s:
            repo.resume_session(s, sess.id, actor=sup)
            repo.set_robot_status(s, rid[r1], "online", actor=sup)
        t_cmd = time.monotonic()
        wait_for(lambda: [m for m in tele.of(r0, t_cmd) if m["status"] == "running"], 5, what="session resumed")

        # stop the session: the job ends, nothing is left running
        with db.write() as s:
            repo.stop_session(s, sess.id, actor=sup)
        th.join(30)
        assert not th.is_alive()
    finally:
        w.stop()
        th.join(30)
    with db.read() as s:
        job = repo.get_job(s, job_id)
        left = s.scalars(select(Episode).where(Episode.status == "running")).all()
        aborted = s.scalars(select(Episode).where(Episode.status == "aborted")).all()
        robots = s.scalars(select(Robot)).all()
    assert job.status == "done" and "session stopped" in job.message
    assert not left and all("session stopped" in (e.abort_reason or "") for e in aborted)
    assert {r.status for r in robots} <= {"offline", "stopped", "paused"}


def _fresh_episode(tele, robot):
    """The id of an episode of ``robot`` that has just begun (so it cannot end by itself soon)."""
    t0 = time.monotonic()
    m = wait_for(lambda: next((m for m in tele.of(robot, t0) if m["episode_id"] and 1 <= m["step"] <= 5), None),
                 30, what=f"a fresh episode of {robot}")
    return m["episode_id"]


def _finished(db, episode_id):
    with db.read() as s:
        e = s.get(Episode, episode_id)
        return e if e is not None and e.status == "finished" else None


def test_a_cancelled_job_stops_and_aborts_its_running_episodes(tmp_path, stage1):
    db = init_db(tmp_path / "dojo.sqlite")
    with db.write() as s:
        job_id = repo.enqueue_job(s, "practice", practice_params(stage1, tuples_per_iteration=100_000, eval_every=0,
                                                                 max_episodes=100_000)).id
    w = Worker(db, name="w3", data_dir=tmp_path, telemetry=Recorder(), poll_s=0.1)
    th = threading.Thread(target=w.run, kwargs={"exit_when_idle": True}, daemon=True)
    th.start()
    try:
        wait_for(lambda: _count(db, "running") >= 1, 60, what="a running episode")
        with db.write() as s:
            repo.cancel_job(s, job_id, reason="test")
        th.join(10)
        assert not th.is_alive()
    finally:
        w.stop()
        th.join(30)
    with db.read() as s:
        assert repo.get_job(s, job_id).status == "cancelled"
    assert _count(db, "running") == 0 and _count(db, "aborted") >= 1


def test_a_stopping_worker_does_not_wait_for_an_evaluation_to_end(tmp_path, stage1):
    """Ctrl-C during a practice job's greedy evaluation (here one that would run 10,000
    episodes): the worker stops within seconds and the job goes back to the queue, where
    it resumes from its last completed iteration."""
    db = init_db(tmp_path / "dojo.sqlite")
    with db.write() as s:
        job_id = repo.enqueue_job(s, "practice", practice_params(stage1, eval_episodes=10_000)).id
    w = Worker(db, name="w-eval", data_dir=tmp_path, telemetry=Recorder(), poll_s=0.1)
    th = threading.Thread(target=w.run, kwargs={"exit_when_idle": True}, daemon=True)
    th.start()
    try:
        def evaluating():
            with db.read() as s:
                return "evaluating" in (repo.get_job(s, job_id).message or "")
        wait_for(evaluating, 60, what="the job evaluating its start")
        t0 = time.monotonic()
        w.stop()
        th.join(15)
        assert not th.is_alive(), "the worker waited for the evaluation"
        stopped_in = time.monotonic() - t0
    finally:
        w.stop()
        th.join(30)
    assert stopped_in < 10
    with db.read() as s:
        job = repo.get_job(s, job_id)
    assert job.status == "queued", (job.status, job.message)
    assert not list(tmp_path.rglob("iter_*.pt"))  # the evaluation came before any iteration


def _count(db, status):
    with db.read() as s:
        return len(s.scalars(select(Episode.id).where(Episode.status == status)).all())


def test_an_override_given_while_the_episode_is_in_the_buffer_changes_its_returns(tmp_path, stage1):
    """run_practice asks outcome_override at the episode's end and again before the update."""
    from core.learning.practice import PracticeConfig, PracticeObserver, run_practice
    from core.learning.practice.events import EpisodeEnded

    p = practice_params(stage1, eval_every=0, max_episodes=2)
    cfg = PracticeConfig(policy_checkpoint=p["policy_checkpoint"], reward_checkpoint=p["reward_checkpoint"],
                         out=str(tmp_path / "si"), env_config=p["env_config"], fleet_size=2, fleet_kind="local",
                         tuples_per_iteration=32, minibatch=16, check_episodes=0, eval_every=0, eval_episodes=0,
                         max_episodes=2, threshold_s=1.0)
    asked: dict[int, int] = {}
    ended = []

    class LateVerdict(PracticeObserver):  # nothing at the episode's end; success arrives before the update
        def outcome_override(self, rec):
            asked[id(rec)] = asked.get(id(rec), 0) + 1
            return None if asked[id(rec)] == 1 else True

        def on_event(self, ev):
            if isinstance(ev, EpisodeEnded):
                ended.append((ev.record, ev.returns.copy()))

    run_practice(cfg, progress=False, observer=LateVerdict())
    assert ended and all(asked[id(rec)] == 2 for rec, _ in ended)
    for rec, _ in ended:
        assert rec.d[-1] == 0.0  # the late verdict was applied: all remaining progress earned


def test_an_automatic_threshold_is_recalibrated_on_the_starting_policys_rollouts(tmp_path, stage1):
    """No s in the job or the task: the pre-practice check calibrates s on the starting
    policy's own rollouts; episodes use that s and the task records how it was chosen."""
    import json

    db = init_db(tmp_path / "dojo.sqlite")
    with db.write() as s:
        job_id = repo.enqueue_job(s, "practice", practice_params(
            stage1, threshold_s=None, check_episodes=8, min_precision=0.0, min_recall=0.0, max_episodes=2,
            eval_every=0, eval_episodes=0)).id
    assert Worker(db, name="w1", data_dir=tmp_path).run(exit_when_idle=True) == 1
    with db.read() as s:
        job = repo.get_job(s, job_id)
        assert job.status == "done", job.error
        task = repo.get_task(s, job.task_id)
        eps = repo.list_episodes(s, session_id=job.session_id, limit=100)
    check = json.loads((tmp_path / "runs" / f"practice-job{job_id}" / "detector_check.json").read_text())
    assert check["threshold_source"].startswith("calibrated on 4 rollouts")
    assert task.calibration["threshold_s"] == check["threshold_s"]
    assert task.calibration["source"].startswith("pre-practice check") and task.calibration["passed"] is True
    assert task.detector_threshold is None  # the supervisor's own setting is left alone
    assert eps and all(e.detector_threshold == check["threshold_s"] for e in eps)


def test_a_practice_job_stopped_by_a_drop_says_why_and_records_the_paired_gains(tmp_path, stage1, monkeypatch):
    """The job ends "done" with the drop's explanation as its message; the iterations' checkpoints
    carry the paired gain since the start (what the Training page shows)."""
    import core.learning.practice as P
    from core.method.stats import wilson_interval

    calls = []

    def scripted(policy, fleet, n, interrupt=None, on_step=None, groups=None):  # start 16 of 20 seeds, then 2 of 20
        k = 16 if not calls else 2
        calls.append(k)
        return {"success": k / 20, "success_ci": wilson_interval(k, 20), "episodes": 20,
                "outcomes": [1] * k + [0] * (20 - k)}

    monkeypatch.setattr(P.loop, "evaluate_success", scripted)
    db = init_db(tmp_path / "dojo.sqlite")
    with db.write() as s:
        job_id = repo.enqueue_job(s, "practice", practice_params(stage1, max_episodes=100, plateau_evals=100)).id
    assert Worker(db, name="w1", data_dir=tmp_path).run(exit_when_idle=True) == 1
    with db.read() as s:
        job = repo.get_job(s, job_id)
        cks = [c for c in repo.list_checkpoints(s, task_id=job.task_id) if c.stage == "si"]
    assert job.status == "done", job.error
    assert job.message.startswith("practice stopped at iteration 2: greedy success 10 % is below the start's 80 %")
    assert len(cks) == 2 and all(c.metrics["eval_gain_hi"] < 0 and c.metrics["eval_gain_seeds"] == 20 for c in cks)
    assert all(c.metrics["start_checkpoint_id"] is not None for c in cks)


def test_a_refined_reward_model_gets_its_threshold_recalibrated_over_the_tasks(tmp_path, stage1):
    """The task has its own s, chosen for the unrefined model: with refine_episodes the check
    re-calibrates s for the refined one, and the task shows the detector before and after."""
    db = init_db(tmp_path / "dojo.sqlite")
    with db.write() as s:
        task = repo.create_task(s, "b2b", "tabletop", dict(TINY_ENV), detector_threshold=2.0, detector_patience=2)
        job_id = repo.enqueue_job(s, "practice", practice_params(
            stage1, threshold_s=None, refine_episodes=4, refine_steps=2, check_episodes=8, min_precision=0.0,
            min_recall=0.0, max_episodes=2, eval_every=0, eval_episodes=0), task_id=task.id).id
    assert Worker(db, name="w1", data_dir=tmp_path).run(exit_when_idle=True) == 1
    with db.read() as s:
        job = repo.get_job(s, job_id)
        assert job.status == "done", job.error
        task = repo.get_task(s, job.task_id)
    run = tmp_path / "runs" / f"practice-job{job_id}"
    check = json.loads((run / "detector_check.json").read_text())
    assert (run / "reward_refined.pt").exists() and check["threshold_source"].startswith("calibrated on 4 rollouts")
    assert task.calibration["threshold_s"] == check["threshold_s"]
    assert task.calibration["before_refinement"]["precision"] == check["before"]["precision"]
    assert "refined on labeled rollouts" in task.calibration["source"]
    assert task.detector_threshold == 2.0  # the supervisor's own setting is left alone


@pytest.mark.parametrize("seeds, kept", [("selection", False), (None, True)])
def test_practices_larger_start_evaluation_replaces_a_smaller_one_on_the_same_seeds(tmp_path, stage1, seeds, kept):
    db = init_db(tmp_path / "dojo.sqlite")
    with db.write() as s:
        task = repo.create_task(s, "b2b", "tabletop", dict(TINY_ENV))
        metrics = {"reward_checkpoint": str(stage1.reward), **({"eval_seeds": seeds} if seeds else {})}
        ck = repo.add_checkpoint(s, "sft", str(stage1.policy), task_id=task.id, eval_success=1.0, eval_episodes=1,
                                 metrics=metrics)
        params = practice_params(stage1, max_episodes=2, eval_episodes=2)
        del params["policy_checkpoint"]
        job_id = repo.enqueue_job(s, "practice", {**params, "checkpoint_id": ck.id}, task_id=task.id).id
    assert Worker(db, name="w", data_dir=tmp_path).run(exit_when_idle=True) == 1
    with db.read() as s:
        job = repo.get_job(s, job_id)
        ck = repo.get_checkpoint(s, ck.id)
    assert job.status == "done", job.error
    run_dir = tmp_path / "runs" / f"practice-job{job_id}"
    first = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[0])
    if kept:  # evaluated on other seeds: not comparable, left alone
        assert (ck.eval_success, ck.eval_episodes) == (1.0, 1)
    else:
        assert (ck.eval_success, ck.eval_episodes) == (first["eval_success"], 2)
        assert ck.metrics["evaluated_by_job"] == job_id


def test_a_practice_job_discarding_running_episodes_marks_their_rows_aborted(tmp_path, stage1):
    """finish_running_episodes False: the episodes under way when an iteration's buffer fills
    are dropped by the learner; their stored rows end aborted, saying why, none stays running,
    and the finished rows are exactly the episodes the iterations used."""
    from core.learning.checkpoint import read_checkpoint

    db = init_db(tmp_path / "dojo.sqlite")
    with db.write() as s:
        job_id = repo.enqueue_job(s, "practice", practice_params(
            stage1, max_episodes=8, fleet={"kind": "local", "size": 3}, tuples_per_iteration=20,
            # s inside this tiny model's range of d: some episodes end early (detector), so the
            # robots fall out of step and some are under way when the buffer fills
            finish_running_episodes=False, eval_every=100, threshold_s=28.0)).id
    assert Worker(db, name="w1", data_dir=tmp_path).run(exit_when_idle=True) == 1
    with db.read() as s:
        job = repo.get_job(s, job_id)
        assert job.status == "done", job.error
        eps = repo.list_episodes(s, session_id=job.session_id, limit=1000)
    discarded = [e for e in eps if e.status == "aborted"]
    assert discarded and all(e.abort_reason == "discarded: the iteration's buffer was full" for e in discarded)
    assert not [e for e in eps if e.status == "running"]
    run_dir = tmp_path / "runs" / f"practice-job{job_id}"
    used = sum(read_checkpoint(p)["meta"]["stats"]["episodes"] for p in run_dir.glob("iter_*.pt"))
    assert sum(e.status == "finished" for e in eps) == used
    # the learner's per-iteration figures count the dropped episodes and the work they had done
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert sum(r.get("episodes_dropped", 0) for r in rows) == len(discarded)
    assert sum(r.get("steps_dropped", 0) for r in rows) == sum(e.length or 0 for e in discarded) > 0
