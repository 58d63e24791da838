"""Review / correct one X-ray: the model's read beside the doctor's reading (findings, boxes, a note)."""

from __future__ import annotations

import streamlit as st

from core.errors import NotFound
from ui import fmt, session, xray_views
from ui import review_views as views

user = session.require_user()
session.show_flash()
st.title("Review / correct", anchor=False)
study_id = st.session_state.get(session.STUDY_ID)
if study_id is None:
    st.info("Open a film from the review queue or a patient's imaging history.", icon=":material/radiology:")
    st.page_link(session.QUEUE_PAGE, label="Review queue", icon=":material/fact_check:")
    st.stop()
try:
    state = views.current_state(study_id, user)
except NotFound as exc:
    st.session_state.pop(session.STUDY_ID, None)
    st.error(fmt.md(str(exc)), icon=":material/error:")
    st.stop()

head, links = st.columns([3, 2], vertical_alignment="bottom")
head.subheader(fmt.md(f"{state.patient_name} · {state.patient_id}"), anchor=False)
with links:
    left, right = st.columns(2)
    left.page_link(session.XRAY_PAGE, label="X-ray result", icon=":material/radiology:")
    right.page_link(session.HISTORY_PAGE, label="Imaging history", icon=":material/history:")
source = (
    f"from {fmt.md(state.based_on_by)}'s {'signed ' if state.signed else ''}reading of "
    f"{fmt.moment(state.based_on_at)}"
    if state.based_on
    else "from the model's read: its suggestions are shown beside each finding, not set for you"
)
st.markdown(f"{xray_views.status_badge(state.status)} :gray[Pre-filled {source}.]")
views.restore_draft(state)  # coming back to a film typed and not saved: the form as it was left
views.unsaved(state, user)

# The box editor gets the whole width: its controls take what its canvas leaves of the frame.
st.markdown("**Your reading: boxes**")
boxes = views.box_editor(state)
views.box_table(boxes, state)
model_col, reading_col = st.columns([2, 3])
with model_col:
    views.model_read(state)
with reading_col:
    st.markdown("**Your reading: findings**")
    with st.container(border=True):
        labels, sources = views.finding_labels(state)
    note = views.note(state)
    views.leave_guard(views.dirty(state, labels, sources, boxes, note))
    if state.signed:
        st.info(
            "This film has a signed reading. Changing it needs a new signed reading with a reason; "
            "the signed reading is kept.",
            icon=":material/verified:",
        )
        reason = st.text_input(
            "Reason for the amendment",
            max_chars=1000,
            key=f"{views.prefix(state)}reason",
            on_change=views.reason_changed,
            args=(state,),
        )
        if st.button("Amend and sign", type="primary", icon=":material/verified:", width="stretch"):
            views.save(
                state, labels, boxes, note, user, True, sources=sources, sign=True, amend_reason=reason
            )
    else:
        sign, save, draft = st.columns(3)
        if sign.button("Save and sign", type="primary", icon=":material/verified:", width="stretch"):
            views.save(state, labels, boxes, note, user, True, sources=sources, sign=True)
        if save.button("Save as reviewed", icon=":material/task_alt:", width="stretch"):
            views.save(state, labels, boxes, note, user, True, sources=sources)
        if draft.button("Save draft", icon=":material/save:", width="stretch"):
            views.save(state, labels, boxes, note, user, False, sources=sources)
        st.caption(
            "**Save and sign** makes you the reader of record (every finding must be set or accepted); "
            "a signed reading can later be changed only by a signed amendment with a reason."
        )
views.keep_draft(state, boxes)  # what is on the form now outlives a visit to another page
views.history(state.study_id)
