"""Hand-off widgets on the result page: the film's report as PDF, FHIR R4 JSON and DICOM (SR + secondary
capture, one ZIP), each made and audited only when clicked."""

from __future__ import annotations

from collections.abc import Callable

import streamlit as st

from core.auth import AuthenticatedUser
from core.handoff.export import MEDIA_TYPES, SUFFIXES, make_report
from core.xray.diagnosis import DiagnosisView

HELP = {
    "pdf": "The film, the AI read and the doctor's reading, one page",
    "fhir": "Patient, ImagingStudy, DiagnosticReport and one Observation per finding",
    "dicom-sr": "A ZIP of two DICOM files for a PACS: the Structured Report and the film with its boxes",
}


def report_buttons(view: DiagnosisView, user: AuthenticatedUser) -> None:
    """Three download buttons; each report is made (and audited) only when its button is clicked."""

    def maker(fmt: str) -> Callable[[], bytes]:
        def make() -> bytes:
            return make_report(view.study_id, fmt, user).data

        return make

    pdf_col, fhir_col, dicom_col = st.columns(3)
    for col, fmt, label, icon in (
        (pdf_col, "pdf", "Report (PDF)", ":material/picture_as_pdf:"),
        (fhir_col, "fhir", "FHIR R4", ":material/data_object:"),
        (dicom_col, "dicom-sr", "DICOM SR", ":material/radiology:"),
    ):
        col.download_button(
            label,
            data=maker(fmt),
            file_name=f"cxr-{view.patient_id}-study{view.study_id}{SUFFIXES[fmt]}",
            mime=MEDIA_TYPES[fmt],
            key=f"xr.report.{fmt}.{view.study_id}",
            icon=icon,
            on_click="ignore",
            width="stretch",
            help=HELP[fmt],
        )
