"""Tasks & fleet: pick a task, start/pause/stop practice, fleet size, the detector threshold s
with its calibration, robots online/offline, the job queue with progress."""
from __future__ import annotations

import streamlit as st

from storage import repo
from ui import actions, bootstrap, new_task, prepare, queries
from ui.app_state import CHOSEN_TASK, act, can, get_db, require_login
from ui.text import md

user = require_login()
db = get_db()
st.title("Tasks & fleet")

with db.read() as s:
    tasks = repo.list_tasks(s)
if not tasks:
    st.info("No task yet. ./scripts/run.sh seeds the demo task (Block2Block tabletop) on its first start; "
            "a supervisor can create one here (New task).")
    new_task.section(user)
    st.stop()

names = [t.name for t in tasks]
default = names.index(bootstrap.DEMO_TASK) if bootstrap.DEMO_TASK in names else 0
pick = f"tasks_task_{len(tasks)}"  # a new widget when the list changes: an index never points at another task
if (created := new_task.take_created()) in names:  # the task the New task section just made
    st.session_state[pick] = names.index(created)
elif pick not in st.session_state:  # the task picked on another page, else the demo task
    ids = [t.id for t in tasks]
    chosen = st.session_state.get(CHOSEN_TASK)
    st.session_state[pick] = ids.index(chosen) if chosen in ids else default
task = tasks[st.selectbox("Task", range(len(tasks)), key=pick, format_func=lambda i: names[i])]
st.session_state[CHOSEN_TASK] = task.id


@st.fragment(run_every=3)
def preparation() -> None:
    with db.read() as s:
        prep = bootstrap.preparation_status(s, task.id)
    if any(p["job"] for p in prep) and not all(p["status"] == "done" for p in prep[:2]):
        st.subheader("Preparing the demo task")
        for p in prep:
            label = f"{p['step']}: {p['status']}" + (f" (job {p['job']})" if p["job"] else "")
            if p["message"]:
                label += f" · {p['message'][:160]}"
            st.progress(min(1.0, p["progress"]), text=md(label))  # the job's message quotes its input


@st.fragment(run_every=3)
def jobs_table() -> None:
    with db.read() as s:
        jobs = queries.job_rows(s, limit=25)
    st.subheader("Jobs")
    if not jobs:
        st.caption("No jobs yet.")
        return
    st.dataframe(jobs, hide_index=True, width="stretch",
                 column_order=("id", "kind", "status", "progress", "message", "error", "task_id", "session_id",
                               "created_by", "created"),
                 column_config={"progress": st.column_config.ProgressColumn("progress", min_value=0.0, max_value=1.0),
                                "created": st.column_config.DatetimeColumn("created", format="YYYY-MM-DD HH:mm:ss")})
    failed = [j for j in jobs if j["status"] == "failed"]
    if failed:
        with st.expander(f"Job {failed[0]['id']} ({md(failed[0]['kind'])}) failed: why"):
            st.code(failed[0]["error"] or "no error recorded")


@st.fragment(run_every=3)
def prepare_section() -> None:
    """Any task, step by step: each step a job with its progress, time left, cancel and its log's tail."""
    with db.read() as s:
        ready = prepare.readiness(s, task.id)
    st.subheader("Prepare this task")
    st.caption(md(ready.missing))
    for step in ready.steps:
        job = step.job
        c1, c2 = st.columns([5, 1])
        state = "done" if step.done else (job["status"] if job else "not started")
        text = f"{step.name}: {state}" + (f" · {step.detail}" if step.detail else "")
        if job and job["status"] in prepare.ACTIVE:
            left = prepare.time_left_s(job)
            text += f" · job {job['id']}" + (f", about {left / 60:.0f} min left" if left is not None else "")
            c1.progress(min(1.0, job["progress"]), text=md(text))
            if c2.button("Cancel", key=f"cancel_prep{job['id']}", disabled=not can(user, "cancel_job")):
                act(user, "cancel_job", repo.cancel_job, job["id"], success=f"job {job['id']} cancelled")
                st.rerun()
        else:
            c1.markdown(md(text))
        if job and (job["error"] or job["message"]):
            c1.caption(md((job["error"] or job["message"])[-300:]))  # the job's last words
        if job and job["log_tail"]:
            with c1.expander(f"Log of job {job['id']}"):
                st.code(job["log_tail"], language=None)  # a code block: the text is shown, never rendered


@st.fragment(run_every=5)  # a demos job that finishes shows up in the Stage-1 form without a page switch
def prepare_forms() -> None:
    with db.read() as s:
        ready = prepare.readiness(s, task.id)
    may = can(user, "enqueue_job")
    c1, c2 = st.columns(2)
    with c1.form("prep_demos"):
        st.markdown("**Demonstrations** (the task's scripted expert)")
        if not ready.can_generate:
            st.caption("A remote-robot task has no scripted expert: import recorded demonstrations on the Data "
                       "page (a LeRobot v3.0 or Dojo archive).")
        n = st.number_input("Episodes", 1, 100_000, prepare.DEFAULT_DEMOS)
        workers = st.number_input("Expert processes", 1, 16, 1)
        if st.form_submit_button("Generate demonstrations", disabled=not may or not ready.can_generate):
            if act(user, "enqueue_job", prepare.enqueue_demos, task.id, int(n), int(workers),
                   success="demonstrations queued") is not None:
                st.rerun()
    with c2.form("prep_sft"):
        st.markdown("**Stage 1** (behavioural cloning + steps-to-go)")
        options = {("job", d["id"]): f"job {d['id']}: {d['episodes']} episodes" for d in ready.demos_jobs}
        options.update({("data", d["path"]): f"imported {d['file'] or d['path']}: {d['episodes']} episodes"
                        for d in ready.imported})
        source = st.selectbox("Demonstrations", list(options), format_func=options.get,
                              placeholder="generate or import demonstrations first")
        others = {d["path"]: f"{d['task']} · {d['source']}: {d['episodes']} episodes" for d in ready.other_tasks}
        also = st.multiselect("Also train on (one model over several tasks)", list(others), format_func=others.get,
                              help="datasets of other tasks with the same camera, proprioception and action sizes")
        epochs = st.number_input("Epochs", 1, 500, prepare.DEFAULT_EPOCHS)
        minutes = st.number_input("Time cap (minutes)", 1.0, 1440.0, prepare.DEFAULT_SFT_MINUTES)
        c_w, c_e = st.columns(2)
        d_model = c_w.selectbox("Model width", (64, 128, 256), index=1, help="d_model of the trunk")
        encoder = c_e.selectbox("Image encoder", prepare.IMAGE_ENCODERS, format_func=prepare.IMAGE_ENCODERS.get)
        if st.form_submit_button("Train Stage 1", disabled=not may or not options):
            kind, ref = source
            if act(user, "enqueue_job", prepare.enqueue_sft, task.id, ref if kind == "job" else None,
                   data=ref if kind == "data" else None, epochs=int(epochs), also=also,
                   max_minutes=float(minutes), policy={"d_model": int(d_model), "image_encoder": encoder},
                   success="Stage 1 queued") is not None:
                st.rerun()


preparation()
prepare_section()
with db.read() as s:
    not_ready = prepare.readiness(s, task.id).next_step in ("demonstrations", "Stage 1")
with st.expander("Prepare: demonstrations and Stage 1", expanded=not_ready):  # open while the task lacks them
    prepare_forms()
left, right = st.columns([3, 2])
with left:
    st.subheader("Practice sessions")
    with db.read() as s:
        sessions = repo.list_sessions(s, task_id=task.id, limit=10)
    active = [p for p in sessions if p.status in ("running", "paused")]
    for ps in active:
        c1, c2, c3 = st.columns([3, 1, 1])
        c1.markdown(f"**Session {ps.id}** · {md(ps.status)} · fleet {md(ps.params.get('fleet_size', '?'))} · "
                    f"started {ps.started_at:%H:%M:%S} by {md(ps.created_by)}")
        if ps.status == "running":
            if c2.button("Pause", key=f"pause{ps.id}", disabled=not can(user, "pause_session")):
                act(user, "pause_session", repo.pause_session, ps.id, success=f"session {ps.id} paused")
                st.rerun()
        elif c2.button("Resume", key=f"resume{ps.id}", disabled=not can(user, "resume_session")):
            act(user, "resume_session", repo.resume_session, ps.id, success=f"session {ps.id} resumed")
            st.rerun()
        if c3.button("Stop", key=f"stop{ps.id}", disabled=not can(user, "stop_session")):
            act(user, "stop_session", actions.stop_practice, ps.id, success=f"session {ps.id} stopped")
            st.rerun()
    if not active:
        st.caption("No practice session running for this task.")
    with st.form("start_session"):
        fleet = st.number_input("Robots (fleet size)", min_value=1, max_value=64, value=int(task.fleet_size or 1))
        if task.backend != "remote":  # a remote task's fleet is the robots that connect
            c_k, c_a = st.columns([3, 2])
            where = c_k.selectbox("Where the robots run", list(actions.FLEET_CHOICES),
                                  format_func=actions.FLEET_CHOICES.get)
            ray_address = c_a.text_input("Ray address", value="", placeholder="auto or HEAD:6379",
                                         help="with a Ray cluster: its head's HOST:PORT, 'auto' on one of its "
                                              "nodes, empty for Ray on the worker's machine")
        else:
            where, ray_address = "process", ""
        refine = st.number_input("Refine the detector first on N labeled rollouts (simulated robots; 0 = off)",
                                 min_value=0, max_value=2000, value=0, step=50,
                                 help="the starting policy's own rollouts, labeled by the simulator's ground "
                                      "truth, re-train a copy of the steps-to-go model so near-misses stop "
                                      "firing the detector (docs/method.md: Refining the detector with labels)")
        every = st.number_input("Re-refine it every N iterations on the practice episodes (0 = off)",
                                min_value=0, max_value=1000, value=0, step=5,
                                help="as practice goes, the episodes of the last N iterations (labeled by the "
                                     "simulator's ground truth; on real robots, by the supervisors' verdicts on "
                                     "Live) refine the steps-to-go model again, so a policy that finds new "
                                     "near-misses cannot game the detector for long")
        with db.read() as s:
            refined = {r["job_id"]: r for r in queries.refine_jobs(s, task.id)
                       if r["status"] == "done" and r["reward_checkpoint"]}
        reward_pick = st.selectbox("Reward model (steps-to-go)", [None] + list(refined),
                                   format_func=lambda j: "the starting checkpoint's (Stage 1)" if j is None
                                   else queries.describe_refine(refined[j]),
                                   help="a reward model re-trained on people's labels (Training: Re-train the "
                                        "steps-to-go head) runs with the s it calibrated on held-out labels")
        extra_text = st.text_input("Extra practice params (JSON, optional)", value="",
                                   placeholder='{"check_episodes": 0, "max_episodes": 500}',
                                   help="any practice job param of the worker (python -m core.worker --params)")
        start = st.form_submit_button("Start practice session", type="primary",
                                      disabled=not can(user, "start_session"))
    if start:
        try:
            extra = actions.parse_extra(extra_text)
            placed = actions.fleet_choice(where, ray_address)
            if placed:  # the extra params' own fleet keys win
                given = extra.get("fleet") if isinstance(extra.get("fleet"), dict) else {}
                extra = {**extra, "fleet": {**placed["fleet"], **given}}
            if refine:
                extra = {"refine_episodes": int(refine), **extra}
            if every:
                extra = {"refine_every": int(every), **extra}
            if reward_pick is not None:
                extra = {"reward_checkpoint": refined[reward_pick]["reward_checkpoint"], **extra}
        except ValueError as e:
            st.error(md(e))
            extra = None
        ps = None if extra is None else act(user, "start_session", actions.start_practice, task.id,
                                            fleet_size=int(fleet), extra=extra, success="practice session started")
        if ps is not None:
            st.session_state["tasks_flash"] = (f"Practice session {ps.id} started: its job is queued for the "
                                               "worker; watch it on Live.")
            st.rerun()
    if "tasks_flash" in st.session_state:
        st.success(st.session_state.pop("tasks_flash"))
    if not can(user, "start_session"):
        st.caption(f"Starting and stopping sessions needs role supervisor; you are {user.role}.")

with right:
    st.subheader("Detector and fleet")
    with db.read() as s:
        promoted = repo.get_promoted(s, task.id)
    # The task's own calibration, else the one Stage-1 training recorded with the served checkpoint.
    cal = task.calibration or ((promoted.metrics or {}).get("calibration") if promoted is not None else None) or {}
    # With no s set here, practice calibrates s and patience itself: the task's patience is not used then.
    st.markdown(f"Backend **{md(task.backend)}** · family **{md(task.instruction_family or '-')}** · " + (
                f"threshold s = **{task.detector_threshold:g}** · patience {task.detector_patience}"
                if task.detector_threshold is not None else "threshold s and patience: **calibrated**"))
    if cal.get("threshold_s") is not None and task.detector_threshold is None:
        st.caption(f"In use: s = {float(cal['threshold_s']):.2f}, patience {cal.get('patience', task.detector_patience)} "
                   f"({md(queries.detector_figures(cal))}); set s here to override it."
                   + (f" Before the refinement: precision {float(b.get('precision') or 0):.2f}, recall "
                      f"{float(b.get('recall') or 0):.2f}." if (b := cal.get("before_refinement")) else ""))
    elif (task.detector_threshold is not None and cal.get("threshold_s") is not None
          and abs(float(cal["threshold_s"]) - float(task.detector_threshold)) < 1e-9 and cal.get("source")):
        st.caption(f"s = {float(task.detector_threshold):g} chosen from {md(cal['source'])}: precision "
                   f"{float(cal.get('precision') or 0):.2f}, recall {float(cal.get('recall') or 0):.2f}"
                   f"{' (' + str(cal['counts']['censored']) + ' undecided)' if (cal.get('counts') or {}).get('censored') else ''}"
                   "; the next practice session uses it.")
    if cal:
        st.caption("Calibration (how s was chosen)")
        st.json(cal, expanded=False)
    else:
        st.caption("Not calibrated yet: Stage-1 training chooses s on held-out demonstrations.")
    with st.form("task_settings"):
        s_val = st.number_input("Detector threshold s (steps-to-go; 0 = the calibrated one)", min_value=0.0, max_value=100.0,
                                value=float(task.detector_threshold or 0.0), step=0.25)
        patience = st.number_input("Patience (steps in a row; used with a set s)", min_value=1, max_value=20,
                                   value=int(task.detector_patience))
        fleet_size = st.number_input("Default fleet size", min_value=0, max_value=16, value=int(task.fleet_size))
        save = st.form_submit_button("Save", disabled=not can(user, "edit_task"))
    if save:
        if act(user, "edit_task", repo.update_task, task.id, detector_threshold=float(s_val) or None,
               detector_patience=int(patience), fleet_size=int(fleet_size), success="task saved") is not None:
            st.rerun()

st.subheader("Robots")
with db.read() as s:
    robots = repo.robot_summary(s)
if not robots:
    st.caption("No robots yet: the worker registers its fleet when a practice session runs.")
for r in robots:
    c1, c2 = st.columns([4, 1])
    seen = r["last_seen"].strftime("%H:%M:%S") if r["last_seen"] else "never"
    c1.markdown(f"**{md(r['name'])}** · {md(r['status'])} · last seen {seen} · {r['episodes']} episodes, "
                f"{r['successes']} successes")
    if r["status"] == "offline":  # not driven by any worker now: nothing to bring on or take off
        c2.caption("offline")
    elif r["status"] in ("stopped", "paused"):
        if c2.button("Bring online", key=f"on{r['robot_id']}", disabled=not can(user, "control_robot")):
            act(user, "control_robot", repo.set_robot_status, r["robot_id"], "online")
            st.rerun()
    elif c2.button("Take offline", key=f"off{r['robot_id']}", disabled=not can(user, "control_robot")):
        act(user, "control_robot", repo.set_robot_status, r["robot_id"], "stopped",
            success=f"{md(r['name'])} taken offline")
        st.rerun()

st.subheader("Robot tokens")
st.caption("Remote robots register on the worker's /robot endpoint with a token made here (docs/security.md). "
           "A token is shown once; revoking it disconnects the robots using it within seconds.")
may_tokens = can(user, "control_robot")
with st.form("new_robot_token", clear_on_submit=True):
    c1, c2 = st.columns(2)
    label = c1.text_input("Label", max_chars=100, placeholder="arm-1 lab PC", help="where this token will live")
    bound = c2.text_input("Only for robot (optional)", max_chars=64, placeholder="arm-1",
                          help="empty: a fleet token, good for any robot name")
    make = st.form_submit_button("Create token", disabled=not may_tokens)
if make:
    made = act(user, "control_robot", repo.create_robot_token, label, robot_name=bound.strip() or None,
               success="token created: copy it now, it is not shown again")
    if made is not None:
        st.code(made[1], language=None)
with db.read() as s:
    tokens = repo.list_robot_tokens(s)
for t in tokens:
    c1, c2 = st.columns([4, 1])
    used = t.last_used_at.strftime("%Y-%m-%d %H:%M") if t.last_used_at else "never"
    state = f"revoked by {t.revoked_by}" if t.revoked_at else f"last used {used}"
    # Labels are user text: st.text renders them verbatim, never as markdown or HTML.
    c1.text(f"{t.prefix}…  {t.label}  ·  {'robot ' + t.robot_name if t.robot_name else 'any robot'}  ·  "
            f"by {t.created_by}  ·  {state}")
    if t.revoked_at is None and c2.button("Revoke", key=f"revoke_token{t.id}", disabled=not may_tokens):
        act(user, "control_robot", repo.revoke_robot_token, t.id, success="token revoked")
        st.rerun()

new_task.section(user)
jobs_table()
