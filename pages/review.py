"""Review: ambiguous episodes, most ambiguous first; a frame scrubber synchronised with the
steps-to-go curve; success/failure labels (keys S / F, ←/→ to scrub) recorded with who and when."""
from __future__ import annotations

import plotly.graph_objects as go
import streamlit as st

from storage import repo
from ui.app_state import act, can, get_db, require_login
from ui.text import md

user = require_login()
db = get_db()
st.title("Review queue")

with db.read() as s:
    tasks = repo.list_tasks(s)
    task_names = {t.id: t.name for t in tasks}
    thresholds = {t.id: t.detector_threshold for t in tasks}

c1, c2 = st.columns([2, 1])
task_filter = c1.selectbox("Task", [None] + [t.id for t in tasks],
                           format_func=lambda i: "all tasks" if i is None else task_names[i])
show_labeled = c2.toggle("Include labelled episodes", value=False)
with db.read() as s:
    items = repo.review_queue(s, task_id=task_filter, limit=50, include_labeled=show_labeled)
    backlog = repo.review_backlog(s, task_id=task_filter)
st.caption(f"{backlog} finished episodes have no label yet; the 50 most in need of a human are listed.")
if not items:
    st.success("Nothing to review.")
    st.stop()

rows = [{"episode": it.episode.id, "why": it.reason,
         "|d - s|": None if it.ambiguity is None else round(it.ambiguity, 2),
         "detector": it.episode.detector_success, "ground truth": it.episode.gt_success,
         "override": it.episode.override_success, "label": it.episode.label_success,
         "robot": it.episode.robot_id, "checkpoint": it.episode.checkpoint_id,
         "instruction": it.episode.instruction} for it in items]
ids = [r["episode"] for r in rows]
if st.session_state.get("review_episode") not in ids:
    st.session_state["review_episode"] = ids[0]
sel = st.dataframe(rows, hide_index=True, width="stretch", height=230, on_select="rerun",
                   selection_mode="single-row", key="review_table")
picked = sel.selection.rows if sel is not None and hasattr(sel, "selection") else []
if picked:
    st.session_state["review_episode"] = ids[picked[0]]
episode_id = st.session_state["review_episode"]


@st.fragment
def review_one(episode_id: int) -> None:
    with db.read() as s:
        ep = repo.get_episode(s, episode_id)
        curve = repo.episode_curve(s, episode_id)
        times = repo.frame_times(s, episode_id)
    s_val = ep.detector_threshold if ep.detector_threshold is not None else thresholds.get(ep.task_id)
    st.markdown(f"**Episode {ep.id}** · “{md(ep.instruction)}” · robot {ep.robot_id} · checkpoint "
                f"{ep.checkpoint_id} · {ep.length} steps · detector "
                f"{'fired at step ' + str(ep.detector_step) if ep.detector_success else 'did not fire'}"
                f" · ground truth {ep.gt_success}")
    last = max([t for t, _ in curve] + times + [0])
    key = f"scrub{episode_id}"
    if key not in st.session_state:
        start = ep.detector_step if ep.detector_step is not None else last
        st.session_state[key] = min(max(0, start), max(1, last))
    nav1, nav2, _ = st.columns([1, 1, 6])
    if nav1.button("◀ frame", shortcut="ArrowLeft", key="prev_frame"):
        st.session_state[key] = max(0, st.session_state[key] - 1)
    if nav2.button("frame ▶", shortcut="ArrowRight", key="next_frame"):
        st.session_state[key] = min(last, st.session_state[key] + 1)
    t = st.slider("Frame", 0, max(1, last), key=key)
    left, right = st.columns([1, 2])
    with left:
        with db.read() as s:
            frame = repo.get_frame(s, episode_id, t)
        if frame is not None:
            st.image(frame.data, caption=f"frame {frame.t}", width=320)
        else:
            st.caption("no stored frame")
    with right:
        fig = go.Figure()
        fig.add_scatter(x=[p[0] for p in curve], y=[p[1] for p in curve], mode="lines", name="d(o,g)")
        if s_val is not None:
            fig.add_hline(y=s_val, line_dash="dash", line_color="#d9a400", annotation_text="s")
        fig.add_vline(x=t, line_color="#e45756")
        fig.update_layout(height=300, margin=dict(l=40, r=10, t=30, b=40), title="steps-to-go",
                          xaxis_title="step", yaxis_title="d(o,g)", showlegend=False)
        st.plotly_chart(fig, width="stretch", key=f"curve{episode_id}")
    if ep.label_success is not None:
        st.info(f"Labelled {'success' if ep.label_success else 'failure'} by {md(ep.label_by)} at "
                f"{ep.label_at:%Y-%m-%d %H:%M:%S} UTC")
    if ep.override_success is not None:
        st.caption(f"Override: {'success' if ep.override_success else 'failure'} by {md(ep.override_by)} at "
                   f"{ep.override_at:%Y-%m-%d %H:%M:%S} UTC")
    may = can(user, "label")
    b1, b2, b3 = st.columns([1, 1, 4])
    verdict = None
    if b1.button("Success (S)", type="primary", shortcut="S", disabled=not may, key="label_s"):
        verdict = True
    if b2.button("Failure (F)", shortcut="F", disabled=not may, key="label_f"):
        verdict = False
    if not may:
        b3.caption(f"Labelling needs role reviewer; you are {user.role}.")
    if verdict is not None:
        if act(user, "label", repo.label_episode, episode_id, verdict) is not None:
            st.session_state["review_flash"] = f"episode {episode_id} labelled {'success' if verdict else 'failure'}"
            st.session_state.pop("review_episode", None)
            st.rerun(scope="app")


if "review_flash" in st.session_state:
    st.success(st.session_state.pop("review_flash"))
review_one(episode_id)
