"""The PACS round trip against a real, throwaway Orthanc (tests/support/orthanc.py), on both databases:
films STOWed to it are imported by ``python -m core pacs sync`` into the right record (or listed as
unmatched, or refused with the reason), never twice; the read goes back as SR + secondary capture; a PACS
that does not answer gives one sentence and nothing half-imported; unmatched films are attached or dismissed."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import generate_uid
from sqlalchemy import func, select

from core.__main__ import main
from core.auth import AuthenticatedUser
from core.errors import ConflictError
from core.pacs import unmatched
from core.pacs.client import DicomWebClient, PacsUnavailable
from core.pacs.sync import send_reading, sync
from core.review import corrections as cx
from core.xray.diagnosis import get_diagnosis
from db import models
from db.session import session_scope
from tests.support import apptest
from tests.support.db import TestAccount
from tests.support.orthanc import Orthanc, _free_port, start_orthanc
from tests.support.xray_samples import DICOM, NOT_CHEST_DICOM

SR_PREFIX = "1.2.840.10008.5.1.4.1.1.88."


def film(path: Path, patient_id: str, born: str = "19600517") -> bytes:
    """The sample as a new film of ``patient_id`` (new study, series and instance UIDs), its header naming
    the patient ``make_patient`` registers by default (Ada Lovelace, female, born 1960-05-17)."""
    ds = pydicom.dcmread(path)
    ds.PatientID = patient_id
    ds.PatientName, ds.PatientSex, ds.PatientBirthDate = "LOVELACE^ADA", "F", born
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def uid(data: bytes, keyword: str) -> str:
    return str(pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True).get(keyword))


@pytest.fixture
def pacs(tmp_path: Path, configure: Callable[..., None]) -> Iterator[Orthanc]:
    orthanc = start_orthanc(tmp_path / "orthanc")
    configure(pacs_url=orthanc.dicomweb)
    yield orthanc
    orthanc.stop()


def imports() -> dict[str, tuple[str, int | None, str]]:
    with session_scope() as session:
        rows = session.scalars(select(models.PacsImport)).all()
        return {r.sop_instance_uid: (r.status, r.study_id, r.reason) for r in rows}


def dicom_out_available() -> bool:
    try:
        from core.handoff import dicom_out  # noqa: F401
    except ImportError:
        return False
    return True


def test_sync_imports_matches_refuses_and_never_twice(
    pacs: Orthanc, doctor: AuthenticatedUser, make_patient: Callable[..., object]
) -> None:
    make_patient("ED-7")
    known, stranger, hand = film(DICOM, "ED-7"), film(DICOM, "NOBODY-9"), film(NOT_CHEST_DICOM, "ED-7")
    client = DicomWebClient(pacs.dicomweb)
    assert len(client.store([known, stranger, hand]).stored) == 3

    report = sync(doctor)

    assert report.imported == [uid(known, "SOPInstanceUID")]
    assert report.unmatched == [uid(stranger, "SOPInstanceUID")]
    assert report.refused == [uid(hand, "SOPInstanceUID")]
    rows = imports()
    status, study_id, _ = rows[uid(known, "SOPInstanceUID")]
    assert status == "imported" and study_id is not None
    view = get_diagnosis(study_id, doctor)
    assert view.patient_id == "ED-7" and view.source_format == "dicom" and len(view.findings) == 14
    assert rows[uid(stranger, "SOPInstanceUID")][:2] == ("unmatched", None)
    assert "chest" in rows[uid(hand, "SOPInstanceUID")][2].lower()
    with session_scope() as session:  # the stranger's film went into no record
        assert session.scalar(select(func.count()).select_from(models.Study)) == 1

    again = sync(doctor)
    assert (again.imported, again.unmatched, again.refused) == ([], [], [])
    assert len(imports()) == 3


def test_a_film_under_a_known_id_with_another_birth_date_waits_for_a_doctor(
    pacs: Orthanc, doctor: AuthenticatedUser, make_patient: Callable[..., object]
) -> None:
    """The ID matches a record but the header's birth date does not: never saved by the sync, listed as
    unmatched with the contradiction as the reason; a doctor attaching it confirms it."""
    make_patient("ED-7")
    doubtful = film(DICOM, "ED-7", born="19450102")
    DicomWebClient(pacs.dicomweb).store([doubtful])

    report = sync(doctor)

    assert report.unmatched == [uid(doubtful, "SOPInstanceUID")] and report.imported == []
    status, study_id, reason = imports()[uid(doubtful, "SOPInstanceUID")]
    assert (status, study_id) == ("unmatched", None)
    assert reason == "birth date 1945-01-02 (record: 1960-05-17)"
    (listed,) = unmatched.list_unmatched(doctor)
    assert listed.reason == reason
    assert get_diagnosis(unmatched.attach(listed.id, "ED-7", doctor), doctor).patient_id == "ED-7"


def test_read_goes_back_as_sr_and_secondary_capture(
    pacs: Orthanc, doctor: AuthenticatedUser, make_patient: Callable[..., object]
) -> None:
    if not dicom_out_available():
        pytest.skip(
            "core.handoff.dicom_out (the SR / secondary-capture builders) is not in this checkout yet"
        )
    make_patient("ED-8")
    known = film(DICOM, "ED-8")
    client = DicomWebClient(pacs.dicomweb)
    client.store([known])
    report = sync(doctor)
    assert report.error == "" and len(report.sent) == 1
    classes = [i.sop_class_uid for i in client.search_instances(uid(known, "StudyInstanceUID"))]
    assert len(classes) == 3 and any(c.startswith(SR_PREFIX) for c in classes)
    assert sync(doctor).imported == []  # our own SR and SC are never imported back
    study_id = imports()[uid(known, "SOPInstanceUID")][1]
    assert study_id is not None
    again = send_reading(study_id, doctor, reason="sign-off")  # e.g. after the doctor signs
    assert len(again) == 2
    on_pacs = {i.sop_instance_uid for i in client.search_instances(uid(known, "StudyInstanceUID"))}
    assert set(again) <= on_pacs  # in the original study
    with session_scope() as session:
        sent = session.scalars(
            select(models.PacsExport.sop_instance_uid).where(models.PacsExport.study_id == study_id)
        )
        assert set(sent) == on_pacs - {uid(known, "SOPInstanceUID")}
    assert sync(doctor).imported == []


def test_pacs_down_gives_one_sentence_and_is_retried(
    configure: Callable[..., None],
    doctor: AuthenticatedUser,
    make_patient: Callable[..., object],
    tmp_path: Path,
) -> None:
    make_patient("ED-9")
    configure(pacs_url=f"http://127.0.0.1:{_free_port()}/dicom-web")
    report = sync(doctor)
    assert "does not answer" in report.error and "\n" not in report.error
    assert imports() == {}
    orthanc = start_orthanc(tmp_path / "later")
    try:
        configure(pacs_url=orthanc.dicomweb)
        DicomWebClient(orthanc.dicomweb).store([film(DICOM, "ED-9")])
        assert len(sync(doctor).imported) == 1
    finally:
        orthanc.stop()


def test_unmatched_film_is_attached_or_dismissed_once(
    pacs: Orthanc, doctor: AuthenticatedUser, make_patient: Callable[..., object]
) -> None:
    make_patient("ED-10")
    first, second = film(DICOM, "WRONG-1"), film(DICOM, "WRONG-2")
    DicomWebClient(pacs.dicomweb).store([first, second])
    sync(doctor)
    listed = unmatched.list_unmatched(doctor)
    assert [f.dicom_patient_id for f in listed] == ["WRONG-1", "WRONG-2"]
    study_id = unmatched.attach(listed[0].id, "ED-10", doctor)
    assert get_diagnosis(study_id, doctor).patient_id == "ED-10"
    unmatched.dismiss(listed[1].id, "a test film from the vendor", doctor)
    assert unmatched.list_unmatched(doctor) == ()
    with pytest.raises(ConflictError):
        unmatched._resolve(listed[1].id, doctor, status="dismissed")
    with session_scope() as session:
        actions = session.scalars(
            select(models.AuditLog.entity_id).where(
                models.AuditLog.entity_type == "pacs_import", models.AuditLog.action == "update"
            )
        ).all()
    assert sorted(actions) == sorted([str(listed[0].id), str(listed[1].id)])


def test_unmatched_page_lists_attaches_and_dismisses(
    pacs: Orthanc, make_user: Callable[..., TestAccount], make_patient: Callable[..., object]
) -> None:
    account = make_user("dr.page", role="doctor")
    make_patient("ED-11")
    DicomWebClient(pacs.dicomweb).store([film(DICOM, "STRANGER-1"), film(DICOM, "STRANGER-2")])
    sync(account.user)
    at = apptest.login(account)
    at.switch_page("pages/pacs.py").run()
    assert not at.exception, at.exception
    assert "STRANGER-1" in apptest.texts(at) and "STRANGER-2" in apptest.texts(at)
    first, second = unmatched.list_unmatched(account.user)
    at.text_input(key=f"pacs.pid.{first.id}").set_value("ED-11")
    at.button(key=f"FormSubmitter:pacs.attach.{first.id}-Attach to patient").click().run()
    assert not at.exception, at.exception
    at.text_input(key=f"pacs.why.{second.id}").set_value("")
    at.button(key=f"FormSubmitter:pacs.dismiss.{second.id}-Dismiss").click().run()
    assert "Say why" in apptest.texts(at)  # refused without a reason, still listed
    at.text_input(key=f"pacs.why.{second.id}").set_value("duplicate sent by the scanner")
    at.button(key=f"FormSubmitter:pacs.dismiss.{second.id}-Dismiss").click().run()
    assert not at.exception, at.exception
    assert "No unmatched film from the PACS." in apptest.texts(at)
    assert {r[0] for r in imports().values()} == {"imported", "dismissed"}


def _sign(study_id: int, doctor: AuthenticatedUser) -> None:
    state = cx.get_editor_state(study_id, doctor)
    cx.save_correction(
        study_id,
        state.model_labels,
        state.boxes,
        "Signed for the PACS",
        state.study_version,
        doctor,
        sources=dict.fromkeys(state.finding_names, "accepted"),
        sign=True,
    )


def sign_off_sends(study_id: int) -> int:
    with session_scope() as session:
        return len(
            session.scalars(
                select(models.PacsExport.id).where(
                    models.PacsExport.study_id == study_id, models.PacsExport.reason == "sign-off"
                )
            ).all()
        )


def test_sign_off_sends_the_read_and_a_failed_send_is_retried_by_sync(
    pacs: Orthanc,
    configure: Callable[..., None],
    doctor: AuthenticatedUser,
    make_patient: Callable[..., object],
) -> None:
    if not dicom_out_available():
        pytest.skip(
            "core.handoff.dicom_out (the SR / secondary-capture builders) is not in this checkout yet"
        )
    make_patient("ED-12")
    known = film(DICOM, "ED-12")
    DicomWebClient(pacs.dicomweb).store([known])
    sync(doctor)
    study_id = imports()[uid(known, "SOPInstanceUID")][1]
    assert study_id is not None
    _sign(study_id, doctor)
    assert sign_off_sends(study_id) == 2  # SR + SC after the sign-off

    # The PACS is down at the next sign-off: the sign-off stands, the send waits for the next sync.
    configure(pacs_url=f"http://127.0.0.1:{_free_port()}/dicom-web")
    state = cx.get_editor_state(study_id, doctor)
    cx.save_correction(
        study_id,
        state.labels,
        state.boxes,
        "Amended",
        state.study_version,
        doctor,
        sources=dict.fromkeys(state.finding_names, "doctor"),
        sign=True,
        amend_reason="second look",
    )
    assert sign_off_sends(study_id) == 2
    configure(pacs_url=pacs.dicomweb)
    report = sync(doctor)
    assert report.sent == [study_id] and report.error == ""
    assert sign_off_sends(study_id) == 4
    assert sync(doctor).sent == []  # nothing left to send


def test_cli_sync_and_send_lines_and_exit_status(
    pacs: Orthanc,
    configure: Callable[..., None],
    doctor: AuthenticatedUser,
    make_patient: Callable[..., object],
    capsys: pytest.CaptureFixture[str],
) -> None:
    make_patient("ED-13")
    DicomWebClient(pacs.dicomweb).store([film(DICOM, "ED-13"), film(DICOM, "NOBODY-13")])
    code = main(["pacs", "sync", "--user", doctor.username])
    out, err = capsys.readouterr()
    assert out.startswith("imported 1, unmatched 1, refused 0")
    assert code == (0 if dicom_out_available() else 1), err
    assert main(["pacs", "sync", "--user", "nobody"]) == 2

    configure(pacs_url=f"http://127.0.0.1:{_free_port()}/dicom-web")
    capsys.readouterr()
    assert main(["pacs", "sync", "--user", doctor.username]) == 1
    _, err = capsys.readouterr()
    assert err.count("\n") == 1 and "does not answer" in err and "Traceback" not in err
    study_id = next(r[1] for r in imports().values() if r[0] == "imported")
    assert main(["pacs", "send", str(study_id), "--user", doctor.username]) == 1
    assert capsys.readouterr().err.count("\n") == 1

    configure(pacs_url="")
    assert main(["pacs", "sync", "--user", doctor.username]) == 2
    assert "CXR_PACS_URL" in capsys.readouterr().err


def test_a_film_sent_by_c_store_is_imported(
    pacs: Orthanc, doctor: AuthenticatedUser, make_patient: Callable[..., object]
) -> None:
    """A modality's way in: DICOM C-STORE to the PACS's DICOM port (pynetdicom as the modality)."""
    from pynetdicom import AE
    from pynetdicom.sop_class import DigitalXRayImageStorageForPresentation, SecondaryCaptureImageStorage

    make_patient("ED-14")
    data = film(DICOM, "ED-14")
    ds = pydicom.dcmread(io.BytesIO(data))
    modality = AE(ae_title="PORTABLE_XR")
    for context in (SecondaryCaptureImageStorage, DigitalXRayImageStorageForPresentation):
        modality.add_requested_context(context, ds.file_meta.TransferSyntaxUID)
    association = modality.associate("127.0.0.1", pacs.dicom_port, ae_title="PACS")
    assert association.is_established
    try:
        status = association.send_c_store(ds)
    finally:
        association.release()
    assert status.Status == 0x0000
    report = sync(doctor)
    assert report.imported == [uid(data, "SOPInstanceUID")]


def test_client_stores_to_a_second_pacs_and_says_plainly_when_refused(pacs: Orthanc, tmp_path: Path) -> None:
    """The outside-site route (``DicomWebClient(url).store``) against a second Orthanc beside the first."""
    outside = start_orthanc(tmp_path / "outside", name="OUTSIDE")
    try:
        data = film(DICOM, "ED-15")
        stored = DicomWebClient(outside.dicomweb).store([pydicom.dcmread(io.BytesIO(data))])
        assert stored.stored == (uid(data, "SOPInstanceUID"),)
        assert list(DicomWebClient(pacs.dicomweb).search_instances()) == []  # only the outside one has it
        with pytest.raises(PacsUnavailable) as refused:
            DicomWebClient(outside.dicomweb).store([b"not a DICOM file"])
        assert "refused" in str(refused.value) and "\n" not in str(refused.value)
    finally:
        outside.stop()


def test_two_syncs_at_once_import_each_film_once(
    pacs: Orthanc, doctor: AuthenticatedUser, make_patient: Callable[..., object]
) -> None:
    make_patient("ED-16")
    DicomWebClient(pacs.dicomweb).store([film(DICOM, "ED-16"), film(DICOM, "NOBODY-16")])
    with ThreadPoolExecutor(2) as pool:
        reports = list(pool.map(lambda _: sync(doctor), range(2)))
    assert all(not r.error or "SR" in r.error for r in reports), [r.error for r in reports]
    assert sorted(r[0] for r in imports().values()) == ["imported", "unmatched"]
    with session_scope() as session:
        assert session.scalar(select(func.count()).select_from(models.Study)) == 1
