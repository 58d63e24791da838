"""The landing page's lists under the patient search: the films waiting to be read (the top of the
emergency worklist, urgent first) and "My recent patients"."""

from __future__ import annotations

import streamlit as st

from core.auth import AuthenticatedUser
from core.records.recent import RECENT_DAYS, recent_patients
from core.xray import queues
from ui import fmt, session, worklist_views, xray_views

WAITING_SHOWN = 5  # the top of the worklist; the rest is one click away


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


@st.fragment(run_every=60)
def waiting_films(user: AuthenticatedUser) -> None:
    """ "N films waiting, M urgent", a link to the full worklist, and its first films (urgent first, then
    the longest waiting). Refreshes every minute, like the worklist."""
    count = queues.waiting()
    title, link = st.columns([3, 1], vertical_alignment="bottom")
    title.subheader("Waiting to be read", anchor=False)
    link.page_link(session.WORKLIST_PAGE, label="Full worklist", icon=":material/emergency:")
    if not count.total:
        st.info("No film is waiting to be read.", icon=":material/task_alt:")
        return
    urgent = f":red[**{count.urgent} urgent**]" if count.urgent else "none urgent"
    more = f" — the first {WAITING_SHOWN} here" if count.total > WAITING_SHOWN else ""
    st.markdown(f"**{_plural(count.total, 'film')} waiting**, {urgent}{more}")
    # The patient's name opens the film: no Open buttons beside the search hits' own Open.
    worklist_views.film_rows(queues.worklist(WAITING_SHOWN, actor=user), key="home", open_button=False)


def my_recent_patients(user: AuthenticatedUser) -> None:
    """The patients this user opened, registered, uploaded a film to or read lately, newest first; the name
    is a link that opens the record (also in a new tab)."""
    st.subheader("My recent patients", anchor=False)
    recent = recent_patients(user)
    if not recent:
        st.caption(
            f"Patients you open, register or upload a film to in the last {RECENT_DAYS} days show here."
        )
        return
    widths = [4, 1.5, 2.5]
    with st.container(border=True):
        for column, heading in zip(st.columns(widths), ["Patient", "Age / sex", "Last opened"], strict=True):
            column.caption(heading)
        for row in recent:
            p = row.patient
            who, age_sex, when = st.columns(widths, vertical_alignment="center")
            who.page_link(
                session.RECORD_PAGE,
                label=f"**{p.patient_id}** · {p.display_name}",
                query_params=session.link(p.patient_id),
            )
            age_sex.markdown(f"{fmt.age_years(p.date_of_birth)} y · {fmt.label(p.sex)}")
            when.markdown(f"{fmt.moment(row.last_at)} :gray[({xray_views.waited(row.last_at)} ago)]")
