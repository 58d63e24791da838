"""The read as DICOM (core/handoff/dicom_out): the Structured Report and the secondary capture, round-tripped
through pydicom and highdicom, checked against the original DICOM's UIDs, validated by dicom3tools'
``dciodvfy`` where it is installed; the CLI's ``--format dicom-sr``. SQLite and PostgreSQL, real films."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Callable
from datetime import date
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset

from core.auth import AuthenticatedUser
from core.handoff import dicom_out
from core.handoff.export import make_report
from core.records import PatientRecord
from core.review import corrections as cx
from core.xray import diagnosis as dx
from tests.support.db import TestAccount
from tests.support.xray_samples import DICOM, PNG

ROOT = Path(__file__).resolve().parents[1]
SR_CLASS = "1.2.840.10008.5.1.4.1.1.88.34"  # Comprehensive 3D SR
SC_CLASS = "1.2.840.10008.5.1.4.1.1.7"  # Secondary Capture Image
DOCTOR_BOX = {"label": "Effusion", "x1": 40.0, "y1": 500.0, "x2": 420.0, "y2": 900.0}


@pytest.fixture
def film(make_patient: Callable[..., PatientRecord], doctor: AuthenticatedUser) -> dx.DiagnosisView:
    make_patient("ED-4711", given_name="Zoë", family_name="Ångström-Núñez", date_of_birth=date(1958, 3, 9))
    return dx.diagnose_upload("ED-4711", PNG.read_bytes(), PNG.name, doctor)


@pytest.fixture
def dicom_film(make_patient: Callable[..., PatientRecord], doctor: AuthenticatedUser) -> dx.DiagnosisView:
    ds = pydicom.dcmread(DICOM)
    ds.PatientID, ds.StudyDate = "ED-DCM", "20261124"
    ds.SpecificCharacterSet = "ISO_IR 192"  # the record's own patient, written the DICOM way
    ds.PatientName, ds.PatientSex, ds.PatientBirthDate = "Żółć^Łukasz", "F", "19600517"
    out = io.BytesIO()
    ds.save_as(out)
    make_patient("ED-DCM", given_name="Łukasz", family_name="Żółć")
    return dx.diagnose_upload("ED-DCM", out.getvalue(), "portable.dcm", doctor)


def sign(view: dx.DiagnosisView, doctor: AuthenticatedUser, note: str = "Left effusion, small.") -> None:
    state = cx.get_editor_state(view.study_id, doctor, audit=False)
    labels = dict.fromkeys(state.labels, "absent")
    labels["Effusion"] = "present"
    labels["Nodule"] = "uncertain"
    cx.save_correction(view.study_id, labels, (DOCTOR_BOX,), note, state.study_version, doctor, sign=True)


def round_trip(ds: Dataset) -> Dataset:
    return pydicom.dcmread(io.BytesIO(dicom_out.encode(ds)))


def texts_named(ds: Dataset, code: str) -> list[str]:
    """Every TEXT item's value whose concept name has code ``code``, anywhere in the content tree."""
    found = []
    for item in ds.get("ContentSequence", []):
        if item.ValueType == "TEXT" and item.ConceptNameCodeSequence[0].CodeValue == code:
            found.append(str(item.TextValue))
        found += texts_named(item, code)
    return found


def evaluations(sr: hd.sr.Comprehensive3DSR) -> dict[str, tuple[float, str]]:
    """finding code -> (AI probability %, the doctor's status meaning), from the parsed TID 1501 groups."""
    found = {}
    for group in sr.content.get_image_measurement_groups():
        probability = next(m.value for m in group.get_measurements() if m.name.value == "probability")
        doctor = group.get_qualitative_evaluations()[0].value.meaning
        found[group.finding_type.value] = (float(probability), doctor)
    return found


def test_a_signed_png_read_as_sr_and_secondary_capture(
    film: dx.DiagnosisView, doctor: AuthenticatedUser
) -> None:
    sign(film, doctor)
    sr_ds, sc_ds = (round_trip(ds) for ds in dicom_out.build_both(film.study_id, doctor))
    assert (sr_ds.SOPClassUID, sc_ds.SOPClassUID) == (SR_CLASS, SC_CLASS)
    # One patient, one study (new UIDs: the film was a PNG), two series.
    for ds in (sr_ds, sc_ds):
        assert ds.PatientID == "ED-4711" and str(ds.PatientName) == "Ångström-Núñez^Zoë"
        assert ds.PatientBirthDate == "19580309" and ds.SpecificCharacterSet == "ISO_IR 192"
    assert sr_ds.StudyInstanceUID == sc_ds.StudyInstanceUID
    assert sr_ds.SeriesInstanceUID != sc_ds.SeriesInstanceUID
    # Signed: complete and verified by the reader.
    assert (sr_ds.CompletionFlag, sr_ds.VerificationFlag) == ("COMPLETE", "VERIFIED")
    assert str(sr_ds.VerifyingObserverSequence[0].VerifyingObserverName) == "Test dr.house^"

    sr = hd.sr.Comprehensive3DSR.from_dataset(sr_ds)
    by_finding = evaluations(sr)
    assert set(by_finding) == {f.name[:16] for f in film.findings}
    effusion = next(f for f in film.findings if f.name == "Effusion")
    assert by_finding["Effusion"] == (round(effusion.probability * 100, 1), "Present")
    assert by_finding["Nodule"][1] == "Uncertain" and by_finding["Atelectasis"][1] == "Absent"
    # The model versions and the reader.
    versions = set(texts_named(sr_ds, "111003"))  # DCM "Algorithm Version", beside each measurement
    assert versions == {film.models["classifier"]} | ({film.models["detector"]} if film.boxes else set())
    context = sr.content.get_observer_contexts()
    kinds = {c.observer_type.meaning for c in context}
    assert kinds == {"Person", "Device"}
    # Boxes: every detector box and the doctor's, on the secondary capture's pixels (a PNG has no original).
    regions = sr.content.get_planar_roi_measurement_groups()
    assert len(regions) == len(film.boxes) + 1
    doctor_region = regions[-1]
    assert doctor_region.finding_type.meaning == "Effusion"
    ref = doctor_region.roi.ContentSequence[0].ReferencedSOPSequence[0]
    assert ref.ReferencedSOPInstanceUID == sc_ds.SOPInstanceUID
    scale = sc_ds.Columns / film.width
    points = np.reshape(doctor_region.roi.GraphicData, (-1, 2))
    assert points.shape == (5, 2) and np.allclose(points[0], (40 * scale, 500 * scale), atol=0.5)
    # The note and the notice as text.
    assert texts_named(sr_ds, "note") == ["Left effusion, small."]
    assert "Decision aid, not a diagnosis" in texts_named(sr_ds, "notice")[0]
    # The secondary capture: RGB with the boxes burned in (the doctor's blue box's edge is on the image).
    assert sc_ds.BurnedInAnnotation == "YES" and sc_ds.PhotometricInterpretation == "RGB"
    pixels = sc_ds.pixel_array
    x, y = round(40 * scale) + 1, round(700 * scale)
    r, g, b = (int(v) for v in pixels[y, x])
    assert b > 180 and r < 80, "the doctor's box is drawn in blue"


def test_a_dicom_film_keeps_its_study_and_is_referenced(
    dicom_film: dx.DiagnosisView, doctor: AuthenticatedUser
) -> None:
    original = pydicom.dcmread(DICOM, stop_before_pixels=True)
    sign(dicom_film, doctor)
    sr_ds, sc_ds = (round_trip(ds) for ds in dicom_out.build_both(dicom_film.study_id, doctor))
    for ds in (sr_ds, sc_ds):
        assert ds.StudyInstanceUID == original.StudyInstanceUID
        assert ds.SeriesInstanceUID != original.SeriesInstanceUID
        assert ds.PatientID == "ED-DCM" and str(ds.PatientName) == "Żółć^Łukasz"
        assert ds.StudyDate == "20261124"
    assert sc_ds.SourceImageSequence[0].ReferencedSOPInstanceUID == original.SOPInstanceUID
    evidence = sr_ds.CurrentRequestedProcedureEvidenceSequence[0]
    assert evidence.StudyInstanceUID == original.StudyInstanceUID
    series = evidence.ReferencedSeriesSequence[0]
    assert series.SeriesInstanceUID == original.SeriesInstanceUID
    assert series.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == original.SOPInstanceUID
    # The boxes point at the original image, in its own pixels.
    regions = hd.sr.Comprehensive3DSR.from_dataset(sr_ds).content.get_planar_roi_measurement_groups()
    ref = regions[-1].roi.ContentSequence[0].ReferencedSOPSequence[0]
    assert ref.ReferencedSOPInstanceUID == original.SOPInstanceUID
    points = np.reshape(regions[-1].roi.GraphicData, (-1, 2))
    sx = original.Columns / dicom_film.width
    assert np.allclose(points[2], (420 * sx, 900 * original.Rows / dicom_film.height), atol=0.5)


def test_an_unread_film_is_a_partial_unverified_sr_from_the_ai_alone(
    film: dx.DiagnosisView, doctor: AuthenticatedUser
) -> None:
    sr_ds = round_trip(dicom_out.build_sr(film.study_id, doctor))
    assert (sr_ds.CompletionFlag, sr_ds.VerificationFlag) == ("PARTIAL", "UNVERIFIED")
    sr = hd.sr.Comprehensive3DSR.from_dataset(sr_ds)
    assert {c.observer_type.meaning for c in sr.content.get_observer_contexts()} == {"Device"}
    assert {status for _, status in evaluations(sr).values()} == {"Not reviewed"}
    sc_ds = round_trip(dicom_out.build_secondary_capture(film.study_id, doctor))
    assert sc_ds.StudyInstanceUID == sr_ds.StudyInstanceUID
    # Same read, same instances (a PACS keeps one copy); a new reading makes new ones.
    again = dicom_out.build_sr(film.study_id, doctor)
    assert again.SOPInstanceUID == sr_ds.SOPInstanceUID
    sign(film, doctor)
    signed = dicom_out.build_sr(film.study_id, doctor)
    assert signed.SOPInstanceUID != sr_ds.SOPInstanceUID
    assert signed.StudyInstanceUID == sr_ds.StudyInstanceUID


@pytest.mark.skipif(shutil.which("dciodvfy") is None, reason="dicom3tools (dciodvfy) is not installed")
def test_dciodvfy_finds_no_error(
    film: dx.DiagnosisView, dicom_film: dx.DiagnosisView, doctor: AuthenticatedUser, tmp_path: Path
) -> None:
    sign(dicom_film, doctor)
    for view in (film, dicom_film):
        for kind, ds in zip(("sr", "sc"), dicom_out.build_both(view.study_id, doctor), strict=True):
            path = tmp_path / f"{view.study_id}.{kind}.dcm"
            path.write_bytes(dicom_out.encode(ds))
            done = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True)
            lines = (done.stdout + done.stderr).splitlines()
            errors = [line for line in lines if line.startswith("Error")]
            assert not errors, (kind, errors)
            # The only warnings allowed: the local coding scheme (declared in the dataset) is not a DICOM
            # defined term, and a study time left empty (type 2) when the original's header had none.
            allowed = ("99CXR", "needed to build DICOMDIR - Study Time")
            others = [
                line for line in lines if line.startswith("Warning") and not any(a in line for a in allowed)
            ]
            assert not others, (kind, others)


def test_the_download_zip_and_the_cli_write_both_files(
    film: dx.DiagnosisView, doctor: AuthenticatedUser, make_user: Callable[..., TestAccount], tmp_path: Path
) -> None:
    report = make_report(film.study_id, "dicom-sr", doctor)
    assert report.media_type == "application/zip" and report.filename.endswith(".dicom.zip")
    with zipfile.ZipFile(io.BytesIO(report.data)) as archive:
        names = sorted(archive.namelist())
        assert names == [
            f"cxr-ED-4711-study{film.study_id}.sc.dcm",
            f"cxr-ED-4711-study{film.study_id}.sr.dcm",
        ]
        assert pydicom.dcmread(io.BytesIO(archive.read(names[1]))).SOPClassUID == SR_CLASS

    account = make_user("sr.cli")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    command = [sys.executable, "-m", "core", "report", str(film.study_id), "--format", "dicom-sr"]
    command += ["--out", str(tmp_path / "read.dcm"), "--user", account.username]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    sr_ds = pydicom.dcmread(tmp_path / "read.sr.dcm")
    sc_ds = pydicom.dcmread(tmp_path / "read.sc.dcm")
    assert (sr_ds.SOPClassUID, sc_ds.SOPClassUID) == (SR_CLASS, SC_CLASS)
    again = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    assert again.returncode == 2 and "exists" in again.stderr and "Traceback" not in again.stderr
