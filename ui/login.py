"""The login form: the only thing a signed-out visitor sees, whatever page the URL names."""

from __future__ import annotations

import streamlit as st

from core import auth
from core.errors import AuthError
from ui import fmt, session


def login_form() -> None:
    """Render the form; on success start the session and rerun into the page the URL asked for."""
    _, middle, _ = st.columns([1, 2, 1])
    with middle:
        st.title("Chest X-ray assistant", anchor=False)
        st.caption("Emergency department · patient records and first reads of chest radiographs")
        notice = st.session_state.get(session.LOGIN_NOTICE)
        if notice is None and st.query_params.get("signed_out"):  # back from /session/end after a logout
            notice = "You have logged out."
        if notice:
            st.warning(notice, icon=":material/timer_off:")
        with st.form("login"):
            username = st.text_input("Username", autocomplete="username")
            password = st.text_input("Password", type="password", autocomplete="current-password")
            submitted = st.form_submit_button("Log in", type="primary", icon=":material/login:")
        if submitted:
            try:
                user = auth.authenticate(username, password)
            except AuthError as exc:  # wrong password, unknown user, locked: the message says which applies
                st.error(fmt.md(str(exc)), icon=":material/lock:")
            else:
                session.sign_in(user)
                st.rerun()
