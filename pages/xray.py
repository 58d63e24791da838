"""X-ray: upload a chest film into the selected patient's record, and the models' read of it."""

from __future__ import annotations

import streamlit as st

from core.errors import NotFound
from core.ml.registry import ModelNotAvailable
from ui import fmt, session, xray_views

user = session.require_user()
session.show_flash()
st.title("X-ray", anchor=False)
try:
    session.load_models()
except ModelNotAvailable as exc:
    st.error(f"The X-ray models are not installed: {exc} Ask IT to install them.", icon=":material/error:")
    st.stop()

patient_id = xray_views.patient_picker(st.session_state.get(session.PATIENT_ID))
if not patient_id:
    st.stop()
try:
    record = session.current_record(patient_id, user)
except NotFound as exc:
    st.error(fmt.md(str(exc)), icon=":material/person_off:")
    st.stop()
d = record.demographics
head, links = st.columns([3, 2], vertical_alignment="bottom")
head.subheader(fmt.md(f"{d.family_name.upper()}, {d.given_name} · {record.patient_id}"), anchor=False)
with links:
    left, right = st.columns(2)
    left.page_link(session.RECORD_PAGE, label="Patient record", icon=":material/clinical_notes:")
    right.page_link(session.HISTORY_PAGE, label="Imaging history", icon=":material/history:")

xray_views.handle_upload(record, user)

study_id = st.session_state.get(session.STUDY_ID)
if study_id is None:
    st.caption("Upload a film to see the models' read; earlier films are in the imaging history.")
    st.stop()
try:
    view = xray_views.current_view(study_id, user)
except NotFound as exc:
    st.session_state.pop(session.STUDY_ID, None)
    st.error(fmt.md(str(exc)), icon=":material/error:")
    st.stop()
if view.patient_id != record.patient_id:  # a study of the previously selected patient
    st.session_state.pop(session.STUDY_ID, None)
    st.rerun()
st.divider()
xray_views.result(view, user)
