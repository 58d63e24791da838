"""Emergency worklist: X-rays of every patient, unread ones first (most urgent triage, then longest waiting),
with thumbnail, age/sex, level, waiting time and who read it; filters by level and "not yet read"."""

from __future__ import annotations

import streamlit as st

from core.ml import triage
from core.xray import queues
from ui import referral_views, session, worklist_views

user = session.require_user()
st.title("Emergency worklist", anchor=False)
referral_views.alert_banner(user)  # incoming referrals for the user's department, above the list (issue 14)
st.caption(
    "Unread X-rays across all patients: most urgent first, then the longest waiting; films read in the last "
    f"{queues.READ_HOURS} hours follow when shown. Refreshes every minute. A patient's name opens the film "
    "(also in a new tab)."
)
level_col, unread_col = st.columns([3, 2], vertical_alignment="bottom")
levels = level_col.pills(
    "Triage level",
    list(triage.LEVELS),
    selection_mode="multi",
    default=list(triage.LEVELS),
    format_func=lambda level: level.capitalize(),
    key="wl.levels",
)
unread_only = unread_col.toggle("Not yet read only", value=True, key="wl.unread")


@st.fragment(run_every=60)
def worklist() -> None:
    items = [
        item
        for item in queues.worklist(actor=user, include_read=not unread_only)
        if item.triage_level in (levels or triage.LEVELS)
    ]
    if not items:
        everything = unread_only and set(levels or triage.LEVELS) == set(triage.LEVELS)
        nothing = "No X-ray is waiting for review." if everything else "No X-ray matches these filters."
        st.info(nothing, icon=":material/task_alt:")
        return
    worklist_views.film_rows(items, key="wl")


worklist()
