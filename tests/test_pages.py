"""Every dashboard page through Streamlit's AppTest, on SQLite and PostgreSQL (the ``database`` fixture).

The app runs in-process against the test database, so each test drives the real login, services and
audit log; only the browser is simulated (see test_browser.py for the real one).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, timedelta

import pytest
from streamlit.testing.v1 import AppTest

from core import records
from core.ml import inference
from core.records import AllergyInput, Demographics
from core.xray import diagnosis
from db import models
from db.session import session_scope
from tests.support.apptest import ROOT, TIMEOUT, login, shows_login_form, start, submit_login, texts
from tests.support.db import TestAccount
from tests.support.stubs import StubDetector
from tests.support.xray_samples import png_variant
from ui import fmt, forms, session
from ui.navigation import ROUTES

MakeUser = Callable[..., TestAccount]
MakePatient = Callable[..., records.PatientRecord]


# ------------------------------------------------------------------ helpers


def search(at: AppTest, query: str) -> list[str]:
    """Search and return the patient IDs offered to open, in order."""
    at.text_input(key="search_query").set_value(query)
    at.button(key="FormSubmitter:patient_search-Search").click().run()
    assert not at.exception, at.exception
    return [b.key.removeprefix("open.") for b in at.button if b.key and b.key.startswith("open.")]


def open_record(at: AppTest, patient_id: str) -> AppTest:
    search(at, patient_id)
    at.button(key=f"open.{patient_id}").click().run()
    assert not at.exception, at.exception
    return at


def field_key(form: str, field: str) -> str:
    return f"{form}.{field}"


def submit_form(at: AppTest, form_key: str, label: str) -> AppTest:
    at.button(key=f"FormSubmitter:{form_key}-{label}").click().run()
    assert not at.exception, at.exception
    return at


ALLERGY_ADD = f"{session.RECORD_KEYS}allergy.add"
ALLERGY_EDIT = f"{session.RECORD_KEYS}allergy.edit"
DEMOGRAPHICS = f"{session.RECORD_KEYS}demographics"


def db_allergies(patient_id: str) -> list[tuple[str, str]]:
    with session_scope() as s:
        patient = s.query(models.Patient).filter_by(patient_id=patient_id).one()
        return sorted((a.substance, a.severity) for a in patient.allergies)


# ------------------------------------------------------------------ login and the gate


def test_login_shows_the_patients_page_and_who_is_signed_in(make_user: MakeUser) -> None:
    account = make_user("dr.grey", full_name="Meredith Grey")
    at = start()
    assert shows_login_form(at)
    at = submit_login(at, account.username, account.password)
    assert [t.value for t in at.title] == ["Patients"]
    sidebar = "\n".join(m.value for m in at.sidebar.markdown)
    assert "Meredith Grey" in sidebar and "dr.grey" in sidebar
    assert at.sidebar.button[0].label == "Log out"


def test_wrong_password_is_refused_with_a_clear_message(make_user: MakeUser) -> None:
    account = make_user("dr.yang")
    at = submit_login(start(), account.username, "not the password")
    assert "Invalid username or password." in [e.value for e in at.error]
    assert shows_login_form(at) and session.USER not in at.session_state


def test_five_wrong_passwords_lock_the_account_without_saying_so(
    make_user: MakeUser, configure: Callable[..., None]
) -> None:
    configure(lockout_attempts=5, lockout_minutes=15)
    account = make_user("dr.karev")
    at = start()
    for _ in range(4):
        submit_login(at, account.username, "wrong password")
        assert "Invalid username or password." in [e.value for e in at.error]
    submit_login(at, account.username, "wrong password")
    # Issue 13: the lock says what a wrong password says, so it does not reveal that the name exists.
    assert [e.value for e in at.error] == ["Invalid username or password."]
    # Locked means locked: even the right password is refused until then.
    submit_login(at, account.username, account.password)
    assert [e.value for e in at.error] == ["Invalid username or password."]
    assert session.USER not in at.session_state


@pytest.mark.parametrize("page", [route.path for route in ROUTES])
def test_a_page_opened_without_login_shows_only_the_login_form(
    make_patient: MakePatient, make_user: MakeUser, monkeypatch: pytest.MonkeyPatch, page: str
) -> None:
    """Every route app.py registers (ui/navigation.py), so a new page is covered the moment it is listed."""
    make_patient("ED-7", given_name="Hidden", family_name="Person")
    monkeypatch.setattr(inference, "detector_configured", lambda: True)
    monkeypatch.setattr(inference, "get_detector", lambda _model_dir=None: StubDetector())
    film = diagnosis.diagnose_upload("ED-7", png_variant(0), "chest.png", make_user("dr.uploader").user)
    at = start()
    at.session_state[session.PATIENT_ID] = "ED-7"  # as if a stale tab still knew the patient
    at.session_state[session.STUDY_ID] = film.study_id  # and the film it showed
    at.switch_page(page).run()
    assert not at.exception, at.exception
    assert shows_login_form(at)
    assert "PERSON" not in texts(at) and "Hidden" not in texts(at)
    # A page script run on its own (Streamlit's legacy pages/ router) is gated too.
    direct = AppTest.from_file(ROOT / page, default_timeout=TIMEOUT).run()
    assert not direct.exception, direct.exception
    assert shows_login_form(direct) and "PERSON" not in texts(direct)


def _last_click_minutes_ago(minutes: float) -> None:
    """Age the server-side sessions (core.web_sessions), as if nobody had clicked for ``minutes``."""
    with session_scope() as s:
        for row in s.query(models.WebSession).filter(models.WebSession.revoked_at.is_(None)):
            row.last_seen_at = session.utcnow() - timedelta(minutes=minutes)


def test_session_expires_after_idle_time(make_user: MakeUser, configure: Callable[..., None]) -> None:
    configure(session_idle_minutes=30)
    at = login(make_user())
    _last_click_minutes_ago(31)
    at.run()
    assert "Your session expired — please log in again." in texts(at)
    assert shows_login_form(at) and session.USER not in at.session_state


def test_activity_within_the_idle_time_keeps_the_session(make_user: MakeUser) -> None:
    at = login(make_user())
    _last_click_minutes_ago(29)
    at.run()
    assert not shows_login_form(at) and session.USER in at.session_state


def test_logout_forgets_the_session(make_user: MakeUser, make_patient: MakePatient) -> None:
    make_patient("ED-9")
    at = login(make_user())
    open_record(at, "ED-9")
    at.sidebar.button[0].click().run()
    assert shows_login_form(at)
    assert session.USER not in at.session_state and session.PATIENT_ID not in at.session_state
    assert "You have logged out." in texts(at)
    with session_scope() as s:  # the server-side session is over, whatever cookie the browser still holds
        assert [row.revoked_at is not None for row in s.query(models.WebSession)] == [True]


# ------------------------------------------------------------------ search and registration


def test_search_by_exact_id_prefix_and_name(make_user: MakeUser, make_patient: MakePatient) -> None:
    make_patient("ED-100", given_name="Grace", family_name="Hopper")
    make_patient("ED-1001", given_name="Alan", family_name="Turing")
    make_patient("ED-200", given_name="Katherine", family_name="Johnson")
    at = login(make_user())
    assert search(at, "ED-100")[0] == "ED-100"  # exact match first
    assert search(at, "ed-10") == ["ED-100", "ED-1001"]  # prefix, case-insensitive
    assert search(at, "johnson") == ["ED-200"]
    assert search(at, "hop gra") == ["ED-100"]
    assert search(at, "NOBODY-HERE") == []
    assert "No patient matches" in texts(at)


def test_open_a_record_from_the_search(make_user: MakeUser, make_patient: MakePatient) -> None:
    make_patient(
        "ED-300",
        given_name="Rosalind",
        family_name="Franklin",
        allergies=[AllergyInput("Penicillin", "drug", "severe", "anaphylaxis")],
    )
    at = open_record(login(make_user()), "ED-300")
    assert at.session_state[session.PATIENT_ID] == "ED-300"
    assert at.title[0].value == "FRANKLIN, Rosalind"
    assert "Allergies: **Penicillin** (Severe)" in texts(at)
    # DTOs only: nothing from the ORM is kept in the session.
    for key in at.session_state:
        assert not isinstance(at.session_state[key], models.Base), key


def test_unknown_patient_id_is_reported(make_user: MakeUser) -> None:
    at = login(make_user())
    at.session_state[session.PATIENT_ID] = "ED-404"
    at.switch_page("pages/record.py").run()
    assert "No patient with ID 'ED-404'." in [e.value for e in at.error]


def test_register_a_patient_with_validation_messages(make_user: MakeUser, make_patient: MakePatient) -> None:
    make_patient("ED-500")
    at = login(make_user())
    form = "new_patient"
    at.text_input(key=field_key(form, "given_name")).set_value("Marie")
    submit_form(at, f"{form}.form", "Register patient")
    shown = texts(at)
    assert "Patient ID is required." in shown
    assert "Family name is required." in shown and "Date of birth is required." in shown
    assert at.text_input(key=field_key(form, "given_name")).value == "Marie"  # nothing typed is lost

    at.text_input(key=field_key(form, "patient_id")).set_value("ed-500")  # taken (IDs ignore case)
    at.text_input(key=field_key(form, "family_name")).set_value("Curie")
    at.date_input(key=field_key(form, "date_of_birth")).set_value(date(1967, 11, 7))
    submit_form(at, f"{form}.form", "Register patient")
    assert "A patient with ID 'ED-500' already exists." in texts(at)
    assert "Family name is required." not in texts(at)

    at.text_input(key=field_key(form, "patient_id")).set_value("ed-501")
    submit_form(at, f"{form}.form", "Register patient")
    assert at.session_state[session.PATIENT_ID] == "ED-501"
    assert at.title[0].value == "CURIE, Marie"
    assert "Patient registered." in texts(at)


# ------------------------------------------------------------------ the record


def test_add_edit_and_remove_an_allergy(make_user: MakeUser, make_patient: MakePatient) -> None:
    make_patient("ED-600", given_name="Ada")
    at = open_record(login(make_user()), "ED-600")

    # A refused add explains itself next to the form and keeps what was typed.
    at.text_input(key=field_key(ALLERGY_ADD, "reaction")).set_value("hives")
    submit_form(at, f"{ALLERGY_ADD}.form", "Add allergy")
    assert "Substance is required." in texts(at)
    assert at.text_input(key=field_key(ALLERGY_ADD, "reaction")).value == "hives"
    assert db_allergies("ED-600") == []

    at.text_input(key=field_key(ALLERGY_ADD, "substance")).set_value("Amoxicillin")
    at.selectbox(key=field_key(ALLERGY_ADD, "kind")).set_value("drug")
    at.selectbox(key=field_key(ALLERGY_ADD, "severity")).set_value("moderate")
    submit_form(at, f"{ALLERGY_ADD}.form", "Add allergy")
    assert "Allergy added." in texts(at)
    assert "Allergies: **Amoxicillin** (Moderate)" in texts(at)
    assert db_allergies("ED-600") == [("Amoxicillin", "moderate")]
    assert at.text_input(key=field_key(ALLERGY_ADD, "substance")).value == ""  # form reset

    allergy_id = at.session_state[session.RECORD].allergies[0].id
    at.button(key=f"{ALLERGY_EDIT}.{allergy_id}").click().run()
    assert at.text_input(key=field_key(ALLERGY_EDIT, "substance")).value == "Amoxicillin"
    at.selectbox(key=field_key(ALLERGY_EDIT, "severity")).set_value("life-threatening")
    submit_form(at, f"{ALLERGY_EDIT}.form", "Save")
    assert "Allergy saved." in texts(at)
    assert db_allergies("ED-600") == [("Amoxicillin", "life-threatening")]

    at.button(key=f"{session.RECORD_KEYS}allergy.remove.{allergy_id}").click().run()
    assert "Remove this allergy from the record?" in texts(at)
    at.button(key=f"{session.RECORD_KEYS}allergy.remove.yes").click().run()
    assert "Allergy removed." in texts(at)
    assert db_allergies("ED-600") == []
    assert "No allergies recorded." in texts(at)


def test_concurrent_demographics_edit_shows_conflict_and_keeps_typing(
    make_user: MakeUser, make_patient: MakePatient
) -> None:
    created = make_patient(
        "ED-700", given_name="Ada", family_name="Lovelace", date_of_birth=date(1960, 5, 17)
    )
    other_doctor = make_user("dr.other").user
    at = open_record(login(make_user()), "ED-700")
    next(b for b in at.button if b.label == "Edit demographics").click().run()
    at.text_input(key=field_key(DEMOGRAPHICS, "phone")).set_value("+44 20 7946 0000")

    # Meanwhile another doctor saves the same record.
    records.update_demographics(
        "ED-700",
        Demographics("Augusta Ada", "Lovelace", "female", date(1960, 5, 17)),
        created.version,
        other_doctor,
    )
    submit_form(at, f"{DEMOGRAPHICS}.form", "Save")
    assert forms.CONFLICT == "This record was changed by someone else — reload to see the latest version."
    assert forms.CONFLICT in [w.value for w in at.warning]
    assert at.text_input(key=field_key(DEMOGRAPHICS, "phone")).value == "+44 20 7946 0000"
    assert records.get_record("ED-700", other_doctor).demographics.phone == ""  # nothing overwritten

    # Reload shows the other doctor's version and rebases the edit; the typed phone is still there.
    at.button(key=f"{DEMOGRAPHICS}.reload").click().run()
    assert "Augusta Ada" in texts(at)
    assert at.text_input(key=field_key(DEMOGRAPHICS, "phone")).value == "+44 20 7946 0000"
    at.text_input(key=field_key(DEMOGRAPHICS, "given_name")).set_value("Augusta Ada")
    submit_form(at, f"{DEMOGRAPHICS}.form", "Save")
    assert "Demographics saved." in texts(at)
    saved = records.get_record("ED-700", other_doctor).demographics
    assert (saved.given_name, saved.phone) == ("Augusta Ada", "+44 20 7946 0000")


def test_concurrent_allergy_edit_conflict(make_user: MakeUser, make_patient: MakePatient) -> None:
    created = make_patient("ED-710", allergies=[AllergyInput("Latex", "other", "mild")])
    other_doctor = make_user("dr.other").user
    at = open_record(login(make_user()), "ED-710")
    allergy = created.allergies[0]
    at.button(key=f"{ALLERGY_EDIT}.{allergy.id}").click().run()
    at.text_input(key=field_key(ALLERGY_EDIT, "reaction")).set_value("rash")
    records.update_allergy(
        allergy.id, AllergyInput("Latex", "other", "severe", "wheeze"), allergy.version, other_doctor
    )
    submit_form(at, f"{ALLERGY_EDIT}.form", "Save")
    assert forms.CONFLICT in [w.value for w in at.warning]
    assert at.text_input(key=field_key(ALLERGY_EDIT, "reaction")).value == "rash"
    assert db_allergies("ED-710") == [("Latex", "severe")]


def test_visits_conditions_and_special_notes_are_editable(
    make_user: MakeUser, make_patient: MakePatient
) -> None:
    make_patient("ED-800")
    at = open_record(login(make_user()), "ED-800")
    visit = f"{session.RECORD_KEYS}visit.add"
    at.text_input(key=field_key(visit, "reason")).set_value("Shortness of breath")
    submit_form(at, f"{visit}.form", "Add visit")
    assert "Visit added." in texts(at) and "Shortness of breath" in texts(at)

    condition = f"{session.RECORD_KEYS}condition.add"
    at.text_input(key=field_key(condition, "name")).set_value("COPD")
    at.date_input(key=field_key(condition, "onset_date")).set_value(date(1950, 1, 1))  # before birth
    submit_form(at, f"{condition}.form", "Add condition")
    assert "Onset date cannot be before the date of birth." in texts(at)
    at.date_input(key=field_key(condition, "onset_date")).set_value(date(2015, 3, 1))
    submit_form(at, f"{condition}.form", "Add condition")
    assert "Condition added." in texts(at) and "COPD" in texts(at)

    notes = f"{session.RECORD_KEYS}notes"
    next(b for b in at.button if b.label == "Edit special notes").click().run()
    at.text_area(key=field_key(notes, "special_notes")).set_value("Needs an interpreter (Portuguese)")
    submit_form(at, f"{notes}.form", "Save")
    assert "Special notes saved." in texts(at)
    record = records.get_record("ED-800", make_user("dr.check").user)
    assert [v.reason for v in record.visits] == ["Shortness of breath"]
    assert [c.name for c in record.conditions] == ["COPD"]
    assert record.special_notes == "Needs an interpreter (Portuguese)"


def test_user_text_is_shown_as_typed_not_as_markup(make_user: MakeUser, make_patient: MakePatient) -> None:
    make_patient(
        "ED-900", special_notes="**not bold** [link](http://x) :material/home: $x$ '; DROP TABLE patients;--"
    )
    at = open_record(login(make_user()), "ED-900")
    shown = texts(at)
    assert r"\*\*not bold\*\*" in shown and r"\:material/home\:" in shown
    assert "DROP TABLE patients;--" in shown


# ------------------------------------------------------------------ audit


def test_audit_page_for_admin_with_filters(make_user: MakeUser, make_patient: MakePatient) -> None:
    make_patient("ED-950")
    doctor = make_user("dr.audited")
    open_record(login(doctor), "ED-950")  # writes a 'view' row

    at = login(make_user("boss", role="admin"))
    at.switch_page("pages/audit.py").run()
    assert not at.exception, at.exception
    assert at.title[0].value == "Audit log"
    at.selectbox(key="audit.user").set_value("dr.audited")
    at.selectbox(key="audit.action").set_value("view")
    at.text_input(key="audit.patient").set_value("ED-950")
    submit_form(at, "audit_filters", "Apply filters")
    table = at.dataframe[0].value
    assert list(table["User"]) == ["dr.audited"]
    assert list(table["Action"]) == ["view"] and list(table["Patient"]) == ["ED-950"]
    # Before/after of a change are shown.
    at.selectbox(key="audit.user").set_value("Any")
    at.selectbox(key="audit.action").set_value("create")
    submit_form(at, "audit_filters", "Apply filters")
    assert '"family_name": "Lovelace"' in at.dataframe[0].value["After"].iloc[0]


def test_audit_page_is_refused_to_doctors(make_user: MakeUser) -> None:
    at = login(make_user("dr.curious"))
    # Not in the doctor's navigation at all ...
    with pytest.raises(ValueError, match="Could not find a navigation page"):
        at.switch_page("pages/audit.py")
    # ... and the page itself refuses if it is run for a doctor anyway.
    direct = AppTest.from_file(ROOT / "pages/audit.py", default_timeout=TIMEOUT)
    direct.session_state[session.USER] = at.session_state[session.USER]
    direct.run()
    assert "Only administrators can see the audit log." in [e.value for e in direct.error]
    assert not direct.dataframe


def test_markdown_escaping_keeps_text_literal() -> None:
    assert fmt.md("ED-500 O'Brien-Smith, 2.5 mg") == "ED-500 O'Brien-Smith, 2.5 mg"  # ordinary text untouched
    assert fmt.md("**x** [a](b) :red[y] $z$") == r"\*\*x\*\* \[a\](b) \:red\[y\] \$z\$"
    assert fmt.md("1. one\n- two\n---") == "1\\. one  \n\\- two  \n\\---"
