"""X-ray: upload a chest film into the selected patient's record, and the models' read of it."""

from __future__ import annotations

import streamlit as st

from core.errors import NotFound
from core.ml.registry import ModelNotAvailable
from ui import fmt, session, xray_views

user = session.require_user()
session.show_flash()
xray_views.reading_room_style()
try:
    session.load_models()
except ModelNotAvailable as exc:
    st.error(f"The X-ray models are not installed: {exc} Ask IT to install them.", icon=":material/error:")
    st.stop()

title, head, links = st.columns([1.1, 4.3, 3.1], vertical_alignment="bottom")
title.title("X-ray", anchor=False)
with links:
    picker = st.empty()
patient_id = st.session_state.get(session.PATIENT_ID)
if not patient_id:
    xray_views.patient_picker(None)
    st.stop()
with picker.container():
    left, middle, right = st.columns(3)
    with left:
        xray_views.patient_picker(patient_id)
    middle.page_link(session.RECORD_PAGE, label="Record", icon=":material/clinical_notes:")
    right.page_link(session.HISTORY_PAGE, label="History", icon=":material/history:", help="Imaging history")
try:
    record = session.current_record(patient_id, user)
except NotFound as exc:
    st.error(fmt.md(str(exc)), icon=":material/person_off:")
    st.stop()
d = record.demographics
head.subheader(
    fmt.md(f"{d.family_name.upper()}, {d.given_name} · {record.patient_id}")
    + f" :gray[{fmt.age_years(d.date_of_birth)} y, {fmt.label(d.sex)}]",
    anchor=False,
)

# The film first: directly under the patient header, large, with the read beside it. The uploader goes under
# the read once a film is on show, and takes the page's width while none is.
showing = (
    st.session_state.get(session.STUDY_ID) is not None
    or st.session_state.get(xray_views.upload_key(record.patient_id)) is not None
)
film_area, side = st.columns([2.9, 1.3], gap="medium") if showing else (st.container(), st.container())
side_top, side_bottom = side.container(), side.container()
with side_bottom if showing else film_area:
    if showing:
        st.markdown("**Upload another film**")
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
xray_views.keep_in_address(record.patient_id, view.study_id)
xray_views.result(view, user, record, film_area=film_area, side=side_top)
