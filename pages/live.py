"""Live: a grid of up to 8 robots, each with its camera feed, the steps-to-go curve of the
running episode, detector state, step and checkpoint (drawn in the browser straight from the
worker's websocket), and buttons to stop the robot or override the detector."""
from __future__ import annotations

import streamlit as st
from streamlit.runtime.scriptrunner import get_script_run_ctx

from storage import repo
from storage.credentials import CredentialError
from ui import actions, queries
from ui.app_state import act, can, get_db, require_login
from ui.config import telemetry
from ui.live import CARD_HEIGHT, card_html
from ui.text import md

GRID = 8
COLUMNS = 4

user = require_login()
db = get_db()
st.title("Live")

with db.read() as s:
    tasks = {t.id: t for t in repo.list_tasks(s)}
    robots = repo.list_robots(s)
    sessions = repo.list_sessions(s, active_only=True, limit=20)

if not robots:
    st.info("No robots yet. Start a practice session on Tasks & fleet; the worker registers its robots "
            "and their feeds appear here.")
    st.stop()

# Robots that are driven now first (online, paused, stopped), then the offline ones.
robots.sort(key=lambda r: (r.status == "offline", r.name))
task_ids = sorted({r.task_id for r in robots if r.task_id is not None})
if len(task_ids) > 1:
    pick = st.selectbox("Task", task_ids, format_func=lambda i: tasks[i].name if i in tasks else str(i))
    robots = [r for r in robots if r.task_id == pick]
if len(robots) > GRID:
    pages = (len(robots) + GRID - 1) // GRID
    page = st.number_input(f"Robots page (of {pages})", 1, pages, 1) - 1
    robots = robots[page * GRID:(page + 1) * GRID]
with db.read() as s:  # each card's instruction until its frames bring one: the running or last episode's
    last_eps = queries.last_episodes(s, [r.id for r in robots])

if sessions:
    st.caption(" · ".join(f"session {p.id} ({md(tasks[p.task_id].name) if p.task_id in tasks else p.task_id}): "
                          f"{p.status}" for p in sessions))
else:
    st.caption("No practice session is running; feeds show the last frames the worker sent, if any.")

try:  # a ticket for this user and this browser session; the worker secret stays on the server
    tel = telemetry(user.username, getattr(get_script_run_ctx(), "session_id", "") or "")
except (CredentialError, ValueError) as e:
    st.error(f"Live feeds are unavailable: {md(e)}")
    st.stop()
may_control, may_override = can(user, "control_robot"), can(user, "override")
for row_start in range(0, len(robots), COLUMNS):
    cols = st.columns(COLUMNS)
    for col, robot in zip(cols, robots[row_start:row_start + COLUMNS]):
        task = tasks.get(robot.task_id)
        threshold = task.detector_threshold if task is not None else None
        with col:
            # Our own template (the robot name is escaped); scripts run so the card can open its socket.
            last = last_eps.get(robot.id)
            st.iframe(card_html(robot_id=robot.id, robot_name=robot.name, telemetry=tel, threshold=threshold,
                                task_name=task.name if task is not None else None,
                                instruction=last.instruction if last is not None else None,
                                node=queries.robot_node(robot)),
                      height=CARD_HEIGHT)
            if robot.status == "stopped":
                if st.button("Resume robot", key=f"resume{robot.id}", disabled=not may_control, width="stretch"):
                    act(user, "control_robot", repo.set_robot_status, robot.id, "online",
                        success=f"{md(robot.name)} resumed")
                    st.rerun()
            elif st.button("Stop robot", key=f"stop{robot.id}", disabled=not may_control, width="stretch",
                           help="stop this robot (its episode ends, the others go on)"):
                act(user, "control_robot", repo.set_robot_status, robot.id, "stopped", success=f"{md(robot.name)} stopped")
                st.rerun()
            b2, b3 = st.columns(2)
            for btn, label, verdict in ((b2, "✓ Success", True), (b3, "✗ Failure", False)):
                if btn.button(label, key=f"ov{int(verdict)}{robot.id}", disabled=not may_override, width="stretch",
                              help="override the detector on this robot's current episode"):
                    ep_id = act(user, "override", actions.override_running, robot.id, verdict)
                    if ep_id is not None:
                        st.toast(f"episode {ep_id} marked {'success' if verdict else 'failure'}")
                    elif repo.can(user, "override"):
                        st.warning(f"{md(robot.name)} has no practice episode running (the session may be "
                                   "evaluating its policy, which is not practice, or starting): nothing to "
                                   "override yet.")
if not may_override:
    st.caption(f"Stopping robots and overriding the detector need role supervisor; you are {user.role}.")


@st.fragment(run_every=3)
def fleet_status() -> None:
    ids = [r.id for r in robots]
    with db.read() as s:
        running = queries.running_episodes(s, ids)
        last = queries.last_episodes(s, ids)
        summary = {r["robot_id"]: r for r in repo.robot_summary(s)}
    rows = []
    for r in robots:
        ep = running.get(r.id)
        sm = summary.get(r.id, {})
        seen = last.get(r.id)  # the running episode, else the robot's last one
        rows.append({"robot": r.name, "status": sm.get("status", r.status), "node": queries.robot_node(r),
                     "episode": ep.id if ep else None, "instruction": (seen.instruction or "") if seen else "",
                     "checkpoint": ep.checkpoint_id if ep else None,
                     "override": None if ep is None else ep.override_success,
                     "episodes": sm.get("episodes", 0), "successes": sm.get("successes", 0)})
    st.dataframe(rows, hide_index=True, width="stretch")


st.subheader("Fleet")
fleet_status()
