"""Streamlit glue shared by every page: the database handle, who is logged in, and the
role check every action goes through.

The logged-in user is kept as an id in ``st.session_state`` and re-read from the database
on every run, so a role change or a disabled account takes effect at the user's next click.
Every action is also checked again inside storage (functions given ``actor=`` raise
PermissionDenied), so a button shown by mistake still cannot act.
"""
from __future__ import annotations

import os
from typing import Callable, Optional, TypeVar

import streamlit as st

from storage import Database, init_db, repo
from storage.auth import LoginThrottled
from storage.models import User
from ui.text import md

USER_KEY = "dojo_user_id"
CHOSEN_TASK = "dojo_task_id"  # the task picked on one page, kept when the user moves to another
T = TypeVar("T")


@st.cache_resource(show_spinner=False)
def _database(url: str) -> Database:
    # One engine (and its pool) per database per UI process; SQLAlchemy engines are thread-safe.
    return init_db(url or None)


def get_db() -> Database:
    return _database(os.environ.get("DATABASE_URL") or os.environ.get("DOJO_DB") or "")


def current_user() -> Optional[User]:
    uid = st.session_state.get(USER_KEY)
    if uid is None:
        return None
    with get_db().read() as s:
        user = s.get(User, uid)
    if user is None or user.disabled:
        st.session_state.pop(USER_KEY, None)
        return None
    return user


# When Streamlit cannot tell the address (localhost, some proxies), all such log-ins share one
# per-client throttle key.
LOCAL_CLIENT = "local"


def client_address() -> str:
    """The browser's address as Streamlit saw it (a proxy's, behind one), or LOCAL_CLIENT."""
    try:
        ip = st.context.ip_address
    except Exception:  # no script run context (called outside a page)
        return LOCAL_CLIENT
    # Only a non-empty string is an address (AppTest hands back a mock object).
    return ip if isinstance(ip, str) and ip else LOCAL_CLIENT


def login(username: str, password: str) -> Optional[User]:
    """The user, or None for a wrong name or password (the caller says so, the same way for
    both). Raises LoginThrottled when this name or address must wait; its message says how long."""
    throttled: Optional[LoginThrottled] = None
    with get_db().write() as s:
        try:
            user = repo.authenticate(s, username, password, client=client_address())
        except LoginThrottled as e:
            # Caught inside the transaction so that its audit row is committed.
            throttled, user = e, None
    if throttled is not None:
        raise throttled
    if user is not None:
        st.session_state[USER_KEY] = user.id
    return user


def logout() -> None:
    user = current_user()
    if user is not None:
        with get_db().write() as s:
            repo.audit(s, user, "logout", user)
    st.session_state.pop(USER_KEY, None)


def require_login() -> User:
    """The logged-in user, or stop the page with a pointer to the log-in page."""
    user = current_user()
    if user is None:
        st.warning("Please log in first (the Log in page).")
        st.stop()
    return user


def can(user: Optional[User], action: str) -> bool:
    return repo.can(user, action)


def act(user: User, action: str, fn: Callable[..., T], *args, success: str | None = None, **kwargs) -> Optional[T]:
    """Run ``fn(s, *args, actor=user, **kwargs)`` in one write transaction, after checking
    ``action`` for ``user``. Errors (permission, invalid transition, ...) are shown, not raised.
    Returns fn's result, or None when refused or failed."""
    if not repo.can(user, action):
        st.error(f"{md(user.username)} (role {user.role}) may not {action.replace('_', ' ')}: it needs role "
                 f"{repo.PERMISSIONS[action]} or higher. An admin can change roles on the Users page.")
        return None
    try:
        with get_db().write() as s:
            out = fn(s, *args, actor=user, **kwargs)
    except (repo.PermissionDenied, repo.InvalidTransition, LookupError, repo.NotFound, repo.EpisodeError, repo.JobError,
            repo.PromotionRefused, repo.AuthError, ValueError) as e:
        st.error(md(e))  # errors quote user input (names, labels): shown as typed, never as markdown
        return None
    if success:
        st.toast(success)  # callers escape the user text in it (ui.text.md)
    return out


def sidebar_user(user: User) -> None:
    with st.sidebar:
        st.caption(f"Logged in as **{md(user.username)}** ({user.role})")
        if st.button("Log out", key="dojo_logout"):
            logout()
            st.rerun()
