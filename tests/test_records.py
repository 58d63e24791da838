"""Record services: search, view, create/edit/remove, validation, concurrency, audit, roles."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta

import pytest
from sqlalchemy import func, select

from core import audit, records
from core.auth import AuthenticatedUser
from core.errors import ConflictError, NotFound, PermissionDenied, ValidationError
from core.records import AllergyInput, ConditionInput, Demographics, PatientRecord, VisitInput, patients
from core.validation import latest_today
from db import models
from db import repository as repo
from db.session import session_scope

MakePatient = Callable[..., PatientRecord]
TOMORROW_EVERYWHERE = latest_today() + timedelta(days=1)
DEMO = Demographics("Grace", "Hopper", "female", date(1936, 12, 9), "+1 555 0100 0001", "g@example.org", "")


def _count(model: type) -> int:
    with session_scope() as s:
        return s.scalar(select(func.count()).select_from(model)) or 0


# ------------------------------------------------------------------ search


@pytest.fixture
def population(make_patient: MakePatient) -> None:
    make_patient("ED-1001", given_name="John", family_name="Smith")
    make_patient("ED-1002", given_name="Jane", family_name="Smithers")
    make_patient("ED-10020", given_name="Zoë", family_name="Müller")
    make_patient("ED-2001", given_name="Ana", family_name="García")
    make_patient("WD-1001", given_name="Johnny", family_name="Walker")
    make_patient("EDX-1", given_name="Ed", family_name="Xavier")


def _ids(hits: list[records.PatientSummary]) -> list[str]:
    return [h.patient_id for h in hits]


@pytest.mark.usefixtures("population")
def test_search_exact_id_comes_first() -> None:
    hits = records.search_patients("ed-1002")
    assert _ids(hits) == ["ED-1002", "ED-10020"]


@pytest.mark.usefixtures("population")
def test_search_a_bare_number_finds_the_id_it_numbers() -> None:
    assert _ids(records.search_patients("1002")) == ["ED-1002"]
    assert _ids(records.search_patients(" 1001 ")) == ["ED-1001", "WD-1001"]
    assert _ids(records.search_patients("1")) == ["EDX-1"]
    assert records.search_patients("100") == []  # a number, not a prefix of one


@pytest.mark.usefixtures("population")
def test_search_id_prefix_is_a_true_prefix() -> None:
    assert _ids(records.search_patients("ED-1")) == ["ED-1001", "ED-1002", "ED-10020"]
    # "ED-" must not match "EDX-1" (a range on the wrong collation or a LIKE without care would).
    assert "EDX-1" not in _ids(records.search_patients("ED-"))
    assert _ids(records.search_patients("ED-", limit=2)) == ["ED-1001", "ED-1002"]


@pytest.mark.usefixtures("population")
def test_search_by_name_is_case_and_accent_insensitive() -> None:
    assert _ids(records.search_patients("smith")) == ["ED-1001", "ED-1002"]
    assert _ids(records.search_patients("MULLER")) == ["ED-10020"]
    assert _ids(records.search_patients("garcía")) == ["ED-2001"]
    assert _ids(records.search_patients("zoe")) == ["ED-10020"]


@pytest.mark.usefixtures("population")
def test_search_by_several_name_words() -> None:
    assert _ids(records.search_patients("joh smi")) == ["ED-1001"]
    assert _ids(records.search_patients("Smith, John")) == ["ED-1001"]
    assert _ids(records.search_patients("john")) == ["ED-1001", "WD-1001"]  # Smith, Walker (by family)


def test_search_multi_word_names(make_patient: MakePatient) -> None:
    make_patient("P-1", given_name="Mary Ann", family_name="Van der Berg")
    make_patient("P-2", given_name="Anna", family_name="Vance")
    assert _ids(records.search_patients("van der b")) == ["P-1"]
    assert _ids(records.search_patients("van")) == ["P-1", "P-2"]  # family order: "van der berg" < "vance"
    assert _ids(records.search_patients("mary ann van")) == ["P-1"]
    assert _ids(records.search_patients("Van der Berg, Mary")) == ["P-1"]
    assert _ids(records.search_patients("ann vance")) == ["P-2"]
    assert records.search_patients("berg") == []  # a word inside a name is not a prefix of it


@pytest.mark.usefixtures("population")
def test_search_returns_summaries() -> None:
    [hit] = records.search_patients("WD-1001")
    assert hit.display_name == "WALKER, Johnny"
    assert hit.date_of_birth == date(1960, 5, 17)


@pytest.mark.usefixtures("population")
@pytest.mark.parametrize(
    "query", ["", "   ", "nobody", "ZZ-9", "' OR '1'='1", "%", "_", "ED-1%", "\x00", "x" * 1000]
)
def test_search_odd_queries_find_nothing_and_do_not_fail(query: str) -> None:
    assert records.search_patients(query) == []


@pytest.mark.usefixtures("population")
def test_search_does_not_write_audit() -> None:
    before = _count(models.AuditLog)
    records.search_patients("smith")
    assert _count(models.AuditLog) == before


# ------------------------------------------------------------------ view and create


def test_get_record_returns_everything_sorted_and_audits_the_view(
    make_patient: MakePatient, doctor: AuthenticatedUser
) -> None:
    make_patient(
        "ed-7",
        special_notes="Interpreter needed: Portuguese.",
        visits=[VisitInput(date(2023, 1, 1), "Fall"), VisitInput(date(2024, 6, 1), "Chest pain", "ECG ok")],
        allergies=[
            AllergyInput("Peanuts", "food", "mild"),
            AllergyInput("Penicillin", "drug", "severe", "rash"),
        ],
        conditions=[ConditionInput("TB", "resolved"), ConditionInput("Asthma", "active", date(1990, 1, 1))],
    )
    record = records.get_record(" Ed-7 ", doctor)
    assert record.patient_id == "ED-7"
    assert record.special_notes == "Interpreter needed: Portuguese."
    assert [v.reason for v in record.visits] == ["Chest pain", "Fall"]  # newest first
    assert [a.substance for a in record.allergies] == ["Penicillin", "Peanuts"]  # severest first
    assert [c.name for c in record.conditions] == ["Asthma", "TB"]  # active first
    assert record.allergies[1].recorded_on == date.today()
    assert record.created_at.tzinfo is not None and record.created_at.utcoffset() == timedelta(0)

    page = audit.list_audit(replace(doctor, role="admin"), action="view")
    assert [(e.username, e.patient_id, e.entity_type) for e in page.entries] == [
        ("dr.house", "ED-7", "patient")
    ]


@pytest.mark.usefixtures("database")
def test_unknown_patient_is_not_found_with_a_clear_message(doctor: AuthenticatedUser) -> None:
    with pytest.raises(NotFound, match="No patient with ID 'ED-404'"):
        records.get_record("ed-404", doctor)
    with pytest.raises(NotFound):
        records.add_visit("ED-404", VisitInput(date(2024, 1, 1), "x"), doctor)
    with pytest.raises(NotFound):
        records.get_record("", doctor)


@pytest.mark.usefixtures("database")
def test_create_patient_normalises_and_audits(doctor: AuthenticatedUser) -> None:
    record = records.create_patient(" mrn-42 ", replace(DEMO, given_name="  Grace "), doctor)
    assert record.patient_id == "MRN-42"
    assert record.demographics.given_name == "Grace"
    assert record.version == 1
    with session_scope() as s:
        audit = s.scalars(select(models.AuditLog).where(models.AuditLog.action == "create")).one()
    assert audit.patient_id == "MRN-42" and audit.before is None
    assert audit.after is not None and audit.after["date_of_birth"] == "1936-12-09"


@pytest.mark.usefixtures("database")
def test_sql_looking_text_is_stored_verbatim(doctor: AuthenticatedUser) -> None:
    evil = "Robert'); DROP TABLE patients;--"
    records.create_patient("SQL-1", replace(DEMO, family_name=evil), doctor, special_notes="1' OR '1'='1")
    records.add_visit("SQL-1", VisitInput(date(2024, 1, 1), "'; DELETE FROM visits; --"), doctor)
    record = records.get_record("SQL-1", doctor)
    assert record.demographics.family_name == evil
    assert record.special_notes == "1' OR '1'='1"
    assert record.visits[0].reason == "'; DELETE FROM visits; --"
    assert _count(models.Patient) == 1
    assert _ids(records.search_patients("robert')")) == ["SQL-1"]


# ------------------------------------------------------------------ validation


@pytest.mark.usefixtures("database")
@pytest.mark.parametrize(
    ("patient_id", "message"),
    [
        ("", "required"),
        ("   ", "required"),
        ("ED 1", "only letters, digits and hyphens"),
        ("ED-1;DROP", "only letters, digits and hyphens"),
        ("-ED1", "only letters, digits and hyphens"),
        ("É-1", "only letters, digits and hyphens"),
        ("X" * 33, "at most 32"),
    ],
)
def test_bad_patient_ids_are_rejected(doctor: AuthenticatedUser, patient_id: str, message: str) -> None:
    with pytest.raises(ValidationError) as err:
        records.create_patient(patient_id, DEMO, doctor)
    assert message in err.value.errors["patient_id"]
    assert _count(models.Patient) == 0


def test_duplicate_patient_id_is_rejected_case_insensitively(
    make_patient: MakePatient, doctor: AuthenticatedUser
) -> None:
    make_patient("ED-1")
    with pytest.raises(ValidationError) as err:
        records.create_patient("ed-1", DEMO, doctor)
    assert err.value.errors == {"patient_id": "A patient with ID 'ED-1' already exists."}
    assert _count(models.Patient) == 1


@pytest.mark.usefixtures("database")
@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        ({"date_of_birth": TOMORROW_EVERYWHERE}, "date_of_birth", "future"),
        ({"date_of_birth": date(1899, 12, 31)}, "date_of_birth", "before 1900"),
        ({"given_name": ""}, "given_name", "required"),
        ({"family_name": "x" * 101}, "family_name", "at most 100"),
        ({"phone": "call me maybe"}, "phone", "digits"),
        ({"email": "not-an-email"}, "email", "name@example.org"),
        ({"address": "a" * 501}, "address", "at most 500"),
        ({"sex": "yes"}, "sex", "one of"),
        ({"given_name": "Bad\x00Name"}, "given_name", "not allowed"),
        ({"family_name": "Two\nLines"}, "family_name", "not allowed"),
    ],
)
def test_bad_demographics_are_rejected(
    doctor: AuthenticatedUser, change: dict[str, object], field: str, message: str
) -> None:
    with pytest.raises(ValidationError) as err:
        records.create_patient("ED-1", replace(DEMO, **change), doctor)  # type: ignore[arg-type]
    assert message in err.value.errors[field]
    assert _count(models.Patient) == 0 and _count(models.AuditLog) == 1  # only the doctor's creation


@pytest.mark.usefixtures("database")
def test_all_field_errors_are_reported_together(doctor: AuthenticatedUser) -> None:
    with pytest.raises(ValidationError) as err:
        records.create_patient("", replace(DEMO, given_name="", date_of_birth=TOMORROW_EVERYWHERE), doctor)
    assert set(err.value.errors) == {"patient_id", "given_name", "date_of_birth"}


def test_over_long_special_notes_are_rejected(make_patient: MakePatient, doctor: AuthenticatedUser) -> None:
    patient = make_patient("ED-1")
    with pytest.raises(ValidationError) as err:
        records.update_special_notes("ED-1", "n" * 4001, patient.version, doctor)
    assert "at most 4000" in err.value.errors["special_notes"]


def test_visit_validation(make_patient: MakePatient, doctor: AuthenticatedUser) -> None:
    make_patient("ED-1", date_of_birth=date(2000, 1, 1))
    cases = [
        (VisitInput(TOMORROW_EVERYWHERE, "Fever"), "visit_date", "future"),
        (VisitInput(date(1999, 12, 31), "Fever"), "visit_date", "date of birth"),
        (VisitInput(date(2020, 1, 1), "  "), "reason", "required"),
        (VisitInput(date(2020, 1, 1), "r" * 201), "reason", "at most 200"),
        (VisitInput(date(2020, 1, 1), "Fever", "n" * 4001), "notes", "at most 4000"),
    ]
    for data, field, message in cases:
        with pytest.raises(ValidationError) as err:
            records.add_visit("ED-1", data, doctor)
        assert message in err.value.errors[field], (data, err.value.errors)
    assert _count(models.Visit) == 0
    # Multi-line notes are fine.
    assert records.add_visit("ED-1", VisitInput(date(2020, 1, 1), "Fever", "line 1\nline 2"), doctor).notes


def test_allergy_and_condition_validation(make_patient: MakePatient, doctor: AuthenticatedUser) -> None:
    make_patient("ED-1", date_of_birth=date(2000, 1, 1))
    bad_allergies = [
        (AllergyInput("", "drug", "mild"), "substance"),
        (AllergyInput("Penicillin", "plant", "mild"), "kind"),
        (AllergyInput("Penicillin", "drug", "deadly"), "severity"),
        (AllergyInput("Penicillin", "drug", "mild", recorded_on=TOMORROW_EVERYWHERE), "recorded_on"),
        (AllergyInput("Penicillin", "drug", "mild", "r" * 501), "reaction"),
    ]
    for data, field in bad_allergies:
        with pytest.raises(ValidationError) as err:
            records.add_allergy("ED-1", data, doctor)
        assert field in err.value.errors
    records.add_allergy("ED-1", AllergyInput("Penicillin", "drug", "mild"), doctor)
    with pytest.raises(ValidationError, match="already recorded"):
        records.add_allergy("ED-1", AllergyInput(" penicillin ", "drug", "severe"), doctor)

    bad_conditions = [
        (ConditionInput(""), "name"),
        (ConditionInput("COPD", "cured"), "status"),
        (ConditionInput("COPD", onset_date=TOMORROW_EVERYWHERE), "onset_date"),
        (ConditionInput("COPD", onset_date=date(1999, 1, 1)), "onset_date"),
        (ConditionInput("COPD", notes="n" * 2001), "notes"),
    ]
    for cdata, field in bad_conditions:
        with pytest.raises(ValidationError) as err:
            records.add_condition("ED-1", cdata, doctor)
        assert field in err.value.errors
    assert _count(models.Allergy) == 1 and _count(models.ChronicCondition) == 0


# ------------------------------------------------------------------ edits, removals, audit


def test_update_demographics_records_only_changed_fields(
    make_patient: MakePatient, doctor: AuthenticatedUser, admin: AuthenticatedUser
) -> None:
    patient = make_patient("ED-1", phone="+1 555 0100 1111")
    new = replace(patient.demographics, family_name="Byron", phone="+1 555 0100 2222")
    updated = records.update_demographics("ED-1", new, patient.version, doctor)
    assert updated.version == patient.version + 1
    assert updated.demographics.family_name == "Byron"
    assert records.search_patients("byron")[0].patient_id == "ED-1"  # normalised name kept in step
    assert records.search_patients("lovelace") == []

    [entry] = audit.list_audit(admin, action="update").entries
    assert entry.entity_type == "patient" and entry.patient_id == "ED-1"
    assert entry.before == {"family_name": "Lovelace", "phone": "+1 555 0100 1111"}
    assert entry.after == {"family_name": "Byron", "phone": "+1 555 0100 2222"}

    # Saving the same values again changes nothing and audits nothing.
    same = records.update_demographics("ED-1", new, updated.version, doctor)
    assert same.version == updated.version
    assert audit.list_audit(admin, action="update").total == 1


def test_special_notes_add_edit_remove(make_patient: MakePatient, doctor: AuthenticatedUser) -> None:
    patient = make_patient("ED-1")
    v1 = records.update_special_notes("ED-1", "Pacemaker in situ.", patient.version, doctor)
    v2 = records.update_special_notes("ED-1", "Pacemaker in situ (MRI conditional).", v1.version, doctor)
    v3 = records.update_special_notes("ED-1", "", v2.version, doctor)
    assert (v1.special_notes, v2.special_notes, v3.special_notes) == (
        "Pacemaker in situ.",
        "Pacemaker in situ (MRI conditional).",
        "",
    )
    with session_scope() as s:
        rows = s.scalars(
            select(models.AuditLog)
            .where(models.AuditLog.entity_type == "special_notes")
            .order_by(models.AuditLog.id)
        ).all()
        assert [(r.action, r.before, r.after) for r in rows][-1] == (
            "delete",
            {"special_notes": "Pacemaker in situ (MRI conditional)."},
            {"special_notes": ""},
        )
        assert len(rows) == 3


def test_visit_allergy_condition_crud(make_patient: MakePatient, doctor: AuthenticatedUser) -> None:
    make_patient("ED-1")
    visit = records.add_visit("ED-1", VisitInput(date(2024, 2, 1), "Cough"), doctor)
    visit2 = records.update_visit(
        visit.id, VisitInput(date(2024, 2, 2), "Cough", "CXR clear"), visit.version, doctor
    )
    assert (visit2.visit_date, visit2.notes, visit2.version) == (date(2024, 2, 2), "CXR clear", 2)

    allergy = records.add_allergy(
        "ED-1", AllergyInput("Latex", "other", "mild", "itch", date(2020, 5, 5)), doctor
    )
    allergy2 = records.update_allergy(
        allergy.id, AllergyInput("Latex", "other", "severe", "hives"), allergy.version, doctor
    )
    assert (allergy2.severity, allergy2.reaction, allergy2.recorded_on) == (
        "severe",
        "hives",
        date(2020, 5, 5),
    )

    condition = records.add_condition("ED-1", ConditionInput("COPD", onset_date=date(2015, 3, 1)), doctor)
    condition2 = records.update_condition(
        condition.id,
        ConditionInput("COPD", "resolved", date(2015, 3, 1), "lung transplant"),
        condition.version,
        doctor,
    )
    assert condition2.status == "resolved"

    record = records.get_record("ED-1", doctor)
    assert (
        record.visits == (visit2,) and record.allergies == (allergy2,) and record.conditions == (condition2,)
    )

    records.remove_visit(visit2.id, visit2.version, doctor)
    records.remove_allergy(allergy2.id, allergy2.version, doctor)
    records.remove_condition(condition2.id, condition2.version, doctor)
    record = records.get_record("ED-1", doctor)
    assert record.visits == record.allergies == record.conditions == ()
    assert _count(models.Visit) == _count(models.Allergy) == _count(models.ChronicCondition) == 0

    with pytest.raises(NotFound, match="may have been removed"):
        records.update_visit(visit2.id, VisitInput(date(2024, 2, 2), "Cough"), visit2.version, doctor)
    with pytest.raises(NotFound):
        records.remove_allergy(allergy2.id, allergy2.version, doctor)

    with session_scope() as s:
        deletions = s.scalars(select(models.AuditLog).where(models.AuditLog.action == "delete")).all()
        by_type = {d.entity_type: d for d in deletions}
    assert by_type["visit"].before == {"visit_date": "2024-02-02", "reason": "Cough", "notes": "CXR clear"}
    assert by_type["allergy"].before is not None and by_type["allergy"].before["severity"] == "severe"
    assert by_type["condition"].after is None


# ------------------------------------------------------------------ concurrency


def test_second_save_of_the_same_version_conflicts(make_patient: MakePatient, make_user: Callable) -> None:
    patient = make_patient("ED-1")
    alice, bob = make_user("alice").user, make_user("bob").user
    seen_by_alice = records.get_record("ED-1", alice)
    seen_by_bob = records.get_record("ED-1", bob)
    records.update_demographics(
        "ED-1", replace(patient.demographics, phone="111"), seen_by_alice.version, alice
    )
    with pytest.raises(ConflictError, match="changed by someone else"):
        records.update_demographics(
            "ED-1", replace(patient.demographics, phone="222"), seen_by_bob.version, bob
        )
    with pytest.raises(ConflictError):
        records.update_special_notes("ED-1", "bob's note", seen_by_bob.version, bob)
    assert records.get_record("ED-1", alice).demographics.phone == "111"  # Alice's save survived


def test_conflicts_on_visits_allergies_conditions(
    make_patient: MakePatient, doctor: AuthenticatedUser
) -> None:
    make_patient("ED-1")
    visit = records.add_visit("ED-1", VisitInput(date(2024, 1, 1), "Fall"), doctor)
    records.update_visit(visit.id, VisitInput(date(2024, 1, 1), "Fall", "first"), visit.version, doctor)
    with pytest.raises(ConflictError):
        records.update_visit(visit.id, VisitInput(date(2024, 1, 1), "Fall", "second"), visit.version, doctor)
    with pytest.raises(ConflictError):
        records.remove_visit(visit.id, visit.version, doctor)

    allergy = records.add_allergy("ED-1", AllergyInput("Eggs", "food", "mild"), doctor)
    records.update_allergy(allergy.id, AllergyInput("Eggs", "food", "moderate"), allergy.version, doctor)
    with pytest.raises(ConflictError):
        records.remove_allergy(allergy.id, allergy.version, doctor)

    condition = records.add_condition("ED-1", ConditionInput("Asthma"), doctor)
    records.update_condition(condition.id, ConditionInput("Asthma", "resolved"), condition.version, doctor)
    with pytest.raises(ConflictError):
        records.update_condition(condition.id, ConditionInput("Asthma", "active"), condition.version, doctor)
    assert records.get_record("ED-1", doctor).visits[0].notes == "first"


def test_race_between_read_and_write_is_caught_by_the_version_column(
    make_patient: MakePatient, doctor: AuthenticatedUser, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both requests pass the expected-version check; the database-level version guard stops the second."""
    patient = make_patient("ED-1")
    original_check = patients.check_version

    def check_then_someone_else_saves(current: int, expected: int) -> None:
        original_check(current, expected)
        monkeypatch.setattr(patients, "check_version", original_check)  # only the first call interleaves
        records.update_demographics("ED-1", replace(patient.demographics, phone="999"), expected, doctor)

    monkeypatch.setattr(patients, "check_version", check_then_someone_else_saves)
    with pytest.raises(ConflictError):
        records.update_demographics(
            "ED-1", replace(patient.demographics, phone="111"), patient.version, doctor
        )
    assert records.get_record("ED-1", doctor).demographics.phone == "999"


def test_failed_action_leaves_nothing_half_saved(
    make_patient: MakePatient, doctor: AuthenticatedUser, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_patient("ED-1")
    audit_rows = _count(models.AuditLog)

    def broken_audit(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("disk full")

    monkeypatch.setattr(audit, "write", broken_audit)
    with pytest.raises(RuntimeError):
        records.add_visit("ED-1", VisitInput(date(2024, 1, 1), "Fever"), doctor)
    with pytest.raises(RuntimeError):
        records.create_patient("ED-2", DEMO, doctor)
    assert _count(models.Visit) == 0 and _count(models.Patient) == 1
    assert _count(models.AuditLog) == audit_rows


# ------------------------------------------------------------------ audit listing


@pytest.mark.usefixtures("database")
def test_only_admins_can_list_audit(doctor: AuthenticatedUser) -> None:
    with pytest.raises(PermissionDenied):
        audit.list_audit(doctor)


def test_audit_filters_and_paging(
    make_patient: MakePatient, make_user: Callable, admin: AuthenticatedUser
) -> None:
    make_patient("ED-1")
    make_patient("ED-2")
    alice, bob = make_user("alice").user, make_user("bob").user
    records.get_record("ED-1", alice)
    records.get_record("ED-2", alice)
    records.get_record("ED-1", bob)

    assert audit.list_audit(admin, username="ALICE", action="view").total == 2
    assert [e.username for e in audit.list_audit(admin, patient_id="ed-1", action="view").entries] == [
        "bob",
        "alice",
    ]  # newest first
    page = audit.list_audit(admin, action="view", limit=2, offset=2)
    assert (page.total, len(page.entries)) == (3, 1)

    today = datetime.now(UTC).date()
    assert audit.list_audit(admin, action="view", date_from=today, date_to=today).total == 3
    assert audit.list_audit(admin, action="view", date_to=today - timedelta(days=1)).total == 0
    assert audit.list_audit(admin, action="view", date_from=today + timedelta(days=1)).total == 0
    with pytest.raises(ValidationError):
        audit.list_audit(admin, date_from=today, date_to=today - timedelta(days=1))
    assert set(audit.ACTIONS) >= {e.action for e in audit.list_audit(admin, limit=1000).entries}


def test_duplicate_id_race_is_reported_as_duplicate(
    make_patient: MakePatient, doctor: AuthenticatedUser, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The existence check passes (someone inserts right after it); the unique constraint still catches it."""
    make_patient("ED-1")
    real_exists = repo.patient_id_exists
    calls: list[str] = []

    def exists_but_not_the_first_time(session: object, key: str) -> bool:
        calls.append(key)
        return len(calls) > 1 and real_exists(session, key)  # type: ignore[arg-type]

    monkeypatch.setattr(repo, "patient_id_exists", exists_but_not_the_first_time)
    with pytest.raises(ValidationError, match="already exists"):
        records.create_patient("ED-1", DEMO, doctor)
    assert _count(models.Patient) == 1
