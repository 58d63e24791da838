"""X-ray: upload a chest film into the selected patient's record, and the models' read of it."""

from __future__ import annotations

import streamlit as st

from core.errors import NotFound
from core.ml.registry import ModelNotAvailable
from ui import fmt, session, viewer, xray_views

user = session.require_user()
session.show_flash()
xray_views.reading_room_style()
try:
    session.load_models()
    viewer.warm_up()  # the first film's drawing costs what the next ones do
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

# The film and the read (and the uploader) rerun on their own (a fragment): an upload or a viewer tool does not
# redraw the header, the picker or the sidebar.
xray_views.film_and_read(record, user)
