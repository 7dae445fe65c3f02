"""Users: change your password; admins add users, change roles, disable accounts and read
the audit log (starts, stops, overrides, labels, promotions, log-ins)."""
from __future__ import annotations

import streamlit as st

from storage import repo
from storage.models import ROLES
from ui.app_state import act, can, get_db, require_login
from ui.text import md

user = require_login()
db = get_db()
st.title("Users")
st.caption("Roles: viewer (read) < reviewer (label episodes) < supervisor (sessions, robots, overrides, jobs, "
           "checkpoints, tasks) < admin (users, audit log).")

with st.expander("Change my password"):
    with st.form("my_password", clear_on_submit=True):
        pw1 = st.text_input("New password (8+ characters)", type="password")
        pw2 = st.text_input("Repeat", type="password")
        if st.form_submit_button("Change password"):
            if pw1 != pw2:
                st.error("The two passwords differ.")
            else:
                try:
                    with db.write() as s:
                        repo.set_password(s, user.id, pw1, actor=user)
                    st.success("Password changed.")
                except repo.AuthError as e:
                    st.error(md(e))

if not can(user, "manage_users"):
    st.info(f"Managing users and reading the audit log needs role admin; you are {user.role}.")
    st.stop()

st.subheader("Accounts")
with db.read() as s:
    users = repo.list_users(s)
st.dataframe([{"id": u.id, "username": u.username, "role": u.role, "disabled": u.disabled,
               "created": u.created_at, "last login": u.last_login_at} for u in users],
             hide_index=True, width="stretch")

c1, c2 = st.columns(2)
with c1, st.form("add_user", clear_on_submit=True):
    st.markdown("**Add a user**")
    name = st.text_input("Username", key="new_username")
    pw = st.text_input("Password (8+ characters)", type="password", key="new_password")
    role = st.selectbox("Role", ROLES, index=0, key="new_role")
    if st.form_submit_button("Add user"):
        if act(user, "manage_users", repo.create_user, name, pw, role, success=f"user {md(name)} added") is not None:
            st.rerun()
with c2, st.form("edit_user"):
    st.markdown("**Change a user**")
    ids = [u.id for u in users]
    by_id = {u.id: u for u in users}
    uid = st.selectbox("User", ids, format_func=lambda i: by_id[i].username)
    new_role = st.selectbox("Role", ROLES, index=ROLES.index(by_id[uid].role) if uid in by_id else 0)
    disabled = st.checkbox("Disabled", value=by_id[uid].disabled if uid in by_id else False)
    reset = st.text_input("Reset password (optional)", type="password")
    if st.form_submit_button("Save"):
        ok = True
        if new_role != by_id[uid].role:
            ok = act(user, "manage_users", repo.set_role, uid, new_role) is not None and ok
        if disabled != by_id[uid].disabled:
            ok = act(user, "manage_users", repo.set_disabled, uid, disabled) is not None and ok
        if reset:
            ok = act(user, "manage_users", repo.set_password, uid, reset) is not None and ok
        if ok:
            st.rerun()

st.subheader("Audit log")
f1, f2, f3 = st.columns(3)
action = f1.selectbox("Action", [None, "start_session", "stop_session", "pause_session", "resume_session",
                                 "override", "label", "promote", "rollback", "robot_status", "enqueue_job",
                                 "cancel_job", "login", "login_failed", "create_user", "set_role",
                                 "import_dataset", "export", "update_task"],
                      format_func=lambda a: a or "all actions")
who = f2.selectbox("User", [None, "system"] + [u.username for u in users], format_func=lambda u: u or "everyone")
limit = f3.number_input("Rows", 10, 1000, 100)
with db.read() as s:
    log = repo.audit_log(s, limit=int(limit), action=action, username=who)
# A plain table (not a canvas grid): readable, searchable with the browser's find, printable.
# st.table renders its cells as markdown: every value is escaped (user names, targets and details
# quote what people and robots typed).
st.table([{"when (UTC)": f"{e.at:%Y-%m-%d %H:%M:%S}", "user": md(e.username), "action": md(e.action),
           "target": md(f"{e.target_type or ''} {e.target_id or ''}".strip()),
           "details": "" if not e.details else md(str(e.details)[:200])} for e in log])
