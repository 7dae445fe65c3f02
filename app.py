"""Dojo supervisor web app: ``streamlit run app.py`` (scripts/run.sh starts it with the worker).

Pages (pages/): Tasks & fleet, Live, Review, Keypoints, Training, Data, Users. Before log-in only the
log-in page exists; every page also checks the user itself, and every action is checked
again by storage against the user's role.
"""
from __future__ import annotations

# pandas and plotly are imported whole here, before any page runs: plotly looks pandas up in
# sys.modules without importing it, and on a fresh server it found pandas half-imported by
# another thread (the Training page failed with "partially initialized module 'pandas' has
# no attribute 'Series'" on its first load; tests/e2e/test_browser.py checks it renders).
import pandas  # noqa: F401
import plotly.graph_objects  # noqa: F401
import streamlit as st

from storage.auth import LoginThrottled
from ui.app_state import current_user, login, sidebar_user

st.set_page_config(page_title="Dojo", page_icon=":material/smart_toy:", layout="wide")


def login_page() -> None:
    st.title("Dojo")
    st.caption("Supervise robots practising on their own: live fleet, overrides, review, training.")
    with st.form("login"):
        username = st.text_input("Username")
        password = st.text_input("Password", type="password")
        if st.form_submit_button("Log in", type="primary"):
            try:
                user = login(username.strip(), password)
            except LoginThrottled as e:
                st.error(str(e))  # how long to wait; the same whether the name exists
            else:
                if user is None:
                    # One message for an unknown name, a wrong password and a disabled account.
                    st.error("Wrong username or password, or the account is disabled.")
                else:
                    st.rerun()
    st.caption("The first admin's password is DOJO_ADMIN_PASSWORD, or the one ./scripts/run.sh printed "
               "on its first start.")


user = current_user()
if user is None:
    nav = st.navigation([st.Page(login_page, title="Log in", icon=":material/login:")])
else:
    sidebar_user(user)
    pages = [
        st.Page("pages/tasks.py", title="Tasks & fleet", icon=":material/dashboard:", default=True),
        st.Page("pages/live.py", title="Live", icon=":material/videocam:"),
        st.Page("pages/review.py", title="Review", icon=":material/rate_review:"),
        st.Page("pages/keypoints.py", title="Keypoints", icon=":material/ads_click:"),
        st.Page("pages/training.py", title="Training", icon=":material/monitoring:"),
        st.Page("pages/data.py", title="Data", icon=":material/database:"),
        st.Page("pages/users.py", title="Users", icon=":material/group:"),
    ]
    nav = st.navigation(pages)
nav.run()
