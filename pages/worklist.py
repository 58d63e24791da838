"""Emergency worklist: X-rays of every patient, unread ones first (most urgent triage, then longest waiting),
with thumbnail, age/sex, level, waiting time and who read it; filters by level and "not yet read"."""

from __future__ import annotations

import streamlit as st

from core.ml import triage
from core.review.readings import current_readings
from core.xray import queues
from ui import fmt, referral_views, session, xray_views

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
    readings = current_readings(i.study_id for i in items if i.status != "new")
    widths = [1.2, 1.6, 3, 1.2, 3, 1.3, 2, 1.2]
    headings = ["Film", "Triage", "Patient", "Age / sex", "Top finding", "Waiting", "Read by", ""]
    with st.container(border=True):
        for column, heading in zip(st.columns(widths), headings, strict=True):
            column.caption(heading)
        for item in items:
            film, level, who, age_sex, found, waiting, read_by, action = st.columns(
                widths, vertical_alignment="center"
            )
            if item.thumbnail_path.is_file():
                film.image(str(item.thumbnail_path), width=64)
            level.markdown(xray_views.triage_badge(item.triage_level, item.uncertain))
            who.page_link(
                session.XRAY_PAGE,
                label=f"**{item.patient_id}** · {item.patient_name}",
                query_params=session.link(item.patient_id, item.study_id),
            )
            born = item.date_of_birth
            age = f"{fmt.age_years(born)} y" if born else "age ?"
            age_sex.markdown(f"{age} · {fmt.label(item.sex)}")
            over = f" · {len(item.flagged)} over threshold" if item.flagged else ""
            found.markdown(f"{item.top_finding.replace('_', ' ')} {item.top_probability:.0%}:gray[{over}]")
            waiting.markdown(xray_views.waited(item.uploaded_at))
            reading = readings.get(item.study_id)
            if reading is not None:
                signed = " ✓ signed" if reading.signed else ""
                read_by.markdown(f"{fmt.md(reading.reader_name)}:gray[{signed}]")
            else:
                read_by.markdown(":gray[not yet read]" if item.status == "new" else ":gray[read]")
            if action.button(
                "Open", key=f"wl.open.{item.study_id}", icon=":material/visibility:", width="stretch"
            ):
                session.open_study(item.study_id, item.patient_id)


worklist()
