"""Audit log for administrators: who viewed or changed what, when, with the values before and after."""

from __future__ import annotations

import json
from datetime import timedelta

import streamlit as st

from core import audit, auth
from core.errors import PermissionDenied
from ui import fmt, session

PAGE_SIZE = 100
ANY = "Any"

user = session.require_user()
st.title("Audit log", anchor=False)
if not user.is_admin:  # app.py hides the page from doctors; this refuses a direct run too
    st.error("Only administrators can see the audit log.", icon=":material/block:")
    st.stop()

today = session.utcnow().date()
with st.form("audit_filters"):
    who, patient, action, when = st.columns([2, 2, 2, 3])
    usernames = [u.username for u in auth.list_users(user)]
    username = who.selectbox("User", [ANY, *usernames], key="audit.user")
    patient_id = patient.text_input("Patient ID", key="audit.patient").strip()
    chosen_action = action.selectbox("Action", [ANY, *audit.ACTIONS], key="audit.action")
    period = when.date_input(
        "Between (UTC days)",
        value=(today - timedelta(days=7), today),
        format="YYYY-MM-DD",
        key="audit.period",
    )
    if st.form_submit_button("Apply filters", icon=":material/filter_alt:"):
        st.session_state["audit.page"] = 0  # new filters: back to the newest entries

# A half-picked range (first day only) filters from that day on.
date_from = period[0] if period else None
date_to = period[1] if len(period) > 1 else None
page_no = st.session_state.get("audit.page", 0)
try:
    result = audit.list_audit(
        user,
        username=None if username == ANY else username,
        patient_id=patient_id or None,
        action=None if chosen_action == ANY else chosen_action,
        date_from=date_from,
        date_to=date_to,
        limit=PAGE_SIZE,
        offset=page_no * PAGE_SIZE,
    )
except PermissionDenied as exc:
    st.error(fmt.md(str(exc)), icon=":material/block:")
    st.stop()


def _doc(value: dict[str, object] | None) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True) if value else ""


rows = [
    {
        "When (UTC)": fmt.moment(e.at),
        "User": e.username,
        "Action": e.action,
        "Patient": e.patient_id or "",
        "What": f"{e.entity_type} {e.entity_id or ''}".strip(),
        "Before": _doc(e.before),
        "After": _doc(e.after),
        "Detail": e.detail,
    }
    for e in result.entries
]
first = result.offset + 1 if rows else 0
st.caption(f"{first}–{result.offset + len(rows)} of {result.total} entries, newest first")
if rows:
    st.dataframe(rows, hide_index=True, width="stretch")
else:
    st.info("No audit entries match these filters.", icon=":material/search_off:")
older, newer = st.columns(2)
if older.button("Older", icon=":material/arrow_back:", disabled=result.offset + len(rows) >= result.total):
    st.session_state["audit.page"] = page_no + 1
    st.rerun()
if newer.button("Newer", icon=":material/arrow_forward:", disabled=page_no == 0):
    st.session_state["audit.page"] = page_no - 1
    st.rerun()
