"""Data: import a demonstration archive, Dojo's own or a LeRobot v3.0 dataset (validated whole
before anything is written), and export episodes as a LeRobot v3.0 dataset."""
from __future__ import annotations

import streamlit as st

from storage import repo
from storage.models import utcnow
from ui import dataio, queries
from ui.app_state import act, can, get_db, require_login
from ui.config import data_dir
from ui.text import md

user = require_login()
db = get_db()
st.title("Data")

with db.read() as s:
    tasks = repo.list_tasks(s)
    n_episodes = queries.episode_count(s)
names = {t.id: t.name for t in tasks}

st.subheader("Import demonstrations")
st.markdown("Upload a `.zip` or `.tar(.gz)` of a dataset folder: Dojo's own (`dataset.json` + "
            "`episodes/ep_<seed>.npz`, format in `core/learning/dataset.py`) or a **LeRobot v3.0** dataset "
            "(`meta/info.json`, `data/`, `videos/`; its frames are resized to the task's image size and its actions "
            "scaled into [-1, 1]). Every file is checked first; a bad archive is refused whole.")
may_import = can(user, "enqueue_job")
if not tasks:
    st.info("No task to import into yet.")
else:
    task_id = st.selectbox("Into task", list(names), format_func=names.get, key="import_task")
    upload = st.file_uploader("Dataset archive", type=["zip", "tar", "gz", "tgz"], disabled=not may_import)
    if not may_import:
        st.caption(f"Importing needs role supervisor; you are {user.role}.")
    if upload is not None and st.button("Import", type="primary", disabled=not may_import):
        try:
            # The upload itself (file-like), not upload.getvalue(): no second copy of its bytes;
            # it is unpacked to disk in chunks under limits (ui/archive.py).
            with st.spinner("Unpacking and checking every file..."):
                res = dataio.import_archive(db, upload, upload.name, task_id, actor=user,
                                            datasets_dir=data_dir() / "datasets")
        except dataio.ArchiveError as e:
            st.error(md(e, multiline=True))  # one problem a line, quoting the archive's own file names
        except repo.PermissionDenied as e:
            st.error(md(e))
        else:
            st.session_state["imported"] = (str(res.path), task_id)
            st.success(f"Imported {res.episodes} episodes ({res.frames} frames) into {md(res.path)}.")
            if res.lerobot:
                meta = res.lerobot["dataset"]
                st.info(md(f"LeRobot dataset: {meta['total_episodes']} episodes, {meta['total_frames']} frames in its "
                           f"meta; camera {res.lerobot['camera']}, actions scaled from "
                           f"{res.lerobot['action_bounds_from']}. {res.lerobot['note']}."))
    if "imported" in st.session_state and may_import:
        path, tid = st.session_state["imported"]
        st.caption("A lab's demonstrations carry no keypoint labels: click the object and its target on their first "
                   "frames on the **Keypoints** page first, and train from there with the clicks tracked (measured "
                   "without labels: no steps-to-go, no detector; docs/method.md).")
        if st.button(f"Train Stage 1 on {md(path)}", help="enqueue an sft job on this dataset (progress on Tasks & fleet)"):
            job = act(user, "enqueue_job", repo.enqueue_job, "sft", {"data": path}, task_id=tid,
                      success="Stage-1 training queued")
            if job is not None:
                st.session_state.pop("imported")
                st.success(f"sft job {job.id} queued; its progress shows on Tasks & fleet.")

st.subheader("Export episodes")
st.markdown("LeRobot v3.0 dataset (what `LeRobotDataset` loads): `data/` parquet, `videos/` mp4, `meta/info.json`, "
            "`meta/stats.json`, `meta/tasks.parquet`, `meta/episodes/`; Dojo's extra columns are documented in its "
            "README.md.")
st.caption(f"{n_episodes} episodes stored.")
c1, c2, c3 = st.columns(3)
ex_task = c1.selectbox("Task", [None] + list(names), format_func=lambda i: "all" if i is None else names[i],
                       key="export_task")
source = c2.selectbox("Source", [None, "practice", "demo", "eval"], format_func=lambda v: v or "all")
limit = c3.number_input("Newest episodes", 1, 5000, 100)
if st.button("Build export"):
    try:
        with st.spinner("Writing parquet and encoding video..."):
            blob, summary = dataio.export_lerobot(db, task_id=ex_task, source=source, limit=int(limit))
    except ValueError as e:
        st.error(md(e))
    else:
        name = f"dojo-export-{utcnow():%Y%m%d-%H%M%S}.zip"
        out = data_dir() / "exports" / name
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(blob)
        with db.write() as s:
            repo.audit(s, user, "export", ("dataset", name), summary)
        st.session_state["export"] = (name, blob, summary, str(out))
if "export" in st.session_state:
    name, blob, summary, path = st.session_state["export"]
    st.success(f"{summary['episodes']} episodes, {summary['frames']} frames → {md(path)}")
    st.download_button("Download " + md(name), blob, file_name=name, mime="application/zip")
