"""One AppTest per page against a seeded SQLite file: each renders without an exception and
shows what it is for; actions go through and are refused for roles that may not do them."""
from __future__ import annotations

import re

from sqlalchemy import select

from storage import init_db, repo
from storage.models import Episode, PracticeSession, Robot, User


def _ok(at):
    assert not at.exception, [e.value for e in at.exception]
    return at


def _texts(at) -> str:
    parts = [m.value for m in at.markdown] + [c.value for c in at.caption] + [t.value for t in at.title]
    parts += [e.value for e in at.error] + [w.value for w in at.warning] + [i.value for i in at.info]
    parts += [s.value for s in at.success]
    return "\n".join(str(p) for p in parts)


def _button(at, label):
    return next(b for b in at.button if b.label == label)


def test_login_page_logs_in(app):
    at = _ok(app("app", role=None).run())
    assert any(t.value == "Dojo" for t in at.title)
    at.text_input[0].input("admin")
    at.text_input[1].input("wrong-password")
    _ok(at.button[0].click().run())
    assert "Wrong username or password" in _texts(at)
    at.text_input[1].input("password123")
    _ok(at.button[0].click().run())
    assert at.session_state["dojo_user_id"] is not None
    assert any(t.value == "Tasks & fleet" for t in at.title)


def test_pages_require_login(app):
    at = _ok(app("live", role=None).run())
    assert "Please log in first" in _texts(at)


def test_tasks_page_starts_and_stops_a_session(app, seeded):
    at = _ok(app("tasks", "supervisor").run())
    assert at.selectbox[0].value == 0  # the demo task, preselected
    assert "Session" in _texts(at) and "robot-0" in _texts(at)
    _ok(_button(at, "Start practice session").click().run())
    db = init_db(seeded.url)
    with db.read() as s:
        newest = repo.list_sessions(s, limit=1)[0]
        jobs = repo.list_jobs(s, session_id=newest.id)
    assert newest.status == "running" and newest.created_by == "supervisor"
    assert jobs and jobs[0].kind == "practice" and jobs[0].params["checkpoint_id"] == seeded.checkpoint_ids[0]
    _ok(next(b for b in at.button if b.label == "Stop" and b.key == f"stop{newest.id}").click().run())
    with db.read() as s:
        assert s.get(PracticeSession, newest.id).status == "stopped"


def test_tasks_page_starts_practice_with_a_detector_refinement(app, seeded):
    at = _ok(app("tasks", "supervisor").run())
    next(n for n in at.number_input if n.label.startswith("Refine the detector")).set_value(100)
    next(n for n in at.number_input if n.label.startswith("Re-refine it every")).set_value(10)
    _ok(_button(at, "Start practice session").click().run())
    db = init_db(seeded.url)
    with db.read() as s:
        newest = repo.list_sessions(s, limit=1)[0]
        job = repo.list_jobs(s, session_id=newest.id)[0]
    assert job.params["refine_episodes"] == 100 and job.params["refine_every"] == 10
    with db.write() as s:
        repo.stop_session(s, newest.id, actor=repo.get_user(s, "supervisor"))


def test_tasks_page_starts_practice_on_a_ray_cluster_and_refuses_a_bad_address(app, seeded):
    at = _ok(app("tasks", "supervisor").run())
    next(sb for sb in at.selectbox if sb.label == "Where the robots run").set_value("ray")
    next(t for t in at.text_input if t.label == "Ray address").set_value("<b>head</b>:6379")
    at = _button(at, "Start practice session").click().run()
    assert any("Ray address" in e.value and "HOST" in e.value for e in at.error), [e.value for e in at.error]
    db = init_db(seeded.url)
    with db.read() as s:
        before = len(repo.list_sessions(s))
    next(t for t in at.text_input if t.label == "Ray address").set_value("10.0.0.5:6379")
    _ok(_button(at, "Start practice session").click().run())
    with db.read() as s:
        assert len(repo.list_sessions(s)) == before + 1
        newest = repo.list_sessions(s, limit=1)[0]
        job = repo.list_jobs(s, session_id=newest.id)[0]
    assert job.params["fleet"] == {"kind": "ray", "size": job.params["fleet"]["size"], "address": "10.0.0.5:6379"}
    with db.write() as s:
        repo.stop_session(s, newest.id, actor=repo.get_user(s, "supervisor"))


def test_reviewer_cannot_start_sessions(app, seeded):
    at = _ok(app("tasks", "reviewer").run())
    assert _button(at, "Start practice session").disabled
    assert "needs role supervisor" in _texts(at)


def test_live_page_grid_and_override(app, seeded):
    at = _ok(app("live", "supervisor").run())
    assert all("node" in row for row in at.dataframe[0].value.to_dict("records"))  # where each robot runs
    assert sum(1 for b in at.button if b.label == "✓ Success") == len(seeded.robot_ids)
    robot = seeded.robot_ids[0]
    _ok(next(b for b in at.button if b.key == f"ov1{robot}").click().run())
    db = init_db(seeded.url)
    with db.read() as s:
        ep = s.get(Episode, seeded.running_ids[0])
    assert ep.override_success is True and ep.override_by == "supervisor"
    _ok(next(b for b in at.button if b.key == f"stop{robot}").click().run())
    with db.read() as s:
        assert s.get(Robot, robot).status == "stopped"
    with db.write() as s:
        repo.set_robot_status(s, robot, "online")


def test_viewer_cannot_override(app, seeded):
    at = _ok(app("live", "viewer").run())
    robot = seeded.robot_ids[1]
    assert next(b for b in at.button if b.key == f"ov0{robot}").disabled
    assert next(b for b in at.button if b.key == f"stop{robot}").disabled
    assert "need role supervisor" in _texts(at)


def test_review_page_labels_with_who_and_when(app, seeded):
    at = _ok(app("review", "reviewer").run())
    assert "have no label yet" in _texts(at)
    first = at.session_state["review_episode"]
    _ok(at.slider[0].set_value(3).run())
    _ok(_button(at, "Success (S)").click().run())
    db = init_db(seeded.url)
    with db.read() as s:
        ep = s.get(Episode, first)
    assert ep.label_success is True and ep.label_by == "reviewer" and ep.label_at is not None
    assert f"episode {first} labelled success" in _texts(at)


def test_viewer_cannot_label(app, seeded):
    at = _ok(app("review", "viewer").run())
    assert _button(at, "Success (S)").disabled and _button(at, "Failure (F)").disabled
    assert "Labelling needs role reviewer" in _texts(at)


def test_training_page_charts_and_promotion(app, seeded):
    at = _ok(app("training", "supervisor").run())
    assert len(at.get("plotly_chart")) >= 5
    evaluated = next(m for m in at.metric if m.label == "Evaluated success")
    assert evaluated.value == "50%" and evaluated.delta.startswith("+20 pts since #")  # seeded: 30 % -> 50 %
    assert "Lineage" in _texts(at)
    # Promote the newest (better) checkpoint, then roll back to the Stage-1 one.
    newest = seeded.checkpoint_ids[-1]
    pick = next(b for b in at.selectbox if b.label == "Checkpoint")
    pick.set_value(newest)
    _ok(_button(at, "Promote").click().run())
    db = init_db(seeded.url)
    with db.read() as s:
        assert repo.get_promoted(s, seeded.task_id).id == newest
    next(b for b in at.selectbox if b.label == "Checkpoint").set_value(seeded.checkpoint_ids[0])
    _ok(_button(at, "Roll back to it").click().run())
    with db.read() as s:
        assert repo.get_promoted(s, seeded.task_id).id == seeded.checkpoint_ids[0]


def test_training_page_says_whether_the_paired_gain_is_beyond_noise(app, seeded):
    from storage.models import Checkpoint
    from core.method.stats import paired_gain

    g = paired_gain([1] * 15 + [0] * 35, [1] * 15 + [1] * 10 + [0] * 25)  # 30 % -> 50 % on the same 50 seeds
    db = init_db(seeded.url)
    with db.write() as s:
        ck = s.get(Checkpoint, seeded.checkpoint_ids[-1])
        ck.metrics = {**(ck.metrics or {}), "eval_gain": g["gain"], "eval_gain_lo": g["ci"][0],
                      "eval_gain_hi": g["ci"][1], "eval_gain_p": g["p"], "eval_gain_seeds": 50,
                      "eval_gained": 10, "eval_lost": 0, "start_checkpoint_id": seeded.checkpoint_ids[0]}
    at = _ok(app("training", "viewer").run())
    assert not at.warning  # no practice job stopped itself
    text = " ".join(m.value for m in at.markdown)
    lo, hi = round(100 * g["ci"][0]), round(100 * g["ci"][1])
    assert (f"Checkpoint #{seeded.checkpoint_ids[-1]} vs #{seeded.checkpoint_ids[0]}, on the same 50 seeds: "
            f"+20 pts, 95 % interval [+{lo}, +{hi}]: rise beyond noise") in text
    assert lo > 0


def test_training_page_warns_when_practice_stopped_itself_on_a_drop(app, seeded):
    db = init_db(seeded.url)
    reason = "practice stopped at iteration 50: greedy success 23 % is below the start's 48 % beyond noise"
    with db.write() as s:
        job = repo.enqueue_job(s, "practice", {}, task_id=seeded.task_id)
        job.status, job.result = "done", {"stop_reason": reason, "iterations": 50}
    at = _ok(app("training", "viewer").run())
    assert [w.value for w in at.warning] == [f"Practice job {job.id} stopped itself: {reason}"]


def test_data_page_renders(app):
    at = _ok(app("data", "viewer").run())
    assert "Import demonstrations" in [h.value for h in at.subheader]
    assert "Importing needs role supervisor" in _texts(at)


def test_users_page_admin_and_audit(app):
    at = _ok(app("users", "admin").run())
    assert "Audit log" in [h.value for h in at.subheader]
    assert len(at.dataframe) == 1 and len(at.table) == 1


def test_users_page_hidden_from_non_admins(app):
    at = _ok(app("users", "supervisor").run())
    assert "needs role admin" in _texts(at)
    assert "Audit log" not in [h.value for h in at.subheader]


def test_tasks_page_shows_the_threshold_a_practice_check_chose(app, seeded):
    """With no s set on the task, the page says which s practice uses and how it was chosen."""
    db = init_db(seeded.url)
    with db.write() as s:
        task = repo.list_tasks(s)[0]
        task_id = task.id
        repo.update_task(s, task.id, detector_threshold=None, calibration={
            "threshold_s": 1.5, "patience": 2, "precision": 0.77, "recall": 0.94,
            "source": "pre-practice check on the starting policy's rollouts (job 3)",
            "before_refinement": {"precision": 0.33, "recall": 1.0}})
    try:
        at = _ok(app("tasks", "supervisor").run())
        assert "In use: s = 1.50, patience 2 (precision 0.77, recall 0.94, pre-practice check" in _texts(at)
        assert "Before the refinement: precision 0.33, recall 1.00." in _texts(at)
        assert "threshold s and patience: **calibrated**" in _texts(at)
        # only Stage-1's calibration, on held-out demonstration endings (its keys are demo_*)
        with db.write() as s:
            repo.update_task(s, task_id, calibration={"threshold_s": 1.75, "patience": 1, "demo_precision": 0.862,
                                                      "demo_recall": 0.9615})
        at = _ok(app("tasks", "supervisor").run())
        assert "In use: s = 1.75, patience 1 (precision 0.86, recall 0.96, on held-out demonstrations)" in _texts(at)
    finally:  # the seeded file is shared by this module's tests
        with db.write() as s:
            repo.update_task(s, task_id, detector_threshold=2.0, calibration=None)


def test_training_page_recalibrates_s_from_peoples_labels(app, seeded, tmp_path, monkeypatch):
    from tests.ui.seeding import seed

    at = _ok(app("training", "viewer").run())  # the shared file: a few judged episodes, too few
    assert "Re-calibrate s from people's labels" in [h.value for h in at.subheader]
    assert any(re.search(r"only \d judged episodes in this session", i.value) for i in at.info)
    # A file of its own, with 16 episodes labeled by a reviewer (ground truth as the label).
    own = seed(str(tmp_path / "own.sqlite"), episodes=40, robots=2)
    monkeypatch.setenv("DOJO_DB", own.url)
    db = init_db(own.url)
    with db.write() as s:
        reviewer = s.get(User, own.user_ids["reviewer"])
        for eid in own.episode_ids[2:18]:
            repo.label_episode(s, eid, bool(s.get(Episode, eid).gt_success), actor=reviewer)
    with db.read() as s:
        sweep = repo.threshold_sweep(s, own.task_id, session_id=own.session_id)
    best = sweep["best"]["threshold"]
    label = f"Use s = {best:g} for Block2Block tabletop"
    at = _ok(app("training", "viewer").run())
    assert "Suggested s" in _texts(at) and _button(at, label).disabled
    at = _ok(app("training", "supervisor").run())
    assert not _button(at, label).disabled
    _ok(_button(at, label).click().run())
    with db.read() as s:
        task = repo.get_task(s, own.task_id)
        assert task.detector_threshold == best and task.calibration["judged"] == 18
        assert repo.audit_log(s, action="update_task")[0].username == "supervisor"
    at = _ok(app("tasks", "viewer").run())
    assert f"s = {best:g} chosen from people's labels on 18 episodes of session {own.session_id}" in _texts(at)

    # Re-train the head on them: a supervisor queues a refine job for the session; a viewer cannot.
    retrain = f"Re-train the steps-to-go head on session {own.session_id}'s 18 judged episodes"
    at = _ok(app("training", "viewer").run())
    assert _button(at, retrain).disabled
    at = _ok(app("training", "supervisor").run())
    next(n for n in at.number_input if n.label.startswith("Frames of a failure")).set_value(0)
    _ok(_button(at, retrain).click().run())
    with db.write() as s:
        job = max((j for j in repo.list_jobs(s) if j.kind == "refine"), key=lambda j: j.id)
        assert (job.params, job.session_id, job.task_id, job.status) == (
            {"session_id": own.session_id, "steps": 300, "fail_tail": 0, "anchor": 1.0}, own.session_id,
            own.task_id, "queued")
        # as the worker leaves it when done (tests/core/worker: the job itself)
        job.status, job.result = "done", {
            "reward_checkpoint": "/runs/refine-job9/reward_from_labels.pt", "labels": 18, "held_out": 6,
            "threshold_s": 3.5, "check_before": {"precision": 0.5, "recall": 1.0},
            "check_after": {"precision": 1.0, "recall": 0.75}, "session_id": own.session_id}
    at = _ok(app("training", "viewer").run())
    assert (f"re-trained on 18 judged episodes of session {own.session_id} (job {job.id}); held-out precision "
            "0.50 -> 1.00, recall 1.00 -> 0.75, s 3.5") in _texts(at)
    # ... and the next session can use it as its reward model.
    at = _ok(app("tasks", "supervisor").run())
    pick = next(b for b in at.selectbox if b.label == "Reward model (steps-to-go)")
    pick.set_value(job.id)
    _ok(at.button[[b.label for b in at.button].index("Start practice session")].click().run())
    with db.read() as s:
        practice = max((j for j in repo.list_jobs(s) if j.kind == "practice"), key=lambda j: j.id)
    assert practice.params["reward_checkpoint"] == "/runs/refine-job9/reward_from_labels.pt"


def test_a_supervisor_makes_a_robot_token_sees_it_once_and_revokes_it(app, seeded):
    from storage.credentials import check_robot_token
    from storage.models import RobotToken

    at = _ok(app("tasks", "supervisor").run())
    label = next(t for t in at.text_input if t.label == "Label")
    label.input("arm-9 lab PC")
    next(t for t in at.text_input if t.label == "Only for robot (optional)").input("arm-9")
    _ok(_button(at, "Create token").click().run())
    shown = [c.value for c in at.code if c.value.startswith("dojo_rt_")]
    assert len(shown) == 1
    token = shown[0]
    db = init_db(seeded.url)
    with db.write() as s:
        row = s.scalar(select(RobotToken).where(RobotToken.label == "arm-9 lab PC"))
        assert row.robot_name == "arm-9" and row.created_by == "supervisor" and token not in row.token_sha256
        assert check_robot_token(s, token, "arm-9") == row.id
        token_id = row.id
    assert any("arm-9 lab PC" in t.value for t in at.text)
    _ok(next(b for b in at.button if b.key == f"revoke_token{token_id}").click().run())
    assert not [c for c in at.code if c.value == token]  # shown once: gone on the next run
    with db.read() as s:
        assert s.get(RobotToken, token_id).revoked_by == "supervisor"


def test_a_viewer_cannot_make_or_revoke_robot_tokens(app):
    at = _ok(app("tasks", "viewer").run())
    assert _button(at, "Create token").disabled


def test_the_task_picked_on_one_page_is_the_one_the_next_page_shows(app, seeded):
    from ui.app_state import CHOSEN_TASK

    db = init_db(seeded.url)
    with db.write() as s:
        other = repo.get_or_create_task(s, "picked elsewhere", "tabletop", {"family": "block2location"}).id
    for page in ("training", "tasks"):
        at = app(page, "viewer")
        at.session_state[CHOSEN_TASK] = other
        _ok(at.run())
        shown = at.selectbox[0]
        assert (shown.value == other) if page == "training" else (shown.format_func(shown.value) == "picked elsewhere")


def _labelled_dataset(tmp_path):
    """An imported dataset under DOJO_DATA (the ui_env fixture): episode 0 carries a simulator's labels."""
    from tests.core.datasets.dojo_builder import write_tiny_dataset

    return write_tiny_dataset(tmp_path / "data" / "datasets" / "lab-demos", 3, keypoints_on=(0,), size=64)


def test_keypoints_page_shows_progress_and_what_a_viewer_may_not_do(app, tmp_path):
    at = _ok(app("keypoints", "viewer").run())
    assert "No imported dataset yet" in _texts(at)
    _labelled_dataset(tmp_path)
    at = _ok(app("keypoints", "viewer").run())
    assert "0 of 3 episodes clicked; 1 carry a simulator's labels on every frame; 2 to do" in at.get("progress")[0].proto.text
    assert at.session_state["kp_file"] == "episodes/ep_000000001.npz"  # the first without labels
    assert "Clicking needs role reviewer" in _texts(at) and "Training needs role supervisor" in _texts(at)
    assert _button(at, "Save and next").disabled
    assert "\u201cpush the \\<b\\>red\\</b\\> block 1 to the top left\u201d" in _texts(at)  # escaped, not markup


def test_keypoints_page_trains_stage1_on_the_tracked_clicks(app, seeded, tmp_path):
    from core.datasets import first_frame_labels as L

    root = _labelled_dataset(tmp_path)
    L.save_clicks(root, "episodes/ep_000000001.npz", [(-0.5, -0.5), (0.5, 0.5)])
    at = _ok(app("keypoints", "supervisor").run())
    assert "1 of 3 episodes clicked" in at.get("progress")[0].proto.text
    assert at.session_state["kp_file"] == "episodes/ep_000000002.npz"
    assert "1 episodes without clicks train without the keypoint loss" in _texts(at)
    _ok(_button(at, "Train Stage 1 with the clicks tracked").click().run())
    with init_db(seeded.url).read() as s:
        job = repo.list_jobs(s, limit=1)[0]
    assert job.kind == "sft" and job.params["keypoint_labels"] == "all" and job.params["data"] == str(root)
