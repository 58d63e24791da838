"""Emergency worklist: unreviewed X-rays of every patient, most urgent triage first, then longest waiting."""

from __future__ import annotations

import streamlit as st

from core.xray import queues
from ui import fmt, referral_views, session, xray_views

user = session.require_user()
st.title("Emergency worklist", anchor=False)
referral_views.alert_banner(user)  # incoming referrals for the user's department, above the list
st.caption(
    "Unreviewed X-rays across all patients: most urgent first, then the longest waiting. Refreshes every minute."
)


@st.fragment(run_every=60)
def worklist() -> None:
    items = queues.worklist(actor=user)
    if not items:
        st.info("No X-ray is waiting for review.", icon=":material/task_alt:")
        return
    widths = [2, 3, 4, 1.5, 1.3]
    with st.container(border=True):
        for column, heading in zip(
            st.columns(widths), ["Triage", "Patient", "Top finding", "Waiting", ""], strict=True
        ):
            column.caption(heading)
        for item in items:
            level, who, found, waiting, action = st.columns(widths, vertical_alignment="center")
            level.markdown(xray_views.triage_badge(item.triage_level, item.uncertain))
            who.markdown(f"**{fmt.md(item.patient_id)}**  \n{fmt.md(item.patient_name)}")
            over = f" · {len(item.flagged)} over threshold" if item.flagged else ""
            found.markdown(f"{item.top_finding.replace('_', ' ')} {item.top_probability:.0%}:gray[{over}]")
            waiting.markdown(xray_views.waited(item.uploaded_at))
            if action.button(
                "Open", key=f"wl.open.{item.study_id}", icon=":material/visibility:", width="stretch"
            ):
                session.open_study(item.study_id, item.patient_id)


worklist()
