"""Unmatched from PACS: films sent to the hospital's PACS for a patient ID unknown here, to attach or dismiss."""

from __future__ import annotations

import streamlit as st

from ui import pacs_views, session

user = session.require_user()
st.title("Unmatched from PACS", anchor=False)
session.show_flash()
st.caption(
    "Films the PACS holds for a patient ID that no record here has. They are in no record: attach each to the "
    "right patient (it is analysed then) or dismiss it with a reason. Both are audited."
)
pacs_views.unmatched_list(user)
