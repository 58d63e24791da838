"""The "Unmatched from PACS" list: films on the hospital's PACS whose PatientID names no patient here, each
with *Attach to patient* (the right patient's ID) and *Dismiss* (a reason). Calls :mod:`core.pacs.unmatched`."""

from __future__ import annotations

import streamlit as st

from core.auth import AuthenticatedUser
from core.errors import AppError
from core.pacs import unmatched
from ui import fmt, session


def _attach(film: unmatched.UnmatchedFilm, user: AuthenticatedUser) -> None:
    with st.form(f"pacs.attach.{film.id}", border=False):
        patient_id = st.text_input("Attach to patient ID", key=f"pacs.pid.{film.id}")
        if st.form_submit_button("Attach to patient", icon=":material/person_add:"):
            try:
                study_id = unmatched.attach(film.id, patient_id, user)
            except AppError as exc:
                st.error(fmt.md(str(exc)), icon=":material/error:")
                return
            session.flash(f"Film attached and analysed as study {study_id}.")
            st.rerun()


def _dismiss(film: unmatched.UnmatchedFilm, user: AuthenticatedUser) -> None:
    with st.form(f"pacs.dismiss.{film.id}", border=False):
        reason = st.text_input("Why dismiss it", key=f"pacs.why.{film.id}")
        if st.form_submit_button("Dismiss", icon=":material/block:"):
            try:
                unmatched.dismiss(film.id, reason, user)
            except AppError as exc:
                st.error(fmt.md(str(exc)), icon=":material/error:")
                return
            session.flash("Film dismissed.")
            st.rerun()


def unmatched_list(user: AuthenticatedUser) -> None:
    """Every unmatched film with its two actions (never saved into a record until a doctor attaches it)."""
    try:
        films = unmatched.list_unmatched(user)
    except AppError as exc:
        st.error(fmt.md(str(exc)), icon=":material/block:")
        return
    if not films:
        st.info("No unmatched film from the PACS.", icon=":material/task_alt:")
        return
    for film in films:
        with st.container(border=True):
            st.markdown(
                f"**PACS patient ID {fmt.md(film.dicom_patient_id or '(none)')}** · "
                f"{fmt.md(film.dicom_patient_name or 'no name')} · found {fmt.moment(film.found_at)}"
            )
            st.caption(f"Study {fmt.md(film.study_instance_uid)} · {fmt.md(film.reason)}")
            left, right = st.columns(2)
            with left:
                _attach(film, user)
            with right:
                _dismiss(film, user)
