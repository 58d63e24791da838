"""Imaging history of the selected patient: every film, probabilities over time, and a side-by-side view."""

from __future__ import annotations

import streamlit as st

from core.errors import NotFound
from core.xray import diagnosis
from ui import fmt, session, xray_views

user = session.require_user()
patient_id = st.session_state.get(session.PATIENT_ID)
if not patient_id:
    st.info("No patient selected.", icon=":material/person_search:")
    st.page_link(session.PATIENTS_PAGE, label="Find a patient", icon=":material/search:")
    st.stop()
try:
    record = session.current_record(patient_id, user)
    withdrawn = st.session_state.get("xr.history.withdrawn", False)
    studies = diagnosis.patient_history(record.patient_id, actor=user, withdrawn=withdrawn)
except NotFound as exc:
    st.error(fmt.md(str(exc)), icon=":material/person_off:")
    st.stop()
d = record.demographics
st.title("Imaging history", anchor=False)
head, upload = st.columns([4, 1], vertical_alignment="bottom")
head.subheader(fmt.md(f"{d.family_name.upper()}, {d.given_name} · {record.patient_id}"), anchor=False)
upload.page_link(session.XRAY_PAGE, label="Upload an X-ray", icon=":material/upload_file:")
if not studies:
    st.info("No X-ray in this record yet.", icon=":material/radiology:")
    st.stop()

count, show = st.columns([3, 1], vertical_alignment="center")
count.caption(f"{len(studies)} film{'s' if len(studies) != 1 else ''}, newest first")
show.toggle("Show withdrawn films", key="xr.history.withdrawn")
xray_views.history_list(studies, record.patient_id)
st.subheader("Probabilities over time", anchor=False)
xray_views.probability_chart(diagnosis.probability_series(record.patient_id))
st.subheader("Side by side", anchor=False)
xray_views.side_by_side(studies, user)
