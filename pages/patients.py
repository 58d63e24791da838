"""The landing page: find a patient by ID (exact, its bare number or prefix) or by name, open the record, or
register a new patient; under the search (its hits first), the films waiting to be read and my recent
patients."""

from __future__ import annotations

import streamlit as st

from core import records
from ui import fields, fmt, forms, landing_views, session
from ui.focus import focus_input

user = session.require_user()
session.show_flash()
st.title("Patients", anchor=False)

with st.form("patient_search", border=False):
    query_col, button_col = st.columns([5, 1], vertical_alignment="bottom")
    query_col.text_input(
        "Patient ID or name",
        key="search_query",
        placeholder="Full ID, its number, the start of an ID, or a name (e.g. “100001”, “smith j”)",
    )
    button_col.form_submit_button("Search", type="primary", icon=":material/search:", width="stretch")
focus_input("Patient ID or name")  # the landing page: type an ID (or just its number) at once

query = st.session_state.get("search_query", "").strip()
hits = session.search_patients(query) if query else []
if query and not hits:
    st.info(f"No patient matches “{fmt.md(query)}”. Check the ID, or register the patient below.")
if hits:
    more = " — the first ones only: type more of the ID or name" if len(hits) == session.SEARCH_LIMIT else ""
    st.caption(f"{len(hits)} match{'es' if len(hits) != 1 else ''}{more}")
    widths = [2, 4, 1.5, 3, 1.5]
    with st.container(border=True):
        for column, heading in zip(
            st.columns(widths), ["Patient ID", "Name", "Sex", "Date of birth", ""], strict=True
        ):
            column.caption(heading)
        for hit in hits:
            pid_col, name_col, sex_col, born_col, open_col = st.columns(widths, vertical_alignment="center")
            pid_col.markdown(f"**{fmt.md(hit.patient_id)}**")
            name_col.markdown(fmt.md(hit.display_name))
            sex_col.markdown(fmt.label(hit.sex))
            born_col.markdown(f"{fmt.day(hit.date_of_birth)} ({fmt.age_years(hit.date_of_birth)} y)")
            if open_col.button(
                "Open", key=f"open.{hit.patient_id}", icon=":material/folder_open:", width="stretch"
            ):
                session.open_record(hit.patient_id)

new_patient = "new_patient"
with (
    st.expander(
        "Register a new patient", icon=":material/person_add:", expanded=bool(forms.errors(new_patient))
    ),
    st.form(f"{new_patient}.form", border=False),
):
    values = forms.inputs(new_patient, (fields.PATIENT_ID, *fields.DEMOGRAPHICS))
    submitted = st.form_submit_button("Register patient", type="primary", icon=":material/person_add:")
if submitted:
    patient_id = values.pop("patient_id")
    forms.submit(
        new_patient,
        lambda: records.create_patient(patient_id, records.Demographics(**values), user),
        done="Patient registered.",
        fields=(fields.PATIENT_ID, *fields.DEMOGRAPHICS),
        after=lambda created: session.open_record(created.patient_id),
    )

landing_views.waiting_films(user)
landing_views.my_recent_patients(user)
