"""My account: the signed-in user's own details and a form to change their password."""

from __future__ import annotations

import streamlit as st

from core import accounts
from core.errors import AppError, ValidationError
from core.passwords import MIN_PASSWORD_LENGTH
from ui import fmt, session

user = session.require_user()
session.show_flash()
st.title("My account", anchor=False)
st.markdown(f"**{fmt.md(user.full_name or user.username)}**  \n:gray[{fmt.md(user.username)} · {user.role}]")

st.subheader("Change my password", anchor=False)
st.caption(
    f"At least {MIN_PASSWORD_LENGTH} characters; not a common password, a repeated pattern or your username. "
    "A phrase of several words is easy to remember and hard to guess."
)
with st.form("change_password", clear_on_submit=False):
    current = st.text_input("Current password", type="password", autocomplete="current-password")
    new = st.text_input("New password", type="password", autocomplete="new-password")
    repeat = st.text_input("Repeat the new password", type="password", autocomplete="new-password")
    submitted = st.form_submit_button("Change password", type="primary", icon=":material/key:")
if submitted:
    if new != repeat:
        st.error("The new passwords differ.", icon=":material/error:")
    else:
        try:
            accounts.change_own_password(user, current, new)
        except ValidationError as exc:
            for message in exc.errors.values():
                st.error(message, icon=":material/error:")
        except AppError as exc:
            st.error(fmt.md(str(exc)), icon=":material/error:")
        else:
            st.success("Your password was changed.", icon=":material/check_circle:")
