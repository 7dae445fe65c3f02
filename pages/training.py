"""Training: success against practice episodes (per task, per checkpoint), returns, losses,
the detector's precision/recall against human labels, human effort beside the success gain,
the checkpoint lineage with promote and roll back, an eval job of any checkpoint, and every
evaluated checkpoint compared (intervals, and the paired gain of two on the same seeds)."""
from __future__ import annotations

import streamlit as st

from storage import repo
from core.method.stats import format_points
from ui import actions, charts, evaluation, queries
from ui.actions import REFINE_OPTIONS
from ui.app_state import CHOSEN_TASK, act, can, get_db, require_login
from ui.text import md

user = require_login()
db = get_db()
st.title("Training")

with db.read() as s:
    tasks = repo.list_tasks(s)
if not tasks:
    st.info("No task yet.")
    st.stop()
names = {t.id: t.name for t in tasks}
ids = list(names)
chosen = st.session_state.get(CHOSEN_TASK)
task_id = st.selectbox("Task", ids, index=ids.index(chosen) if chosen in ids else 0, format_func=names.get)
st.session_state[CHOSEN_TASK] = task_id
bucket = st.select_slider("Episodes per point", [5, 10, 20, 50, 100], value=50)

with db.read() as s:
    rows = queries.practice_outcomes(s, task_id)
    by_ckpt = repo.success_by_checkpoint(s, task_id=task_id, source="practice")
    effort = queries.human_effort_per_hour(s, hours=48)
    per_hour = repo.episodes_per_hour(s, hours=48, task_id=task_id)
    task_metrics = set(repo.metric_names(s, task_id=task_id))
    metric_names = sorted(task_metrics) or repo.metric_names(s)
    checkpoints = repo.list_checkpoints(s, task_id=task_id, limit=100)
    promoted = repo.get_promoted(s, task_id)
    stopped = queries.latest_practice_stop(s, task_id)

curve = queries.success_curve(rows, bucket)
complete = [c for c in curve if c["complete"]] or curve  # the metric skips the block still filling
gain = charts.success_gain(complete)
evaluated = {c.id: (c.eval_success, c.eval_episodes) for c in checkpoints if c.eval_success is not None}
points = queries.evaluated_points(rows, evaluated)
m1, m0, m2, m3, m4 = st.columns(5)
m1.metric("Practice episodes", len(rows))
m0.metric("Evaluated success", "-" if not points else f"{points[-1]['success']:.0%}",
          None if len(points) < 2 else f"{100 * (points[-1]['success'] - points[0]['success']):+.0f} pts since #{points[0]['checkpoint_id']}",
          help="greedy policy on fixed seeds (the practice job evaluates every few iterations)")
paired = queries.latest_paired_gain(checkpoints)
m2.metric("Practice success, last block",
          "-" if not complete or complete[-1]["success"] is None else f"{complete[-1]['success']:.0%}",
          None if gain is None else f"{100 * gain:+.0f} pts since the first block",
          help="sampled actions, judged by the detector or an override")
m3.metric("Human actions (48 h)", sum(o + lab for _, o, lab in effort))
m4.metric("Promoted checkpoint", "-" if promoted is None else f"#{promoted.id}")

if paired is not None:
    start = f"#{paired['start_checkpoint_id']}" if paired["start_checkpoint_id"] else "its start"
    st.markdown(
        f"**Checkpoint #{paired['checkpoint_id']} vs {start}, on the same {paired['seeds']} seeds: "
        f"{format_points(paired['gain'])} pts, 95 % interval [{format_points(paired['lo'])}, "
        f"{format_points(paired['hi'])}]: "
        f"{paired['verdict']}.**",
        help="Both evaluations run the same selection seeds, so the gain is measured seed by seed "
             f"({paired['gained']} seeds newly succeed, {paired['lost']} no longer do; Newcombe's paired interval, "
             f"exact McNemar p = {paired['p']:.3g}). Pairing cancels the spread of seed difficulty both share, so "
             "it can tell a rise from noise where the two success intervals on the chart still overlap.")
if stopped is not None:
    st.warning(f"Practice job {stopped['job_id']} stopped itself: {md(stopped['reason'])}")

c1, c2 = st.columns(2)
c1.plotly_chart(charts.success_vs_episodes(curve, evaluated=points), width="stretch", key="succ_eps")
c2.plotly_chart(charts.success_by_checkpoint(by_ckpt, evaluated), width="stretch", key="succ_ckpt")
c3, c4 = st.columns(2)
c3.plotly_chart(charts.returns(curve), width="stretch", key="returns")
loss_names = [n for n in metric_names if "loss" in n.lower()]
with db.read() as s:
    losses = {n: repo.metric_series(s, n, task_id=task_id if n in task_metrics else None, limit=5000)
              for n in loss_names[:6]}
if losses:
    c4.plotly_chart(charts.series(losses, "Losses", "step / iteration", "loss"), width="stretch", key="losses")
else:
    c4.caption("No loss curves logged yet (training jobs log them as metrics named *loss*).")

c5, c6 = st.columns(2)
with db.read() as s:
    quality = []
    for ck in [None] + queries.judged_checkpoints(s, task_id, limit=12):
        dq = repo.compute_detector_quality(s, ck, task_id=task_id, store=False)
        if dq.n_labeled:
            quality.append({"checkpoint": "none" if ck is None else f"#{ck}", "precision": dq.precision,
                            "recall": dq.recall, "n": dq.n_labeled})
if quality:
    c5.plotly_chart(charts.detector_quality(quality), width="stretch", key="detq")
else:
    c5.caption("Detector precision/recall appear once people label or override episodes (Review, Live).")
c6.plotly_chart(charts.effort_and_gain(effort, per_hour), width="stretch", key="effort")

st.subheader("Re-calibrate s from people's labels")
with db.read() as s:
    judged_sessions = repo.labeled_sessions(s, task_id)
    task = repo.get_task(s, task_id)
if not judged_sessions:
    st.caption("Once reviewers label episodes (Review) or supervisors override the detector (Live), the detector is "
               "replayed here at every threshold s on those episodes' stored steps-to-go curves, and the s that "
               "best agrees with people can be applied to the task.")
else:
    shown = {x["session_id"]: f"session {x['session_id'] if x['session_id'] is not None else '-'}: "
                              f"{x['judged']} judged, ran with s = {', '.join(f'{t:g}' for t in x['ran_with']) or '-'}"
             for x in judged_sessions}
    sid = st.selectbox("Practice session (one reward model, so one scale of steps-to-go)", list(shown),
                       format_func=lambda v: shown.get(v, str(v)))
    ran_patience = next((x["patience"] for x in judged_sessions if x["session_id"] == sid), None)
    pat = st.number_input("Patience (steps in a row)", min_value=1, max_value=20,
                          value=int(ran_patience or task.detector_patience), key=f"sweep_patience_{sid}",
                          help="default: the patience the session's detector ran with")
    with db.read() as s:
        sweep = repo.threshold_sweep(s, task_id, session_id=sid, patience=int(pat))
    best = sweep["best"]
    in_use = sweep["current"]
    run = sweep["as_run"]
    fmt = (lambda v: "-" if v is None else f"{v:.2f}")
    st.caption(f"As it ran: precision {fmt(run['precision'])}, recall {fmt(run['recall'])} on {sweep['judged']} "
               f"judged episodes (people's label, else override). An episode the live detector ended cannot tell "
               "whether a stricter s would have fired later; those are left out of that s's figures.")
    st.plotly_chart(charts.threshold_sweep(sweep["rows"], in_use, best["threshold"] if best else None),
                    width="stretch", key="sweep")
    if best is None:
        st.info(md(sweep["reason"]))
    else:
        st.markdown(f"**Suggested s = {best['threshold']:g}** (patience {sweep['patience']}): precision "
                    f"{fmt(best['precision'])}, recall {fmt(best['recall'])}, F{sweep['beta']:g} "
                    f"{best['f_beta']:.2f} on {sweep['judged'] - int(best['censored'])} decided episodes.")
        may_edit = can(user, "edit_task")
        if st.button(f"Use s = {best['threshold']:g} for {md(task.name)}", disabled=not may_edit,
                     help="sets the task's detector threshold; the next practice session uses it"):
            if act(user, "edit_task", repo.apply_threshold_from_labels, task_id, sweep, best["threshold"],
                   success=f"s = {best['threshold']:g} set for {md(task.name)}") is not None:
                st.rerun()
        if not may_edit:
            st.caption(f"Changing a task's threshold needs role supervisor; you are {user.role}.")
    with st.expander("Every threshold"):
        st.dataframe(sweep["rows"], hide_index=True, width="stretch")
    if sid is not None:
        st.markdown("When no s separates the near-misses from the successes, **re-train the steps-to-go head** on "
                    "these judged episodes (a copy of the session's reward model; every third episode is held out to "
                    "score it and choose its s). Pick the result as the reward model when starting the next session "
                    "on Tasks & fleet. Measured on the demo: a better detector, but practice with it did not climb "
                    "(docs/experiments/detector.md: the refine job).")
        may_job = can(user, "enqueue_job")
        with st.expander("Re-training options"):
            opts = {name: st.number_input(label, value=default, min_value=type(default)(0), key=f"refine_{name}",
                                          help=hint) for name, label, default, hint in REFINE_OPTIONS}
        if st.button(f"Re-train the steps-to-go head on session {sid}'s {sweep['judged']} judged episodes",
                     disabled=not may_job):
            if act(user, "enqueue_job", repo.enqueue_job, "refine", {"session_id": int(sid)} | opts, task_id=task_id,
                   session_id=int(sid), success="refine job queued: progress on Tasks & fleet") is not None:
                st.rerun()
        with db.read() as s:
            jobs = queries.refine_jobs(s, task_id, session_id=sid, limit=5)
        for r in jobs:
            line = (queries.describe_refine(r) if r["status"] == "done" else  # ids and figures
                    f"job {r['job_id']}: {md(r['status'])}" + (f": {md(r['error'])}" if r["error"] else
                                                               f": {md(r['message'])}" if r["message"] else ""))
            st.caption(line)

st.subheader("Checkpoints")
if not checkpoints:
    st.caption("No checkpoints yet: Stage-1 training and each practice iteration add one.")
    st.stop()
with db.read() as s:
    eval_jobs = evaluation.eval_jobs(s, task_id)
    outcomes = evaluation.eval_outcomes(s, task_id)
evaluated_rows = evaluation.evaluated_rows(checkpoints, eval_jobs)
by_checkpoint = {r["checkpoint_id"]: r for r in evaluated_rows}
table = [{"id": c.id, "stage": c.stage, "parent": c.parent_id, "iteration": c.iteration,
          "eval success": c.eval_success, "eval episodes": c.eval_episodes, "promoted": c.promoted,
          "created": c.created_at, "path": c.path} for c in checkpoints]
st.dataframe(table, hide_index=True, width="stretch",
             column_config={"eval success": st.column_config.NumberColumn(format="%.2f")})
ids = [c.id for c in checkpoints]
pick = st.selectbox("Checkpoint", ids, index=ids.index(promoted.id) if promoted is not None and promoted.id in ids else 0,
                    format_func=lambda i: f"#{i}")
with db.read() as s:
    chain = repo.lineage(s, pick)
st.markdown("Lineage: " + " → ".join(f"#{c.id} ({c.stage}{' it ' + str(c.iteration) if c.stage == 'si' else ''}"
                                     f"{', ' + format(c.eval_success, '.0%') if c.eval_success is not None else ''})"
                                     f"{' ★' if c.promoted else ''}" for c in chain))
st.markdown(f"#{pick}: " + evaluation.describe_evaluation(by_checkpoint.get(pick)))
may = can(user, "promote")
b1, b2, _ = st.columns([1, 1, 3])
if b1.button("Promote", disabled=not may, help="serve it to the fleet; refused if its evaluated success is worse"):
    if act(user, "promote", repo.promote, pick, success=f"checkpoint {pick} promoted") is not None:
        st.rerun()
if b2.button("Roll back to it", disabled=not may, help="serve this earlier checkpoint again, no gate"):
    if act(user, "rollback", repo.rollback, pick, success=f"rolled back to checkpoint {pick}") is not None:
        st.rerun()
if not may:
    st.caption(f"Promotion and roll back need role supervisor; you are {user.role}.")

st.subheader("Evaluate a checkpoint")
may_job = can(user, "enqueue_job")
e1, e2 = st.columns([1, 2], vertical_alignment="bottom")
seeds = e1.number_input("Test seeds", min_value=1, max_value=actions.EVAL_MAX_SEEDS, value=actions.EVAL_DEFAULT_SEEDS,
                        key="eval_seeds", help="episodes of the greedy policy, one per test seed (the same seeds "
                                               "for every checkpoint, never used to select one)")
if e2.button(f"Evaluate #{pick} on {int(seeds)} test seeds", disabled=not may_job,
             help="queues an eval job; its success, interval and detector figures land on the checkpoint"):
    if act(user, "enqueue_job", actions.queue_evaluation, task_id, pick, int(seeds),
           success=f"eval job queued for checkpoint {pick}: progress below and on Tasks & fleet") is not None:
        st.rerun()
if not may_job:
    st.caption(f"Queueing an evaluation needs role supervisor; you are {user.role}.")
if eval_jobs:
    st.dataframe(evaluation.job_table(eval_jobs), hide_index=True, width="stretch", key="eval_jobs",
                 column_config={"progress": st.column_config.ProgressColumn(min_value=0.0, max_value=1.0),
                                "success": st.column_config.NumberColumn(format="%.2f")})

st.subheader("Compare evaluated checkpoints")
if not evaluated_rows:
    st.caption("No checkpoint of this task is evaluated yet.")
    st.stop()
fmt2 = st.column_config.NumberColumn(format="%.2f")
st.dataframe(evaluation.table(evaluated_rows), hide_index=True, width="stretch", key="eval_table",
             column_config={k: fmt2 for k in ("success", "95 % low", "95 % high", "detector precision",
                                              "detector recall", "steps-to-go error", "paired gain vs start")})
st.plotly_chart(charts.evaluated_checkpoints(evaluated_rows), width="stretch", key="eval_compare")
ev_ids = [r["checkpoint_id"] for r in evaluated_rows]
if len(ev_ids) < 2:
    st.caption("A paired comparison needs two evaluated checkpoints.")
    st.stop()
label = {r["checkpoint_id"]: f"{r['checkpoint']} {r['origin']}" + (f" ({r['seeds']} seeds)" if r["seeds"] != "-" else "")
         for r in evaluated_rows}
p1, p2 = st.columns(2)
base = p1.selectbox("Baseline", ev_ids, index=0, format_func=label.get, key="cmp_a")
other = p2.selectbox("Compared with", ev_ids, index=len(ev_ids) - 1, format_func=label.get, key="cmp_b")
gain = evaluation.compare(base, other, outcomes, evaluated_rows) if base != other else None
if base == other:
    st.caption("Pick two different checkpoints.")
elif gain is not None:
    seeds_txt = f"on the same {gain['n']} seeds" if gain["n"] else "on the same seeds"
    st.markdown(f"**#{other} vs #{base}, {seeds_txt}: {format_points(gain['gain'])} pts, 95 % interval "
                f"[{format_points(gain['lo'])}, {format_points(gain['hi'])}]: {gain['verdict']}.**",
                help=f"From {gain['source']}. Newcombe's paired interval" +
                     (f"; {gain['gained']} seeds newly succeed, {gain['lost']} no longer do, exact McNemar "
                      f"p = {gain['p']:.3g}" if gain["p"] is not None else "") + ".")
else:
    st.info(f"#{base} and #{other} have no per-seed outcomes on common seeds, so no paired gain: compare their "
            "intervals above (weaker: overlapping intervals can hide a real gain). The eval job stores only its "
            "totals; a paired gain needs evaluation episodes with their seeds, or practice's own evaluation "
            "against its start.")
