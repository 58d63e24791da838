"""Accounts, for administrators: every user's state, and unlock, deactivate, re-activate, sign out everywhere,
reset a password, create an account; clients refused for too many failed logins. Every action is audited."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import streamlit as st

from core import accounts, auth, web_sessions
from core.errors import AppError, ValidationError
from db.models import ROLES
from ui import fmt, session

user = session.require_user()
st.title("Accounts", anchor=False)
if not user.is_admin:  # app.py hides the page from doctors; this refuses a direct run too
    st.error("Only administrators can manage accounts.", icon=":material/block:")
    st.stop()
session.show_flash()


def _run(action: str, done: str, do: Callable[[], object]) -> None:
    """Run an account action; flash ``done`` and rerun on success, show the reason otherwise."""
    try:
        do()
    except ValidationError as exc:
        for message in exc.errors.values():
            st.error(message, icon=":material/error:")
    except AppError as exc:
        st.error(f"{action}: {fmt.md(str(exc))}", icon=":material/error:")
    else:
        session.flash(done)
        st.rerun()


now = session.utcnow()
users = auth.list_users(user)
rows = [
    {
        "Username": u.username,
        "Name": u.full_name,
        "Role": u.role,
        "State": (
            "deactivated"
            if not u.active
            else f"locked until {fmt.moment(u.locked_until)}"
            if u.locked_until is not None and u.locked_until > now
            else "active"
        ),
        "Failed attempts": u.failed_attempts,
        "Last login (UTC)": fmt.moment(u.last_login_at) if u.last_login_at else "never",
    }
    for u in users
]
st.dataframe(rows, hide_index=True, width="stretch")

names = [u.username for u in users]
st.subheader("Change an account", anchor=False)
chosen = st.selectbox("Account", names, key="acc.user")
unlock_col, off_col, on_col, out_col = st.columns(4)
if unlock_col.button("Unlock", icon=":material/lock_open:", key="acc.unlock"):
    _run("Unlock", f"{chosen} unlocked.", lambda: accounts.unlock(chosen, user))
if off_col.button("Deactivate", icon=":material/person_off:", key="acc.deactivate"):
    _run("Deactivate", f"{chosen} deactivated.", lambda: accounts.deactivate(chosen, user))
if on_col.button("Activate", icon=":material/person_check:", key="acc.activate"):
    _run("Activate", f"{chosen} can log in again.", lambda: accounts.activate(chosen, user))
if out_col.button("Sign out everywhere", icon=":material/logout:", key="acc.revoke"):
    # every browser of theirs shows the login form on its next click (or within 30 s: ui/session.idle_watch)
    _run("Sign out", f"{chosen} signed out everywhere.", lambda: web_sessions.revoke_user(chosen, user))
if chosen:
    st.caption(f"{fmt.md(chosen)}: {web_sessions.live_count(chosen)} signed-in browser session(s).")

with st.form("acc.reset", clear_on_submit=True):
    st.markdown("**Reset the password** of the chosen account (tell them the new one in person).")
    new = st.text_input("New password", type="password", autocomplete="new-password", key="acc.reset.pw")
    if st.form_submit_button("Reset password", icon=":material/key:"):
        _run("Reset", f"New password set for {chosen}.", lambda: accounts.reset_password(chosen, new, user))

with (
    st.expander("Create an account", icon=":material/person_add:"),
    st.form("acc.create", clear_on_submit=False),
):
    username = st.text_input("Username", key="acc.new.username")
    full_name = st.text_input("Full name", key="acc.new.full_name")
    role = st.selectbox("Role", ROLES, key="acc.new.role")
    password = st.text_input("Password", type="password", autocomplete="new-password", key="acc.new.pw")
    if st.form_submit_button("Create account", icon=":material/person_add:"):
        _run(
            "Create",
            f"Account {username.strip().lower()} created.",
            lambda: auth.create_user(username, password, role=role, full_name=full_name, actor=user),
        )

blocked = auth.THROTTLE.blocked_clients(now)
st.subheader("Refused clients", anchor=False)
st.caption(
    "Addresses with too many failed logins (any accounts) in the last minutes, counted by this dashboard "
    "process; they may try again when the period ends, or now once cleared."
)
if not blocked:
    st.caption("None.")
for client in blocked:
    label, clear = st.columns([4, 1], vertical_alignment="center")
    label.markdown(fmt.md(client))
    if clear.button("Clear", key=f"acc.client.{client}", icon=":material/lock_open:"):
        _run("Clear", f"{client} may try again.", partial(accounts.unblock_client, client, user))
