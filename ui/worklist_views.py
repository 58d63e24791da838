"""The emergency worklist's rows (thumbnail, triage, patient link, age / sex, top finding, waiting, read by,
Open): one widget, used by the worklist page and by the landing page's "waiting to be read" list."""

from __future__ import annotations

from collections.abc import Sequence

import streamlit as st

from core.review.readings import current_readings
from core.xray.queues import QueueItem
from ui import fmt, session, xray_views

_WIDTHS = [1.2, 1.6, 3, 1.2, 3, 1.2, 1.8, 1.6]  # the last: room for the Open button at 1440 px
_HEADINGS = ["Film", "Triage", "Patient", "Age / sex", "Top finding", "Waiting", "Read by", ""]


def film_rows(items: Sequence[QueueItem], key: str, *, open_button: bool = True) -> None:
    """The films as a table in a bordered box; the patient's name is a link to the film (also in a new tab),
    and with ``open_button`` an Open button (key ``{key}.open.{study_id}``) opens it in this tab."""
    readings = current_readings(i.study_id for i in items if i.status != "new")
    shown = len(_WIDTHS) if open_button else len(_WIDTHS) - 1
    with st.container(border=True, key=f"{key}-films"):
        for column, heading in zip(st.columns(_WIDTHS[:shown]), _HEADINGS[:shown], strict=True):
            column.caption(heading)
        for item in items:
            film, level, who, age_sex, found, waiting, read_by, *action = st.columns(
                _WIDTHS[:shown], vertical_alignment="center"
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
            tiers = fmt.tiers(item.likely, item.possible)
            found.markdown(
                f"{item.top_finding.replace('_', ' ')} {item.top_probability:.0%}"
                + (f":gray[ · {tiers}]" if tiers else "")
            )
            waiting.markdown(xray_views.waited(item.uploaded_at))
            reading = readings.get(item.study_id)
            if reading is not None:
                signed = " ✓ signed" if reading.signed else ""
                read_by.markdown(f"{fmt.md(reading.reader_name)}:gray[{signed}]")
            else:
                read_by.markdown(":gray[not yet read]" if item.status == "new" else ":gray[read]")
            if action and action[0].button(
                "Open", key=f"{key}.open.{item.study_id}", icon=":material/visibility:", width="stretch"
            ):
                session.open_study(item.study_id, item.patient_id)
