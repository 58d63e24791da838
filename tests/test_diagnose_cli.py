"""``python -m core diagnose``: triage in the JSON, and ``--patient``/``--user`` batch import through the same
service as the upload page (SQLite and PostgreSQL)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import select

from core.__main__ import main
from core.records import PatientRecord
from db import models
from db.session import session_scope
from tests.support.db import TestAccount
from tests.support.xray_samples import DICOM, DICOM_PATIENT_ID, NOT_CHEST_DICOM, PNGS

MakePatient = Callable[..., PatientRecord]


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, list[dict], str]:
    status = main(["diagnose", *argv, "--json"])
    out, err = capsys.readouterr()
    return status, [json.loads(line) for line in out.splitlines() if line.startswith("{")], err


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """Two chest PNGs and a DICOM of an extremity (refused)."""
    for source in (*PNGS[:2], NOT_CHEST_DICOM):
        shutil.copy(source, tmp_path / source.name)
    return tmp_path


def test_json_gains_triage(capsys: pytest.CaptureFixture[str]) -> None:
    status, [row], _ = run(capsys, str(PNGS[0]))
    assert status == 0 and row["accepted"]
    assert set(row["triage"]) == {
        "level",
        "uncertain",
        "reason",
        "abnormality",
        "urgency",
        "likely",
        "possible",
    }
    assert row["triage"]["level"] in ("urgent", "priority", "routine")
    assert row["triage"]["uncertain"] == bool(row["triage"]["reason"])
    assert 0.0 <= row["triage"]["urgency"] <= row["triage"]["abnormality"] <= 1.0
    # a likely finding is never also a possible one, and every one of them is a finding of the card
    assert not set(row["triage"]["likely"]) & set(row["triage"]["possible"])
    assert set(row["triage"]["likely"]) | set(row["triage"]["possible"]) <= set(row["findings"])


def test_patient_import_saves_each_accepted_image_once(
    capsys: pytest.CaptureFixture[str],
    make_user: Callable[..., TestAccount],
    make_patient: MakePatient,
    folder: Path,
) -> None:
    make_patient("ED-1")
    importer = make_user("dr.import")
    status, rows, _ = run(capsys, str(folder), "--patient", "ed-1", "--user", "DR.IMPORT")
    assert status == 1  # the extremity film was refused
    accepted = [r for r in rows if r["accepted"]]
    assert len(accepted) == 2 and all(not r["duplicate"] and r["patient_id"] == "ED-1" for r in accepted)
    assert [r["code"] for r in rows if not r["accepted"]] == ["not_chest_xray"]
    assert all("level" in r["triage"] for r in accepted)
    with session_scope() as s:
        studies = s.scalars(select(models.Study)).all()
        assert sorted(st.id for st in studies) == sorted(r["study_id"] for r in accepted)
        assert {st.uploaded_by for st in studies} == {importer.user.id}
        audit = s.scalars(select(models.AuditLog).where(models.AuditLog.action == "diagnose")).all()
        assert [a.username for a in audit] == ["dr.import", "dr.import"]

    status, rows, _ = run(capsys, str(folder), "--patient", "ED-1", "--user", "dr.import")
    assert [r["duplicate"] for r in rows if r["accepted"]] == [True, True]


def test_patient_import_refuses_another_patients_dicom_unless_confirmed(
    capsys: pytest.CaptureFixture[str], make_user: Callable[..., TestAccount], make_patient: MakePatient
) -> None:
    make_patient("ED-1")
    make_user("dr.import")
    status, [row], _ = run(capsys, str(DICOM), "--patient", "ED-1", "--user", "dr.import")
    assert status == 1 and row["code"] == "patient_mismatch" and DICOM_PATIENT_ID in row["reason"]
    status, [row], _ = run(
        capsys, str(DICOM), "--patient", "ED-1", "--user", "dr.import", "--confirm-patient-mismatch"
    )
    assert status == 0 and row["accepted"] and row["study_id"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--patient", "ED-1"], "--patient and --user go together"),
        (["--patient", "ED-1", "--user", "nobody"], "No active user named 'nobody'"),
        (["--patient", "ED-404", "--user", "dr.import"], "No patient with ID 'ED-404'"),
    ],
)
def test_patient_import_needs_a_known_patient_and_user(
    capsys: pytest.CaptureFixture[str],
    make_user: Callable[..., TestAccount],
    make_patient: MakePatient,
    argv: list[str],
    message: str,
) -> None:
    make_patient("ED-1")
    make_user("dr.import")
    status, rows, err = run(capsys, str(PNGS[0]), *argv)
    assert status == 2 and rows == [] and message in err
