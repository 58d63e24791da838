"""Smaller things the ED trial found (issue 12), through AppTest on SQLite and PostgreSQL: an allergy's
severity has no default (the doctor must choose), and the Models page never compares a version with itself
and says why there is no Promote button."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from core.records import PatientRecord
from db import models
from db.session import session_scope
from tests.support.apptest import login, texts
from tests.support.db import TestAccount
from tests.support.model_versions import V1, ModelsDir, temporary_models_dir
from ui import session

MakeUser = Callable[..., TestAccount]
MakePatient = Callable[..., PatientRecord]
ALLERGY_ADD = f"{session.RECORD_KEYS}allergy.add"


def field_key(form: str, field: str) -> str:
    return f"{form}.{field}"


def submit_form(at: AppTest, form_key: str, label: str) -> AppTest:
    at.button(key=f"FormSubmitter:{form_key}-{label}").click().run()
    assert not at.exception, at.exception
    return at


def open_record(at: AppTest, patient_id: str) -> AppTest:
    at.session_state[session.PATIENT_ID] = patient_id
    at.switch_page(session.RECORD_PAGE).run()
    assert not at.exception, at.exception
    return at


def test_allergy_severity_starts_empty_and_must_be_chosen(
    make_user: MakeUser, make_patient: MakePatient
) -> None:
    make_patient("ED-700")
    at = open_record(login(make_user()), "ED-700")
    severity = at.selectbox(key=field_key(ALLERGY_ADD, "severity"))
    assert severity.value is None and severity.placeholder == "Choose…"
    at.text_input(key=field_key(ALLERGY_ADD, "substance")).set_value("Latex")
    submit_form(at, f"{ALLERGY_ADD}.form", "Add allergy")
    assert "Severity must be one of" in texts(at)
    with session_scope() as s:
        assert s.query(models.Allergy).count() == 0
    at.selectbox(key=field_key(ALLERGY_ADD, "severity")).set_value("mild")
    submit_form(at, f"{ALLERGY_ADD}.form", "Add allergy")
    assert "Allergy added." in texts(at)


@pytest.fixture
def models_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ModelsDir]:
    yield from temporary_models_dir(tmp_path, monkeypatch)


def test_models_page_never_compares_the_active_version_with_itself(
    models_dir: ModelsDir, make_user: MakeUser
) -> None:
    boss = make_user("boss", role="admin")
    at = login(boss)
    at.switch_page("pages/models.py").run()
    assert not at.exception, at.exception
    # one classifier version: nothing to compare, and the page says why Promote is absent
    assert not [b for b in at.button if b.key == "models.classifier.promote"]
    assert f"{V1} is the only classifier version" in texts(at)
    models_dir.classifier("cand-b", delta=0.02, created="2026-11-22T09:00:00+00:00")
    at.switch_page("pages/models.py").run()
    assert at.selectbox(key="models.classifier.candidate").options == ["cand-b"]
    assert at.button(key="models.classifier.promote").label == "Promote cand-b to active classifier"
