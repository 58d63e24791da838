"""The film's report (core/handoff): the PDF read back and rendered, the FHIR bundle validated, the CLI, the
audit row; on SQLite and PostgreSQL with the committed models and a real film."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import select

from core.auth import AuthenticatedUser
from core.handoff import content
from core.handoff.export import make_report
from core.records import PatientRecord, VisitInput, add_visit
from core.review import corrections as cx
from core.xray import diagnosis as dx
from db import models
from db.session import session_scope
from tests.support.db import TestAccount
from tests.support.xray_samples import DICOM, PNG

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def film(make_patient: Callable[..., PatientRecord], doctor: AuthenticatedUser) -> dx.DiagnosisView:
    make_patient("ED-4711", given_name="Zoë", family_name="Ångström-Núñez", date_of_birth=date(1958, 3, 9))
    visit = add_visit("ED-4711", VisitInput(date.today(), "Chest pain, short of breath", ""), doctor)
    return dx.diagnose_upload("ED-4711", PNG.read_bytes(), PNG.name, doctor, visit_id=visit.id)


def pdf_text(data: bytes) -> str:
    from pypdf import PdfReader

    reader = PdfReader(io.BytesIO(data))
    assert len(reader.pages) == 1
    return reader.pages[0].extract_text()


def test_the_pdf_is_one_page_with_the_patient_the_read_and_the_film(
    film: dx.DiagnosisView, doctor: AuthenticatedUser, tmp_path: Path
) -> None:
    report = make_report(film.study_id, "pdf", doctor)
    assert report.data.startswith(b"%PDF") and report.media_type == "application/pdf"
    text = pdf_text(report.data)
    for expected in (
        "ÅNGSTRÖM-NÚÑEZ, Zoë",
        "ED-4711",
        "female",
        "Chest pain, short of breath",
        "not in the file (upload time only)",
        "Triage:",
        "Likely findings (AI)",
        "Possible findings (AI)",
        film.models["classifier"],
        "Not yet reviewed by a doctor",
        "Decision aid, not a diagnosis",
        f"by {doctor.username}",
    ):
        assert expected in text, expected
    for name in film.likely:
        assert next(f.label for f in film.findings if f.name == name) in text

    # Page 1 rendered: A4, and the film is on it (a large grey area, not a blank page).
    import pypdfium2 as pdfium

    page = pdfium.PdfDocument(report.data)[0]
    image = page.render(scale=1.5).to_pil().convert("L")
    image.save(tmp_path / "report.png")
    pixels = np.asarray(image, dtype=np.float32)
    assert abs(image.width / image.height - 210 / 297) < 0.01
    film_area = pixels[
        int(0.25 * image.height) : int(0.6 * image.height), int(0.08 * image.width) : int(0.55 * image.width)
    ]
    assert film_area.std() > 30 and film_area.mean() < 200, "the film is drawn where the layout puts it"


def test_the_current_reading_is_on_the_report_and_in_fhir_signed_or_not(
    film: dx.DiagnosisView, doctor: AuthenticatedUser
) -> None:
    state = cx.get_editor_state(film.study_id, doctor, audit=False)
    labels = dict.fromkeys(state.labels, "absent")
    labels["Effusion"] = "present"
    box = {"label": "Effusion", "x1": 40.0, "y1": 500.0, "x2": 420.0, "y2": 900.0}
    cx.save_correction(
        film.study_id, labels, (box,), "Small left effusion; no pneumothorax.", state.study_version, doctor
    )

    def effusion(bundle: dict[str, Any]) -> dict[str, Any]:
        return next(
            e["resource"]
            for e in bundle["entry"]
            if e["resource"]["resourceType"] == "Observation" and e["resource"]["code"]["text"] == "Effusion"
        )

    # Saved, not signed: on the report with the reader, still preliminary in FHIR.
    text = pdf_text(make_report(film.study_id, "pdf", doctor).data)
    assert "Saved, not signed, by Test dr.house (dr.house)" in text and "Present: Effusion." in text
    assert "Small left effusion" in text and "Marked by the doctor (blue): Effusion" in text
    assert "Reader: Test dr.house" in text and "Not yet reviewed" not in text
    bundle = json.loads(make_report(film.study_id, "fhir", doctor).data)
    report = bundle["entry"][2]["resource"]
    assert report["status"] == "preliminary" and "saved, not signed" in report["conclusion"]
    assert effusion(bundle)["note"][0]["text"] == "Doctor's reading: present"

    # Signed: the report says so, FHIR is final with the doctor's status coded (SNOMED CT present).
    state = cx.get_editor_state(film.study_id, doctor, audit=False)
    cx.save_correction(film.study_id, labels, (box,), "Signed.", state.study_version, doctor, sign=True)
    text = pdf_text(make_report(film.study_id, "pdf", doctor).data)
    assert "Signed by Test dr.house (dr.house)" in text and "Note: Signed." in text
    bundle = json.loads(make_report(film.study_id, "fhir", doctor).data)
    report = bundle["entry"][2]["resource"]
    assert report["status"] == "final" and report["resultsInterpreter"][0]["display"].startswith(
        "Test dr.house"
    )
    doctor_component = effusion(bundle)["component"][1]
    assert doctor_component["code"]["text"] == "doctor's reading"
    assert doctor_component["valueCodeableConcept"]["coding"][0]["code"] == "52101004"
    assert effusion(bundle)["status"] == "final"
    from fhir.resources.R4B.bundle import Bundle

    Bundle.model_validate(bundle)


def test_the_fhir_bundle_is_valid_r4(film: dx.DiagnosisView, doctor: AuthenticatedUser) -> None:
    from fhir.resources.R4B.bundle import Bundle

    data = json.loads(make_report(film.study_id, "fhir", doctor).data)
    parsed = Bundle.model_validate(data)
    kinds = [e.resource.__resource_type__ for e in parsed.entry]
    assert kinds[:3] == ["Patient", "ImagingStudy", "DiagnosticReport"]
    assert kinds.count("Observation") == len(film.findings)
    report = data["entry"][2]["resource"]
    assert report["status"] == "preliminary" and "Decision aid, not a diagnosis" in report["conclusion"]
    refs = {e["fullUrl"] for e in data["entry"]}
    assert all(r["reference"] in refs for r in report["result"])
    assert data["entry"][0]["resource"]["name"][0]["family"] == "Ångström-Núñez"


def test_a_dicom_film_reports_its_acquisition_date_and_projection(
    make_patient: Callable[..., PatientRecord], doctor: AuthenticatedUser
) -> None:
    import pydicom

    ds = pydicom.dcmread(DICOM)
    ds.StudyDate, ds.ViewPosition, ds.PatientID = "20261124", "AP", "ED-DCM"
    ds.PatientName, ds.PatientSex, ds.PatientBirthDate = (
        "LOVELACE^ADA",
        "F",
        "19600517",
    )  # the record's patient
    out = io.BytesIO()
    ds.save_as(out)
    make_patient("ED-DCM")
    view = dx.diagnose_upload("ED-DCM", out.getvalue(), "portable.dcm", doctor)
    assert content.gather(view.study_id, doctor).acquired == date(2026, 11, 24)
    text = pdf_text(make_report(view.study_id, "pdf", doctor).data)
    assert "2026-11-24, AP" in text and "upload time only" not in text
    fhir_study = json.loads(make_report(view.study_id, "fhir", doctor).data)["entry"][1]["resource"]
    assert fhir_study["started"] == "2026-11-24" and fhir_study["description"] == "Chest X-ray, AP"


def test_every_report_is_audited(film: dx.DiagnosisView, doctor: AuthenticatedUser) -> None:
    make_report(film.study_id, "pdf", doctor)
    make_report(film.study_id, "fhir", doctor)
    with session_scope() as s:
        rows = s.scalars(
            select(models.AuditLog).where(models.AuditLog.action == "report").order_by(models.AuditLog.id)
        ).all()
    assert [(r.username, r.entity_id, r.patient_id, r.after["format"]) for r in rows] == [
        (doctor.username, str(film.study_id), "ED-4711", "pdf"),
        (doctor.username, str(film.study_id), "ED-4711", "fhir"),
    ]


def test_the_cli_writes_the_report_and_refuses_an_unknown_study(
    film: dx.DiagnosisView, make_user: Callable[..., TestAccount], tmp_path: Path
) -> None:
    account = make_user("report.cli")
    out = tmp_path / "r.pdf"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    base = [sys.executable, "-m", "core", "report"]
    done = subprocess.run(
        [*base, str(film.study_id), "--out", str(out), "--user", account.username],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert out.read_bytes().startswith(b"%PDF") and "wrote" in done.stdout
    again = subprocess.run(
        [*base, str(film.study_id), "--out", str(out), "--user", account.username],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    assert again.returncode == 2 and "exists" in again.stderr
    missing = subprocess.run(
        [*base, "999999", "--format", "fhir", "--out", str(tmp_path / "x.json"), "--user", account.username],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    assert (
        missing.returncode == 2 and "Traceback" not in missing.stderr and not (tmp_path / "x.json").exists()
    )


def test_a_note_of_the_longest_length_keeps_the_report_on_one_page(
    film: dx.DiagnosisView, doctor: AuthenticatedUser
) -> None:
    state = cx.get_editor_state(film.study_id, doctor, audit=False)
    words = "Bilateral basal opacities, more on the left, with blunting of the costophrenic angle. "
    note = (words * 40)[:2000].strip()
    cx.save_correction(film.study_id, dict(state.labels), (), note, state.study_version, doctor)
    text = pdf_text(make_report(film.study_id, "pdf", doctor).data)  # asserts one page
    assert "Bilateral basal opacities" in text and "Decision aid, not a diagnosis" in text
    assert "Reader: Test dr.house" in text
