"""Patient record: demographics, visits (the history), allergies, chronic conditions and special notes."""

from __future__ import annotations

from dataclasses import asdict

import streamlit as st

from core import records
from core.errors import NotFound
from ui import fields, fmt, forms, session
from ui import record_views as views

user = session.require_user()
patient_id = st.session_state.get(session.PATIENT_ID)
if not patient_id:
    st.info("No patient selected.", icon=":material/person_search:")
    st.page_link(session.PATIENTS_PAGE, label="Find a patient", icon=":material/search:")
    st.stop()
try:
    record = session.current_record(patient_id, user)
except NotFound as exc:
    st.error(fmt.md(str(exc)), icon=":material/person_off:")
    st.page_link(session.PATIENTS_PAGE, label="Find a patient", icon=":material/search:")
    st.stop()
d = record.demographics
pid = record.patient_id

session.show_flash()
title, reload = st.columns([4, 1], vertical_alignment="bottom")
title.title(fmt.md(f"{d.family_name.upper()}, {d.given_name}"), anchor=False)
title.markdown(
    f"**{pid}** · {fmt.label(d.sex)} · born {fmt.day(d.date_of_birth)} ({fmt.age_years(d.date_of_birth)} y)"
)
if reload.button("Refresh", icon=":material/refresh:", help="Load the latest saved version of this record"):
    session.mark_record_stale()
    st.rerun()
reload.caption(f"As of {fmt.moment(st.session_state.get(session.RECORD_LOADED_AT))}")
xray_link, history_link, _ = st.columns([1, 1, 3])
xray_link.page_link(session.XRAY_PAGE, label="Upload an X-ray", icon=":material/radiology:")
history_link.page_link(session.HISTORY_PAGE, label="Imaging history", icon=":material/history:")
views.allergy_banner(record.allergies)
if record.special_notes:
    st.warning(f"**Special notes:** {fmt.md(record.special_notes)}", icon=":material/sticky_note_2:")

# Stable labels and a key keep the doctor on the tab they were working in across the rerun after a save.
tabs = st.tabs(
    ["Demographics", "Visits", "Allergies", "Chronic conditions", "Special notes"],
    key=f"{session.RECORD_KEYS}tab",
    on_change="rerun",
)
with tabs[0]:
    form = f"{session.RECORD_KEYS}demographics"
    if forms.editing(form):
        forms.edit_form(
            form,
            fields.DEMOGRAPHICS,
            latest_version=record.version,
            show_latest=lambda: views.demographics_view(d),
            save=lambda data, version: records.update_demographics(pid, data, version, user),
            make=records.Demographics,
            done="Demographics saved.",
        )
    else:
        views.demographics_view(d)
        if st.button("Edit demographics", icon=":material/edit:"):
            forms.start_edit(form, fields.DEMOGRAPHICS, asdict(d), record.version)
with tabs[1]:
    forms.ListEditor(
        name="visit",
        fields=fields.VISIT,
        make_input=records.VisitInput,
        describe=views.describe_visit,
        add=lambda data: records.add_visit(pid, data, user),
        update=lambda item_id, data, version: records.update_visit(item_id, data, version, user),
        remove=lambda item_id, version: records.remove_visit(item_id, version, user),
    ).render(record.visits, empty="No visits recorded.")
with tabs[2]:
    forms.ListEditor(
        name="allergy",
        fields=fields.ALLERGY,
        make_input=records.AllergyInput,
        describe=views.describe_allergy,
        add=lambda data: records.add_allergy(pid, data, user),
        update=lambda item_id, data, version: records.update_allergy(item_id, data, version, user),
        remove=lambda item_id, version: records.remove_allergy(item_id, version, user),
    ).render(record.allergies, empty="No allergies recorded.")
with tabs[3]:
    forms.ListEditor(
        name="condition",
        fields=fields.CONDITION,
        make_input=records.ConditionInput,
        describe=views.describe_condition,
        add=lambda data: records.add_condition(pid, data, user),
        update=lambda item_id, data, version: records.update_condition(item_id, data, version, user),
        remove=lambda item_id, version: records.remove_condition(item_id, version, user),
    ).render(record.conditions, empty="No chronic conditions recorded.")
with tabs[4]:
    form = f"{session.RECORD_KEYS}notes"
    if forms.editing(form):
        forms.edit_form(
            form,
            fields.SPECIAL_NOTES,
            latest_version=record.version,
            show_latest=lambda: st.markdown(fmt.md(record.special_notes) or "_No special notes._"),
            save=lambda notes, version: records.update_special_notes(pid, notes, version, user),
            make=lambda special_notes: special_notes,
            done="Special notes saved.",
        )
    else:
        st.markdown(fmt.md(record.special_notes) or "_No special notes._")
        if st.button("Edit special notes", icon=":material/edit:"):
            forms.start_edit(
                form, fields.SPECIAL_NOTES, {"special_notes": record.special_notes}, record.version
            )
