"""The doctor's reading as the record (issue 12; core/review/readings.py and the sign-off in
core/review/corrections.py) on SQLite and PostgreSQL, with the real active classifier and a stub detector:
current_reading(s), label provenance, sign, amend with a reason, refusals, a concurrent amendment, boxes for
findings the detector does not know, and the model's read left untouched."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import select, update

from core.auth import AuthenticatedUser
from core.errors import ConflictError, ValidationError
from core.ml import inference
from core.records import PatientRecord
from core.review import corrections as cx
from core.review import readings as rd
from core.xray import diagnosis as dx
from db import models
from db.session import session_scope
from tests.support.db import TestAccount
from tests.support.stubs import StubDetector
from tests.support.xray_samples import png_variant

MakePatient = Callable[..., PatientRecord]
MakeUser = Callable[..., TestAccount]


@pytest.fixture
def study(
    make_patient: MakePatient, doctor: AuthenticatedUser, monkeypatch: pytest.MonkeyPatch
) -> dx.DiagnosisView:
    """A diagnosed film of patient ED-1 with the stub detector's boxes (Nodule, Effusion)."""
    stub = StubDetector()
    monkeypatch.setattr(inference, "detector_configured", lambda: True)
    monkeypatch.setattr(inference, "get_detector", lambda _model_dir=None: stub)
    make_patient("ED-1", given_name="Ada", family_name="Lovelace")
    return dx.diagnose_upload("ED-1", png_variant(0), "chest.png", doctor)


def rows() -> list[models.Correction]:
    with session_scope() as s:
        return list(s.scalars(select(models.Correction).order_by(models.Correction.id)).all())


def audit(action: str) -> list[models.AuditLog]:
    with session_scope() as s:
        return list(
            s.scalars(
                select(models.AuditLog).where(models.AuditLog.action == action).order_by(models.AuditLog.id)
            )
        )


def diagnosis_row(study_id: int) -> dict[str, Any]:
    with session_scope() as s:
        d = s.scalars(select(models.Diagnosis).where(models.Diagnosis.study_id == study_id)).one()
        return {c.name: getattr(d, c.name) for c in models.Diagnosis.__table__.columns}


def all_set(state: cx.EditorState, source: str = "doctor") -> dict[str, str]:
    return dict.fromkeys(state.finding_names, source)


def test_no_reading_before_a_doctor_saves_and_drafts_are_not_readings(
    study: dx.DiagnosisView, doctor: AuthenticatedUser
) -> None:
    assert rd.current_reading(study.study_id) is None and rd.current_readings([study.study_id]) == {}
    state = cx.get_editor_state(study.study_id, doctor)
    cx.save_correction(
        study.study_id, state.labels, state.boxes, "draft", state.study_version, doctor, mark_reviewed=False
    )
    assert rd.current_reading(study.study_id) is None
    assert rd.current_reading(999_999) is None and rd.current_readings([]) == {}


def test_only_labels_the_doctor_set_are_the_doctors(
    study: dx.DiagnosisView, doctor: AuthenticatedUser
) -> None:
    state = cx.get_editor_state(study.study_id, doctor)
    first, second, *rest = state.finding_names
    sources = {first: "doctor", second: "accepted", **dict.fromkeys(rest, "model")}
    labels = {**state.model_labels, first: "present"}
    cx.save_correction(
        study.study_id, labels, [], "Looked at two", state.study_version, doctor, sources=sources
    )

    reading = rd.current_reading(study.study_id)
    assert reading is not None and not reading.signed and reading.amends is None
    assert reading.labels == {first: "present", second: state.model_labels[second]}
    assert set(reading.unset) == set(rest) and reading.note == "Looked at two"
    assert reading.reader_username == doctor.username and reading.reader_name
    assert reading.saved_at.tzinfo is not None and reading.status_line.startswith("Reviewed by ")
    by_name = {f.name: f for f in reading.findings}
    assert by_name[rest[0]].label is None and by_name[rest[0]].source == "model"
    assert by_name[first].suggestion == state.model_labels[first] and by_name[first].probability is not None
    assert [f.name for f in reading.findings] == list(state.finding_names)  # model card order
    assert rows()[0].label_sources == sources


def test_sign_then_amend_with_a_reason_keeps_both(study: dx.DiagnosisView, doctor: AuthenticatedUser) -> None:
    model_before = diagnosis_row(study.study_id)
    state = cx.get_editor_state(study.study_id, doctor)
    signed = cx.save_correction(
        study.study_id,
        state.model_labels,
        state.boxes,
        "Agree",
        state.study_version,
        doctor,
        sources=all_set(state, "accepted"),
        sign=True,
    )
    reading = rd.current_reading(study.study_id)
    assert reading is not None and reading.signed and reading.signed_at is not None
    assert reading.id == signed.id and reading.status_line.startswith("Signed by ")
    [entry] = audit("sign")
    assert entry.after is not None and entry.after["signed"] is True

    # Amending: a plain save, a draft, a signed save without a reason are all refused; nothing is written.
    state = cx.get_editor_state(study.study_id, doctor)
    name = state.finding_names[0]
    changed = {**state.labels, name: "absent" if state.labels[name] == "present" else "present"}
    for kwargs in ({}, {"mark_reviewed": False}, {"sign": True}, {"sign": True, "amend_reason": "   "}):
        with pytest.raises(ValidationError) as refused:
            cx.save_correction(
                study.study_id,
                changed,
                [],
                "x",
                state.study_version,
                doctor,
                sources=all_set(state),
                **kwargs,
            )
        assert set(refused.value.errors) & {"sign", "amend_reason"}
    assert len(rows()) == 1

    amended = cx.save_correction(
        study.study_id,
        changed,
        [],
        "Second look",
        state.study_version,
        doctor,
        sources=all_set(state),
        sign=True,
        amend_reason="Missed on first read",
    )
    now = rd.current_reading(study.study_id)
    assert now is not None and now.id == amended.id and now.signed and now.amends == signed.id
    assert now.amend_reason == "Missed on first read" and now.labels[name] == changed[name]
    assert now.status_line.startswith("Amended and signed by ")
    old = rd.reading_by_id(signed.id)
    assert old is not None and old.signed and old.note == "Agree"  # the first signed reading is kept
    [entry] = audit("amend")
    assert entry.after is not None and entry.after["amends"] == signed.id
    assert entry.after["amend_reason"] == "Missed on first read"
    assert diagnosis_row(study.study_id) == model_before  # the model's read is never changed


def test_signing_needs_every_finding_set(study: dx.DiagnosisView, doctor: AuthenticatedUser) -> None:
    state = cx.get_editor_state(study.study_id, doctor)
    sources = {**all_set(state), state.finding_names[-1]: "model"}
    with pytest.raises(ValidationError) as refused:
        cx.save_correction(
            study.study_id, state.labels, [], "", state.study_version, doctor, sources=sources, sign=True
        )
    assert "before signing" in refused.value.errors["sources"]
    with pytest.raises(ValidationError):
        cx.save_correction(
            study.study_id, state.labels, [], "", state.study_version, doctor, sources={"x": "maybe"}
        )
    assert rows() == []


def test_two_doctors_amending_at_once_the_second_conflicts(
    study: dx.DiagnosisView, doctor: AuthenticatedUser, make_user: MakeUser
) -> None:
    other = make_user("dr.second").user
    state = cx.get_editor_state(study.study_id, doctor)
    cx.save_correction(
        study.study_id, state.labels, [], "", state.study_version, doctor, sources=all_set(state), sign=True
    )
    mine = cx.get_editor_state(study.study_id, doctor)
    theirs = cx.get_editor_state(study.study_id, other)
    kw: dict[str, Any] = {"sources": all_set(mine), "sign": True, "amend_reason": "second look"}
    cx.save_correction(study.study_id, theirs.labels, [], "theirs", theirs.study_version, other, **kw)
    with pytest.raises(ConflictError):
        cx.save_correction(study.study_id, mine.labels, [], "mine", mine.study_version, doctor, **kw)
    reading = rd.current_reading(study.study_id)
    assert reading is not None and reading.note == "theirs" and reading.reader_username == "dr.second"
    assert [r.note for r in rows()] == ["", "theirs"]


def test_boxes_can_mark_findings_the_detector_does_not_know(
    study: dx.DiagnosisView, doctor: AuthenticatedUser
) -> None:
    state = cx.get_editor_state(study.study_id, doctor)
    classes = cx.markable_classes(state.finding_names)
    assert classes[: len(cx.box_classes())] == cx.box_classes()
    extra = next(n for n in classes if n not in cx.box_classes())
    box = cx.CorrectedBox(extra, 10, 10, 200, 200)
    cx.save_correction(study.study_id, state.labels, [box], "", state.study_version, doctor)
    reading = rd.current_reading(study.study_id)
    assert reading is not None and reading.boxes == (box,)
    with pytest.raises(ValidationError):
        cx.save_correction(
            study.study_id,
            state.labels,
            [cx.CorrectedBox("Not a finding", 10, 10, 20, 20)],
            "",
            state.study_version + 1,
            doctor,
        )


def test_current_readings_for_a_list(
    study: dx.DiagnosisView, doctor: AuthenticatedUser, make_patient: MakePatient
) -> None:
    make_patient("ED-2")
    other = dx.diagnose_upload("ED-2", png_variant(1), "b.png", doctor)
    state = cx.get_editor_state(study.study_id, doctor)
    cx.save_correction(study.study_id, state.labels, [], "one", state.study_version, doctor)
    state = cx.get_editor_state(study.study_id, doctor)
    cx.save_correction(study.study_id, state.labels, [], "two", state.study_version, doctor)
    found = rd.current_readings([study.study_id, other.study_id])
    assert list(found) == [study.study_id] and found[study.study_id].note == "two"


def test_review_queue_puts_urgent_first_among_equally_uncertain_and_never_lists_a_signed_film(
    study: dx.DiagnosisView, doctor: AuthenticatedUser
) -> None:
    films = [study.study_id] + [
        dx.diagnose_upload("ED-1", png_variant(i), f"{i}.png", doctor).study_id for i in (1, 2, 3)
    ]
    with session_scope() as s:  # all equally uncertain with the same read: only the triage level differs
        probabilities = s.scalars(select(models.Diagnosis.probabilities)).first()
        for study_id, level in zip(films, ("routine", "urgent", "priority", "urgent"), strict=True):
            s.execute(
                update(models.Diagnosis)
                .where(models.Diagnosis.study_id == study_id)
                .values(triage_level=level, uncertain=True, probabilities=probabilities)
            )
    queue = [i.study_id for i in cx.review_queue()]
    assert queue == [films[1], films[3], films[2], films[0]]  # urgent (oldest first), priority, routine
    state = cx.get_editor_state(films[1], doctor)
    cx.save_correction(
        films[1], state.labels, [], "", state.study_version, doctor, sources=all_set(state), sign=True
    )
    assert films[1] not in [i.study_id for i in cx.review_queue()]


def test_the_imaging_history_shows_the_doctors_reading(
    study: dx.DiagnosisView, doctor: AuthenticatedUser
) -> None:
    assert [s.reading for s in dx.patient_history("ED-1")] == [""]
    state = cx.get_editor_state(study.study_id, doctor)
    cx.save_correction(
        study.study_id, state.labels, [], "", state.study_version, doctor, sources=all_set(state), sign=True
    )
    [summary] = dx.patient_history("ED-1")
    assert summary.reading == f"Signed by {doctor.full_name}"
