"""A film's context on SQLite and PostgreSQL: its acquisition date and projection (revision 0006, back-filled
from the stored DICOM document, set at upload), history ordered by the day the film was taken, a film moved
to the right patient or withdrawn (reason required, audited, kept), the comparison with the previous film in
words and percentages, and times shown in the site's time zone."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from datetime import UTC, date, datetime

import pydicom
import pytest
from sqlalchemy import select, text

from core.errors import ValidationError
from core.records import PatientRecord
from core.xray import compare, film_admin
from core.xray import diagnosis as dx
from core.xray.stored import FindingRead
from db import models
from db.migrate import upgrade
from db.session import create_db_engine, session_scope
from tests.support.db import TestAccount, create_postgres_schema, drop_postgres_schema
from tests.support.migration_rows import study_row, user_and_patient_rows
from tests.support.xray_samples import DICOM, png_variant

MakeUser = Callable[..., TestAccount]
MakePatient = Callable[..., PatientRecord]


def _dicom_taken(on: str, view: str) -> bytes:
    """The sample DICOM with a StudyDate and a ViewPosition written into its header."""
    ds = pydicom.dcmread(DICOM)
    ds.StudyDate, ds.ViewPosition = on, view
    out = io.BytesIO()
    ds.save_as(out)
    return out.getvalue()


@pytest.fixture
def account(make_user: MakeUser) -> TestAccount:
    return make_user("dr.context")


def test_acquisition_date_and_projection_are_saved_and_order_the_history(
    account: TestAccount, make_patient: MakePatient
) -> None:
    make_patient("ED-1")
    png = dx.diagnose_upload("ED-1", png_variant(1), "today.png", account.user)
    old = dx.diagnose_upload("ED-1", _dicom_taken("20190304", "ap"), "old.dcm", account.user, True)
    view = dx.get_diagnosis(old.study_id, account.user, audit=False)
    assert view.acquired_on == date(2019, 3, 4) and view.projection == "AP"
    assert png.acquired_on is None and png.projection is None
    # uploaded last, but taken in 2019: the history lists it after today's film
    history = dx.patient_history("ED-1")
    assert [s.study_id for s in history] == [png.study_id, old.study_id]
    assert history[1].acquired_on == date(2019, 3, 4) and history[1].projection == "AP"
    assert compare.previous_study([s.study_id for s in history], png.study_id) == old.study_id
    assert compare.previous_study([s.study_id for s in history], old.study_id) is None


def test_a_withdrawn_film_is_kept_and_audited_but_hidden(
    account: TestAccount, make_patient: MakePatient
) -> None:
    make_patient("ED-1")
    kept = dx.diagnose_upload("ED-1", png_variant(1), "kept.png", account.user)
    gone = dx.diagnose_upload("ED-1", png_variant(2), "gone.png", account.user)
    with pytest.raises(ValidationError) as refused:
        film_admin.withdraw_study(gone.study_id, "   ", account.user)
    assert "reason" in refused.value.errors
    film_admin.withdraw_study(gone.study_id, "motion artefact, repeated", account.user)
    with pytest.raises(ValidationError):
        film_admin.withdraw_study(gone.study_id, "again", account.user)

    assert [s.study_id for s in dx.patient_history("ED-1")] == [kept.study_id]
    every = dx.patient_history("ED-1", withdrawn=True)
    assert {s.study_id for s in every} == {kept.study_id, gone.study_id}
    assert [s.withdrawn for s in every if s.study_id == gone.study_id] == [True]
    assert gone.study_id not in [item.study_id for item in dx.worklist()]
    assert dx.get_diagnosis(gone.study_id, account.user).withdrawn == "motion artefact, repeated"
    with session_scope() as s:
        row = s.scalars(
            select(models.AuditLog).where(
                models.AuditLog.entity_type == "study",
                models.AuditLog.entity_id == str(gone.study_id),
                models.AuditLog.action == "update",
            )
        ).one()
        assert row.detail == "withdrawn: motion artefact, repeated" and row.user_id == account.user.id
        assert s.get(models.Study, gone.study_id) is not None  # never deleted


def test_a_film_moves_to_the_right_patient(account: TestAccount, make_patient: MakePatient) -> None:
    make_patient("ED-1")
    make_patient("ED-2")
    wrong = dx.diagnose_upload("ED-1", png_variant(3), "wrong.png", account.user)
    with pytest.raises(ValidationError):
        film_admin.move_study(wrong.study_id, "ED-2", "", account.user)
    with pytest.raises(ValidationError):
        film_admin.move_study(wrong.study_id, "ED-1", "same record", account.user)
    assert (
        film_admin.move_study(wrong.study_id, "ed-2", "booked under the wrong patient", account.user)
        == "ED-2"
    )
    assert dx.patient_history("ED-1") == ()
    assert [s.study_id for s in dx.patient_history("ED-2")] == [wrong.study_id]
    assert dx.get_diagnosis(wrong.study_id, account.user, audit=False).patient_id == "ED-2"
    with session_scope() as s:
        row = s.scalars(
            select(models.AuditLog).where(
                models.AuditLog.entity_id == str(wrong.study_id), models.AuditLog.action == "update"
            )
        ).one()
        assert (
            row.patient_id == "ED-2"
            and "moved from ED-1 to ED-2: booked under the wrong patient" in row.detail
        )
        assert row.before is not None and row.before["patient_id"] == "ED-1"
    # the same image already in the target record: refused, nothing changed
    again = dx.diagnose_upload("ED-1", png_variant(3), "again.png", account.user)
    with pytest.raises(ValidationError):
        film_admin.move_study(again.study_id, "ED-2", "duplicate", account.user)


def _read(name: str, p: float, threshold: float = 0.5) -> FindingRead:
    return FindingRead(name, p, threshold, urgent=False)


def test_changes_read_in_words_and_percentage_points() -> None:
    now = [_read("Effusion", 0.7), _read("Edema", 0.2), _read("Mass", 0.8), _read("Nodule", 0.31)]
    before = [_read("Effusion", 0.2), _read("Edema", 0.6), _read("Mass", 0.55), _read("Nodule", 0.3)]
    rows = {r.name: r for r in compare.changes(now, before)}
    assert (rows["Effusion"].change, rows["Effusion"].points) == ("new", 50)
    assert (rows["Edema"].change, rows["Edema"].points) == ("resolved", -40)
    assert (rows["Mass"].change, rows["Mass"].points) == ("higher", 25)
    assert (rows["Nodule"].change, rows["Nodule"].points) == ("unchanged", 1)
    assert [r.change for r in compare.changes(now, before)][:2] == ["new", "resolved"]


def test_times_show_in_the_site_time_zone(monkeypatch: pytest.MonkeyPatch) -> None:
    from core.config import SettingsError, get_settings
    from ui import fmt

    when = datetime(2026, 7, 1, 12, 30, tzinfo=UTC)
    try:
        monkeypatch.setenv("CXR_TIMEZONE", "Europe/Berlin")
        get_settings.cache_clear()
        assert fmt.moment(when) == "2026-07-01 14:30 CEST"
        monkeypatch.setenv("CXR_TIMEZONE", "Mars/Olympus")
        get_settings.cache_clear()
        with pytest.raises(SettingsError):
            get_settings()
        monkeypatch.delenv("CXR_TIMEZONE")
        get_settings.cache_clear()
        assert fmt.moment(when) == "2026-07-01 12:30 UTC"
    finally:
        get_settings.cache_clear()


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql"])
def test_revision_0006_back_fills_from_the_stored_dicom_document(dialect: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    schema = None
    if dialect == "sqlite":
        url = f"sqlite:///{tmp_path / 'm6.db'}"
    else:
        schema, url = create_postgres_schema("cxr_m6")
    try:
        upgrade("0005", url=url)
        engine = create_db_engine(url)
        with engine.begin() as conn:
            user_and_patient_rows(conn)
            for study_id in (1, 2, 3):
                study_row(conn, sha=str(study_id) * 64, study_id=study_id, visit=None)
            documents = {1: {"study_date": "2020-02-29", "view_position": "pa "}, 2: {"study_date": "junk"}}
            for study_id, document in documents.items():
                conn.execute(
                    text("UPDATE studies SET dicom = :d WHERE id = :id"),
                    {"d": json.dumps(document), "id": study_id},
                )
        engine.dispose()
        upgrade("0006", url=url)
        engine = create_db_engine(url)
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT id, acquired_on, projection FROM studies ORDER BY id")).all()
        engine.dispose()
        got = {r[0]: (str(r[1]) if r[1] is not None else None, r[2]) for r in rows}
        assert got == {1: ("2020-02-29", "PA"), 2: (None, None), 3: (None, None)}
    finally:
        if schema is not None:
            drop_postgres_schema(schema)


def _dicom_of(patient_id: str, name: str, sex: str, born: str) -> bytes:
    ds = pydicom.dcmread(DICOM)
    ds.PatientID, ds.PatientName, ds.PatientSex, ds.PatientBirthDate = patient_id, name, sex, born
    out = io.BytesIO()
    ds.save_as(out)
    return out.getvalue()


def test_the_mismatch_names_every_contradiction(account: TestAccount, make_patient: MakePatient) -> None:
    from ui import fmt

    make_patient(
        "ED-1", given_name="Ada", family_name="Lovelace", sex="female", date_of_birth=date(1960, 5, 17)
    )
    data = _dicom_of("OTHER-7", "SMITH^JOHN*", "M", "19450102")
    with pytest.raises(dx.PatientMismatch) as refused:
        dx.diagnose_upload("ED-1", data, "film.dcm", account.user)
    found = refused.value.contradictions
    assert found == (
        "patient ID 'OTHER-7' (record: ED-1)",
        "name 'SMITH^JOHN*' (record: LOVELACE, Ada)",
        "sex 'M' (record: female)",
        "birth date 1945-01-02 (record: 1960-05-17)",
    )
    message = str(refused.value)
    assert all(line in message for line in found)
    assert "\\*" in fmt.md(message)  # the page escapes the file's values: shown as text, not markup
    # the same person written the DICOM way: only the ID contradicts the record
    same = _dicom_of("OTHER-7", "Lovelace^Ada", "F", "19600517")
    with pytest.raises(dx.PatientMismatch) as only_id:
        dx.diagnose_upload("ED-1", same, "same.dcm", account.user)
    assert only_id.value.contradictions == ("patient ID 'OTHER-7' (record: ED-1)",)


def test_the_right_id_with_another_name_sex_or_birth_date_is_a_mismatch(
    account: TestAccount, make_patient: MakePatient
) -> None:
    """The ID alone is not the identity: another name, sex or birth date under the record's own ID stops the
    upload too (a mistyped ID at the modality); it saves only on confirmation, and the audit row says why."""
    make_patient(
        "ED-1", given_name="Zoë", family_name="Lovelace", sex="female", date_of_birth=date(1960, 5, 17)
    )
    for header, contradiction in (
        (("ED-1", "SMITH^JOHN", "F", "19600517"), "name 'SMITH^JOHN' (record: LOVELACE, Zoë)"),
        (("ED-1", "LOVELACE^ZOE", "M", "19600517"), "sex 'M' (record: female)"),
        (("ED-1", "LOVELACE^ZOE", "F", "19610517"), "birth date 1961-05-17 (record: 1960-05-17)"),
    ):
        with pytest.raises(dx.PatientMismatch) as refused:
            dx.diagnose_upload("ED-1", _dicom_of(*header), "film.dcm", account.user)
        assert refused.value.contradictions == (contradiction,)
        assert str(refused.value).startswith("This DICOM file's header does not match ED-1's record.")
    # the same person written the DICOM way: case, accents, a middle name, an anonymised name, sex O
    for index, header in enumerate(
        (
            ("ED-1", "LOVELACE^ZOE^A", "F", "19600517"),
            ("ed-1", "lovelace^zoë", "", ""),
            ("ED-1", "ANONYMOUS", "O", "19600517"),
        )
    ):
        ds = pydicom.dcmread(io.BytesIO(_dicom_of(*header)))
        ds.SOPInstanceUID = f"1.2.3.4.{index}"  # another image each time, never a re-upload
        ds.PixelData = bytes(reversed(ds.PixelData)) if index == 1 else ds.PixelData
        out = io.BytesIO()
        ds.save_as(out)
        assert dx.diagnose_upload("ED-1", out.getvalue(), f"ok{index}.dcm", account.user).patient_id == "ED-1"
    saved = dx.diagnose_upload(
        "ED-1", _dicom_of("ED-1", "SMITH^JOHN", "F", "19600517"), "c.dcm", account.user, True
    )
    with session_scope() as session:
        detail = session.scalars(
            select(models.AuditLog.detail)
            .where(models.AuditLog.entity_id == str(saved.study_id), models.AuditLog.action == "diagnose")
            .order_by(models.AuditLog.id.desc())
        ).first()
    assert detail is not None and "name 'SMITH^JOHN' (record: LOVELACE, Zoë)" in detail


def test_a_withdrawn_film_leaves_the_review_queue(account: TestAccount, make_patient: MakePatient) -> None:
    from core.xray import queues

    make_patient("ED-1")
    film = dx.diagnose_upload("ED-1", png_variant(4), "q.png", account.user)
    assert film.study_id in [i.study_id for i in queues.review_queue()]
    film_admin.withdraw_study(film.study_id, "duplicate exposure", account.user)
    assert film.study_id not in [i.study_id for i in queues.review_queue()]
