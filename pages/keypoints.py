"""Keypoints: on each imported demonstration's first frame a reviewer clicks the object, then where
it should go; Stage 1 follows the clicks through the other frames (keypoint_labels 'all', the default)."""
from __future__ import annotations

import streamlit as st
from streamlit_image_coordinates import streamlit_image_coordinates

from core.datasets import first_frame_labels as L
from storage import repo
from ui import keypoints as K
from ui.app_state import act, can, get_db, require_login
from ui.config import data_dir
from ui.text import md

user = require_login()
db = get_db()
st.title("Keypoints")
st.markdown("On each demonstration's first frame click **1** the object the instruction names, then **2** where it "
            "should go. Stage 1 follows the clicks through the other frames. Measured on the tabletop: without such "
            "labels steps-to-go stayed ~8 steps off and practice had no detector; with the clicks, Stage 1 trained "
            "as well as with a simulator's labels (docs/method.md, \u201cWhere the keypoint labels are "
            "needed\u201d).")
datasets_dir = data_dir() / "datasets"
names = L.list_datasets(datasets_dir)
if not names:
    st.info("No imported dataset yet: import one on the Data page (Dojo's own format or LeRobot v3.0).")
    st.stop()
name = st.selectbox("Dataset", names, key="kp_dataset")
try:
    root = L.dataset_root(datasets_dir, name)
    episodes = K.episodes(root)
except L.LabelError as e:
    st.error(md(e))
    st.stop()
if not episodes:
    st.warning(f"{md(name)} holds no episode files (episodes/ep_<seed>.npz).")
    st.stop()
count = {k: sum(e.kind == k for e in episodes) for k in K.KIND_WORDS}
st.progress((count["first"] + count["all"]) / len(episodes),
            text=f"{count['first']} of {len(episodes)} episodes clicked; {count['all']} carry a simulator's labels "
                 f"on every frame; {count['none']} to do")
may_label = can(user, "label")
if not may_label:
    st.caption(f"Clicking needs role reviewer; you are {md(user.role)}.")

files = [e.file for e in episodes]
by_file = {e.file: e for e in episodes}
if "kp_goto" in st.session_state:  # set by Skip / Save below, applied before the selectbox exists
    st.session_state["kp_file"] = st.session_state.pop("kp_goto")
if st.session_state.get("kp_file") not in files:
    st.session_state["kp_file"] = K.next_to_label(episodes) or files[0]
file = st.selectbox("Episode", files, key="kp_file",
                    format_func=lambda f: f"{f} \u00b7 {K.KIND_WORDS[by_file[f].kind]}")
ep = by_file[file]
click_key = f"kp_click::{name}::{file}"
pending_key = f"kp_pending::{name}::{file}"
if pending_key not in st.session_state:
    st.session_state[pending_key] = ([], None)


def on_click() -> None:  # runs before the rerun the click causes, so the frame is drawn with it
    pending, seen = st.session_state[pending_key]
    st.session_state[pending_key] = K.take_click(st.session_state.get(click_key), pending, seen)


pending, _seen = st.session_state[pending_key]
clickable = may_label and ep.kind != "all"
shown = list(ep.first or ()) if ep.kind == "all" or not pending else pending  # what is stored, or the new clicks
left, right = st.columns([3, 2])
with left:
    try:
        frame = L.first_frame(root, file)
    except L.LabelError as e:
        st.error(md(e))
        st.stop()
    streamlit_image_coordinates(K.marked_frame(frame, shown), key=click_key, on_click=on_click if clickable else None,
                                cursor="crosshair" if clickable else "default")
with right:
    st.markdown(f"**Instruction:** \u201c{md(ep.instruction)}\u201d")
    st.caption(f"{ep.n_frames} frames \u00b7 {K.KIND_WORDS[ep.kind]}")
    if ep.kind == "all":
        st.info("This episode carries a simulator's labels on every frame (shown); clicks would replace them, so "
                "they are not taken.")
    else:
        for i, point in enumerate(L.POINTS):
            where = (f"({pending[i][0]:+.2f}, {pending[i][1]:+.2f})" if i < len(pending) else
                     "saved" if not pending and ep.first is not None else "not yet")
            st.markdown(f"**:{K.COLOUR_WORDS[point]}[{i + 1}. {point}]**: {where}")
        b1, b2, b3 = st.columns([1.2, 0.8, 1.4])
        if b1.button("Undo click", shortcut="U", disabled=not pending, key="kp_undo"):
            st.session_state[pending_key] = (pending[:-1], _seen)
            st.rerun()
        if b2.button("Skip", shortcut="N", key="kp_skip"):
            st.session_state["kp_goto"] = K.next_to_label(episodes, after=file) or file
            st.rerun()
        ready = len(pending) == len(L.POINTS)
        if b3.button("Save and next", type="primary", shortcut="S", disabled=not (may_label and ready),
                  key="kp_save"):
            saved = act(user, "label", K.save_clicks, root, file, pending, success="clicks saved")
            if saved is not None:
                st.session_state.pop(pending_key, None)
                st.session_state["kp_goto"] = K.next_to_label(K.episodes(root), after=file) or file
                st.rerun()

st.subheader("Train on the clicks")
if not can(user, "enqueue_job"):
    st.caption(f"Training needs role supervisor; you are {md(user.role)}.")
else:
    backend = L.dataset_backend(root)
    with db.read() as s:
        tasks = [t for t in repo.list_tasks(s) if t.backend == backend]
    if not tasks:
        st.caption(f"No task of this dataset's backend ({md(backend)}) to train for; add one on Tasks & fleet.")
    else:
        task_names = {t.id: t.name for t in tasks}
        tid = st.selectbox("For task", list(task_names), format_func=task_names.get, key="kp_task")
        if count["none"]:
            st.caption(f"{count['none']} episodes without clicks train without the keypoint loss.")
        if st.button("Train Stage 1 with the clicks tracked", disabled=not (count["first"] + count["all"])):
            # keypoint_labels "all" (the default): every stored label, the clicks followed through the frames.
            job = act(user, "enqueue_job", repo.enqueue_job, "sft", {"data": str(root), "keypoint_labels": "all"},
                      task_id=tid, success="Stage-1 training queued")
            if job is not None:
                st.success(f"sft job {job.id} queued; its progress shows on Tasks & fleet.")
