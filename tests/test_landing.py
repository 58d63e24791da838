"""The landing page (pages/patients.py): the patient search first, then the films waiting to be read (the top
of the emergency worklist, urgent first, with "N films waiting, M urgent") and "My recent patients"
(core.records.recent, read from the audit log), on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy import update

from core import audit, records
from core.auth import AuthenticatedUser
from core.records import PatientRecord
from core.records.recent import recent_patients
from core.xray import diagnosis as dx
from core.xray import queues
from db import models
from db.base import utcnow
from db.session import session_scope
from tests.support.apptest import login, texts
from tests.support.db import TestAccount
from tests.support.xray_samples import png_variant

MakePatient = Callable[..., PatientRecord]
MakeUser = Callable[..., TestAccount]


def _audit(user: AuthenticatedUser, action: str, patient_id: str | None, at: datetime) -> None:
    with session_scope() as s:
        audit.write(s, user, action, "patient", patient_id, patient_id=patient_id, at=at)


def _set(study_id: int, *, level: str | None = None, status: str | None = None) -> None:
    with session_scope() as s:
        if level:
            s.execute(
                update(models.Diagnosis)
                .where(models.Diagnosis.study_id == study_id)
                .values(triage_level=level)
            )
        if status:
            s.execute(update(models.Study).where(models.Study.id == study_id).values(status=status))


def test_recent_patients_are_the_users_own_newest_first(
    doctor: AuthenticatedUser, make_user: MakeUser, make_patient: MakePatient
) -> None:
    for n in range(1, 6):
        make_patient(f"ED-{n}", given_name=f"Given{n}")
    other = make_user("dr.other").user
    now = utcnow()
    _audit(doctor, "view", "ED-1", now - timedelta(hours=5))
    _audit(doctor, "diagnose", "ED-2", now - timedelta(hours=3))  # uploaded a film
    _audit(doctor, "view", "ED-1", now - timedelta(hours=1))  # opened again: moves up, listed once
    _audit(doctor, "list", "ED-3", now)  # a listing is not opening the record
    _audit(doctor, "search", None, now)
    _audit(other, "view", "ED-4", now)  # someone else's
    _audit(doctor, "view", "ED-5", now - timedelta(days=30))  # too long ago
    _audit(doctor, "view", "ED-GONE", now)  # no longer in the database
    shown = recent_patients(doctor)
    assert [r.patient.patient_id for r in shown] == ["ED-1", "ED-2"]
    assert shown[0].patient.given_name == "Given1"
    assert shown[0].last_at == now - timedelta(hours=1)
    assert [r.patient.patient_id for r in recent_patients(doctor, 1)] == ["ED-1"]
    assert [r.patient.patient_id for r in recent_patients(doctor, days=60)][-1] == "ED-5"


def test_recent_patients_come_from_what_the_services_audit(doctor: AuthenticatedUser) -> None:
    records.create_patient(
        "ED-10", records.Demographics("Ada", "Lovelace", "female", utcnow().date()), doctor
    )
    assert [r.patient.patient_id for r in recent_patients(doctor)] == ["ED-10"]  # registered it
    records.search_patients("ED", actor=doctor)
    assert [r.patient.patient_id for r in recent_patients(doctor)] == ["ED-10"]


def test_waiting_counts_unread_films_and_the_urgent_ones(
    doctor: AuthenticatedUser, make_patient: MakePatient
) -> None:
    make_patient("ED-1")
    assert queues.waiting() == queues.Waiting(0, 0)
    films = [dx.diagnose_upload("ED-1", png_variant(n), f"{n}.png", doctor).study_id for n in range(4)]
    _set(films[0], level="urgent")
    _set(films[1], level="urgent", status="reviewed")  # read: no longer waiting
    _set(films[2], level="routine")
    _set(films[3], level="priority")
    assert queues.waiting() == queues.Waiting(total=3, urgent=1)


def test_the_landing_page_lists_waiting_films_urgent_first_and_my_recent_patients(
    make_user: MakeUser, make_patient: MakePatient
) -> None:
    account = make_user("dr.landing")
    make_patient("ED-1", given_name="Grace", family_name="Hopper")
    routine = dx.diagnose_upload("ED-1", png_variant(1), "r.png", account.user).study_id
    urgent = dx.diagnose_upload("ED-1", png_variant(2), "u.png", account.user).study_id
    _set(routine, level="routine")
    _set(urgent, level="urgent")
    at = login(account)
    assert not at.exception, at.exception
    assert [t.value for t in at.title] == ["Patients"]
    shown = texts(at)
    assert "2 films waiting" in shown and "1 urgent" in shown
    links = [(p.proto.page, p.proto.query_string) for p in at.get("page_link")]
    films = [q for page, q in links if page == "x-ray"]
    assert films == [f"patient=ED-1&study={urgent}", f"patient=ED-1&study={routine}"], links
    assert any("ed-worklist" in page for page, _ in links), links
    # The uploads made ED-1 one of my recent patients: a link that opens the record.
    assert [h.value for h in at.subheader] == ["Waiting to be read", "My recent patients"]
    assert any(q == "patient=ED-1" for _, q in links), links

    # A search puts its hits first, above the lists.
    at.text_input(key="search_query").set_value("1")
    at.button(key="FormSubmitter:patient_search-Search").click().run()
    assert not at.exception, at.exception
    assert [b.key for b in at.button if b.key and "open" in b.key] == ["open.ED-1"]  # the hit's Open only
    markdown = [m.value for m in at.markdown]
    assert markdown.index("**ED-1**") < next(i for i, m in enumerate(markdown) if "2 films waiting" in m)


def test_the_landing_page_with_nothing_waiting(make_user: MakeUser) -> None:
    at = login(make_user("dr.quiet"))
    shown = texts(at)
    assert "No film is waiting to be read." in shown
    assert "Patients you open, register or upload a film to" in shown
