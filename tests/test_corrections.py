"""Corrections (core/review/corrections.py) on SQLite and PostgreSQL, with the real active classifier and a stub
detector: the editor's starting point, saving beside the model's read, reviewed vs corrected, drafts,
concurrent saves, refusals, the history and the review queue's order."""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, select, update

from core.auth import AuthenticatedUser
from core.errors import ConflictError, NotFound, ValidationError
from core.ml import inference
from core.records import PatientRecord
from core.review import corrections as cx
from core.xray import diagnosis as dx
from db import models
from db.base import utcnow
from db.session import session_scope
from tests.support.db import TestAccount
from tests.support.stubs import StubDetector
from tests.support.xray_samples import png_variant

MakePatient = Callable[..., PatientRecord]
MakeUser = Callable[..., TestAccount]


@pytest.fixture
def stub_detector(monkeypatch: pytest.MonkeyPatch) -> StubDetector:
    stub = StubDetector()
    monkeypatch.setattr(inference, "detector_configured", lambda: True)
    monkeypatch.setattr(inference, "get_detector", lambda _model_dir=None: stub)
    return stub


@pytest.fixture
def study(
    make_patient: MakePatient,
    doctor: AuthenticatedUser,
    stub_detector: StubDetector,  # noqa: ARG001 - requested for its effect: the stub detects the boxes
) -> dx.DiagnosisView:
    """A diagnosed 1024 x 1024 film of patient ED-1 with the stub's two boxes (Nodule, Effusion)."""
    make_patient("ED-1", given_name="Ada", family_name="Lovelace")
    return dx.diagnose_upload("ED-1", png_variant(0), "chest.png", doctor)


def diagnosis_row(study_id: int) -> dict[str, Any]:
    with session_scope() as s:
        d = s.scalars(select(models.Diagnosis).where(models.Diagnosis.study_id == study_id)).one()
        return {c.name: getattr(d, c.name) for c in models.Diagnosis.__table__.columns}


def study_row(study_id: int) -> tuple[str, int]:
    with session_scope() as s:
        st = s.get(models.Study, study_id)
        assert st is not None
        return st.status, st.version


def correction_rows() -> list[models.Correction]:
    with session_scope() as s:
        return list(s.scalars(select(models.Correction).order_by(models.Correction.id)).all())


def audit(action: str) -> list[models.AuditLog]:
    with session_scope() as s:
        return list(
            s.scalars(
                select(models.AuditLog).where(models.AuditLog.action == action).order_by(models.AuditLog.id)
            )
        )


def flip(label: str) -> str:
    return cx.ABSENT if label == cx.PRESENT else cx.PRESENT


# ------------------------------------------------------------------ the editor's starting point


def test_editor_starts_from_the_model_read(study: dx.DiagnosisView, doctor: AuthenticatedUser) -> None:
    state = cx.get_editor_state(study.study_id, doctor)
    assert state.finding_names == tuple(f.name for f in study.findings)
    assert state.labels == {f.name: cx.PRESENT if f.flagged else cx.ABSENT for f in study.findings}
    assert state.labels == state.model_labels
    assert state.model_boxes == study.boxes
    assert state.boxes == tuple(
        cx.CorrectedBox.from_model(b) for b in study.boxes if b.label in cx.BOX_CLASSES
    )
    assert state.based_on is None and state.note == "" and state.status == "new"
    assert (state.width, state.height, state.study_version) == (1024, 1024, study.study_version)
    assert state.preview_path.is_file() and state.model_image_path == study.image_path and state.detector_ran
    [view] = [a for a in audit("view") if a.detail == "correction editor"]
    assert view.entity_id == str(study.study_id) and view.patient_id == "ED-1"
    with pytest.raises(NotFound):
        cx.get_editor_state(987654, doctor)


def test_model_boxes_outside_the_class_list_are_left_out_of_the_editor(
    study: dx.DiagnosisView, doctor: AuthenticatedUser
) -> None:
    # The stub detector's "Nodule" is not one of the detector classes ("Nodule/Mass"): it cannot be edited.
    state = cx.get_editor_state(study.study_id, doctor)
    assert [b.label for b in state.boxes] == ["Effusion"] and state.unusable_model_boxes == 1
    assert len(state.model_boxes) == 2  # the model's read itself is shown whole


# ------------------------------------------------------------------ saving


def test_a_correction_is_saved_beside_the_model_read(
    study: dx.DiagnosisView, doctor: AuthenticatedUser
) -> None:
    before = diagnosis_row(study.study_id)
    state = cx.get_editor_state(study.study_id, doctor)
    changed = state.finding_names[0]
    labels = {**state.labels, changed: flip(state.labels[changed])}
    moved = cx.CorrectedBox("Effusion", 100.0, 120.5, 300.0, 400.0)
    added = cx.CorrectedBox("Pneumothorax", 700, 50, 900, 300)

    saved = cx.save_correction(
        study.study_id, labels, [moved, added], "  Effusion is larger.  ", state.study_version, doctor
    )

    assert saved.status == "corrected" and saved.reviewed and saved.created_by == doctor.username
    assert saved.changed_findings == (changed,) and saved.boxes_changed
    assert saved.note == "Effusion is larger." and saved.study_version == state.study_version + 1
    assert study_row(study.study_id) == ("corrected", state.study_version + 1)
    assert diagnosis_row(study.study_id) == before  # the model's read is never touched
    [row] = correction_rows()
    assert row.diagnosis_id == study.diagnosis_id and row.created_by == doctor.id and row.reviewed
    assert row.labels == labels and list(saved.labels) == list(state.finding_names)  # DTOs in card order
    assert row.boxes == [
        {"label": "Effusion", "x1": 100.0, "y1": 120.5, "x2": 300.0, "y2": 400.0},
        {"label": "Pneumothorax", "x1": 700.0, "y1": 50.0, "x2": 900.0, "y2": 300.0},
    ]
    assert row.created_at.tzinfo is not None and abs(row.created_at - utcnow()) < timedelta(minutes=5)
    [entry] = audit("correct")
    assert entry.before == {"status": "new"} and entry.after is not None
    assert entry.after["status"] == "corrected" and entry.after["correction_id"] == row.id
    assert entry.after["changed_findings"] == {changed: labels[changed]} and entry.after["boxes"] == 2

    # The editor now opens on the doctor's reading; the model's read is still shown beside it.
    again = cx.get_editor_state(study.study_id, doctor, audit=False)
    assert again.labels == labels and list(again.labels) == list(state.finding_names)
    assert again.boxes == (moved, added) and again.based_on == row.id
    assert again.based_on_by == doctor.username and again.note == "Effusion is larger."
    assert again.model_labels == state.model_labels and again.model_boxes == state.model_boxes
    assert dx.get_diagnosis(study.study_id, doctor).status == "corrected"
    assert [s.status for s in dx.patient_history("ED-1")] == ["corrected"]


def test_agreeing_with_the_model_marks_reviewed(study: dx.DiagnosisView, doctor: AuthenticatedUser) -> None:
    state = cx.get_editor_state(study.study_id, doctor)
    # As the editor hands them back: x, y, w, h on a canvas at 0.625 of the film, scaled back.
    scale = 1024 / 640
    drawn = [
        {"label": b.label, "bbox": [b.x1 / scale, b.y1 / scale, (b.x2 - b.x1) / scale, (b.y2 - b.y1) / scale]}
        for b in state.boxes
    ]
    boxes = cx.boxes_from_xywh(drawn, scale, scale, state.width, state.height)
    saved = cx.save_correction(study.study_id, dict(state.labels), boxes, "", state.study_version, doctor)
    assert saved.status == "reviewed" and saved.changed_findings == () and not saved.boxes_changed
    assert study_row(study.study_id)[0] == "reviewed"

    # A box moved by more than the tolerance is a correction.
    nudged = [cx.CorrectedBox(b.label, b.x1 + 5, b.y1, b.x2 + 5, b.y2) for b in boxes]
    again = cx.save_correction(
        study.study_id, dict(state.labels), nudged, "", saved.study_version or 0, doctor
    )
    assert again.status == "corrected" and again.boxes_changed
    # Removing every box is one too.
    third = cx.save_correction(study.study_id, dict(state.labels), [], "", again.study_version or 0, doctor)
    assert third.status == "corrected" and third.boxes_changed


def test_uncertain_differs_from_the_model(study: dx.DiagnosisView, doctor: AuthenticatedUser) -> None:
    state = cx.get_editor_state(study.study_id, doctor)
    name = state.finding_names[3]
    saved = cx.save_correction(
        study.study_id, {**state.labels, name: cx.UNCERTAIN}, state.boxes, "", state.study_version, doctor
    )
    assert saved.status == "corrected" and saved.changed_findings == (name,)


def test_corrections_are_append_only(
    study: dx.DiagnosisView, doctor: AuthenticatedUser, make_user: MakeUser
) -> None:
    other = make_user("dr.second").user
    state = cx.get_editor_state(study.study_id, doctor)
    first_name = state.finding_names[0]
    first = cx.save_correction(
        study.study_id,
        {**state.labels, first_name: flip(state.labels[first_name])},
        [],
        "first",
        state.study_version,
        doctor,
    )
    state2 = cx.get_editor_state(study.study_id, other)
    assert state2.note == "first" and state2.study_version == first.study_version
    second = cx.save_correction(
        study.study_id, dict(state.labels), state.boxes, "second", state2.study_version, other
    )
    rows = correction_rows()
    assert [r.note for r in rows] == ["first", "second"] and rows[
        0
    ].boxes == []  # the first is kept as it was
    history = cx.correction_history(study.study_id)
    assert [(h.id, h.created_by, h.status) for h in history] == [
        (second.id, "dr.second", "reviewed"),
        (first.id, doctor.username, "corrected"),
    ]
    assert history[1].changed_findings == (first_name,)
    assert cx.correction_history(study.study_id)[0].labels == state.labels
    with pytest.raises(NotFound):
        cx.correction_history(987654)


def test_a_draft_keeps_the_status_but_takes_the_version(
    study: dx.DiagnosisView, doctor: AuthenticatedUser
) -> None:
    state = cx.get_editor_state(study.study_id, doctor)
    draft = cx.save_correction(
        study.study_id,
        dict(state.labels),
        state.boxes,
        "later",
        state.study_version,
        doctor,
        mark_reviewed=False,
    )
    assert not draft.reviewed and draft.status == "new"
    assert study_row(study.study_id) == ("new", state.study_version + 1)
    assert [i.study_id for i in cx.review_queue()] == [study.study_id]  # still waiting for review
    # The stale version is refused even though the draft changed no status.
    with pytest.raises(ConflictError):
        cx.save_correction(study.study_id, dict(state.labels), state.boxes, "", state.study_version, doctor)


# ------------------------------------------------------------------ concurrent saves


def test_the_second_of_two_concurrent_saves_conflicts(
    study: dx.DiagnosisView, doctor: AuthenticatedUser, make_user: MakeUser
) -> None:
    other = make_user("dr.second").user
    mine = cx.get_editor_state(study.study_id, doctor)
    theirs = cx.get_editor_state(study.study_id, other)
    name = mine.finding_names[1]
    cx.save_correction(
        study.study_id,
        {**theirs.labels, name: flip(theirs.labels[name])},
        [],
        "theirs",
        theirs.study_version,
        other,
    )
    with pytest.raises(ConflictError) as refused:
        cx.save_correction(study.study_id, dict(mine.labels), mine.boxes, "mine", mine.study_version, doctor)
    message = str(refused.value)
    assert "changed by someone else" in message and "dr.second" in message and "not saved" in message
    assert [r.note for r in correction_rows()] == ["theirs"]  # theirs is kept whole, mine added nothing
    assert study_row(study.study_id) == ("corrected", mine.study_version + 1)
    assert len(audit("correct")) == 1


def test_a_race_between_check_and_write_is_caught_by_the_version_column(
    study: dx.DiagnosisView, doctor: AuthenticatedUser, make_user: MakeUser, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both saves pass the expected-version check; the UPDATE's version guard stops the second."""
    other = make_user("dr.second").user
    state = cx.get_editor_state(study.study_id, doctor)
    original_check = cx._check_version

    def check_then_someone_else_saves(current: int, expected: int) -> None:
        original_check(current, expected)
        monkeypatch.setattr(cx, "_check_version", original_check)  # only the first call interleaves
        cx.save_correction(study.study_id, dict(state.labels), [], "theirs", expected, other)

    monkeypatch.setattr(cx, "_check_version", check_then_someone_else_saves)
    with pytest.raises(ConflictError, match="changed by someone else"):
        cx.save_correction(
            study.study_id, dict(state.labels), state.boxes, "mine", state.study_version, doctor
        )
    assert [r.note for r in correction_rows()] == ["theirs"]
    assert study_row(study.study_id) == ("corrected", state.study_version + 1)


# ------------------------------------------------------------------ refusals


def _labels(state: cx.EditorState, **changes: str) -> dict[str, str]:
    return {**state.labels, **changes}


REFUSALS: list[tuple[str, Callable[[cx.EditorState], dict[str, Any]], str, str]] = [
    (
        "unknown-finding",
        lambda s: {"labels": _labels(s, Tumour=cx.PRESENT)},
        "labels",
        "'Tumour' is not a finding",
    ),
    (
        "missing-finding",
        lambda s: {"labels": {k: v for k, v in s.labels.items() if k != s.finding_names[0]}},
        "labels",
        "No label for {first}",
    ),
    (
        "bad-label",
        lambda s: {"labels": {**s.labels, s.finding_names[2]: "maybe"}},
        "labels",
        "'maybe' is not a label",
    ),
    (
        "unknown-class",
        lambda _s: {"boxes": [cx.CorrectedBox("Tumour", 1, 1, 50, 50)]},
        "boxes",
        "'Tumour' is not a box class",
    ),
    (
        "outside",
        lambda _s: {"boxes": [cx.CorrectedBox("Effusion", 900, 900, 1100, 1000)]},
        "boxes",
        "outside the image (1024 x 1024 px)",
    ),
    (
        "negative",
        lambda _s: {"boxes": [cx.CorrectedBox("Effusion", -3, 10, 100, 100)]},
        "boxes",
        "outside the image",
    ),
    (
        "zero-area",
        lambda _s: {"boxes": [cx.CorrectedBox("Effusion", 10, 10, 10, 100)]},
        "boxes",
        "has no area",
    ),
    (
        "inverted",
        lambda _s: {"boxes": [cx.CorrectedBox("Effusion", 100, 100, 50, 200)]},
        "boxes",
        "has no area",
    ),
    (
        "nan",
        lambda _s: {"boxes": [cx.CorrectedBox("Effusion", math.nan, 1, 50, 50)]},
        "boxes",
        "not a number",
    ),
    (
        "not-a-box",
        lambda _s: {"boxes": [{"label": "Effusion", "x1": 1}]},
        "boxes",
        "Box 1 is not a label with four coordinates",
    ),
    (
        "too-many",
        lambda _s: {"boxes": [cx.CorrectedBox("Effusion", 1, 1, 50, 50)] * (cx.MAX_BOXES + 1)},
        "boxes",
        f"At most {cx.MAX_BOXES} boxes",
    ),
    ("long-note", lambda _s: {"note": "x" * 2001}, "note", "at most 2000 characters"),
    ("control-note", lambda _s: {"note": "bad\x00note"}, "note", "not allowed"),
]


@pytest.mark.parametrize(
    ("change", "field", "message"), [r[1:] for r in REFUSALS], ids=[r[0] for r in REFUSALS]
)
def test_invalid_input_is_refused_and_nothing_is_saved(
    study: dx.DiagnosisView,
    doctor: AuthenticatedUser,
    change: Callable[[cx.EditorState], dict[str, Any]],
    field: str,
    message: str,
) -> None:
    state = cx.get_editor_state(study.study_id, doctor)
    values: dict[str, Any] = {
        "labels": dict(state.labels),
        "boxes": list(state.boxes),
        "note": "",
        **change(state),
    }
    with pytest.raises(ValidationError) as refused:
        cx.save_correction(
            study.study_id, values["labels"], values["boxes"], values["note"], state.study_version, doctor
        )
    assert field in refused.value.errors, refused.value.errors
    assert message.format(first=state.finding_names[0]) in refused.value.errors[field]
    assert correction_rows() == [] and audit("correct") == []
    assert study_row(study.study_id) == ("new", state.study_version)


def test_every_problem_is_reported_at_once(study: dx.DiagnosisView, doctor: AuthenticatedUser) -> None:
    state = cx.get_editor_state(study.study_id, doctor)
    with pytest.raises(ValidationError) as refused:
        cx.save_correction(
            study.study_id,
            {**state.labels, "Tumour": cx.PRESENT},
            [cx.CorrectedBox("Effusion", 10, 10, 10, 10), cx.CorrectedBox("Effusion", 0, 0, 2000, 10)],
            "x" * 3000,
            state.study_version,
            doctor,
        )
    errors = refused.value.errors
    assert set(errors) == {"labels", "boxes", "note"}
    assert "Box 1" in errors["boxes"] and "Box 2" in errors["boxes"]


@pytest.mark.usefixtures("database")
def test_unknown_study_is_not_found(doctor: AuthenticatedUser) -> None:
    with pytest.raises(NotFound):
        cx.save_correction(987654, {}, [], "", 1, doctor)


# ------------------------------------------------------------------ editor geometry


def test_boxes_from_the_editor_canvas_are_scaled_back_and_clamped_at_the_edges() -> None:
    items = [
        {"label": "Effusion", "bbox": [10, 20, 30, 40]},
        {"label": "Fracture", "bbox": [-0.3, -0.2, 512.4, 400.3]},  # float noise past the edges
        {"label": "Pneumothorax", "bbox": [-10, 0, 20, 20]},  # really outside: left for validation
    ]
    boxes = cx.boxes_from_xywh(items, 2.0, 2.0, 1024, 800)
    assert boxes[0] == cx.CorrectedBox("Effusion", 20.0, 40.0, 80.0, 120.0)
    assert boxes[1] == cx.CorrectedBox("Fracture", 0.0, 0.0, 1024.0, 800.0)
    assert boxes[2].x1 == -20.0
    # Each axis has its own scale (a film shrunk to a whole number of pixels each way).
    [box] = cx.boxes_from_xywh([{"label": "Effusion", "bbox": [10, 10, 100, 50]}], 2.0, 3.0, 1024, 800)
    assert box == cx.CorrectedBox("Effusion", 20.0, 30.0, 220.0, 180.0)


# ------------------------------------------------------------------ review queue


def _set_read(
    study_id: int, probabilities: dict[str, float], uncertain: bool = False, minutes_ago: int = 0
) -> None:
    with session_scope() as s:
        s.execute(
            update(models.Diagnosis)
            .where(models.Diagnosis.study_id == study_id)
            .values(
                probabilities=probabilities,
                uncertain=uncertain,
                uncertain_reason="close call" if uncertain else "",
            )
        )
        s.execute(
            update(models.Study)
            .where(models.Study.id == study_id)
            .values(uploaded_at=utcnow() - timedelta(minutes=minutes_ago))
        )


@pytest.mark.usefixtures("stub_detector")
def test_review_queue_puts_the_least_certain_first(
    make_patient: MakePatient,
    doctor: AuthenticatedUser,
) -> None:
    make_patient("ED-1")
    ids = [dx.diagnose_upload("ED-1", png_variant(i), f"{i}.png", doctor).study_id for i in range(5)]
    thresholds = {f.name: f.threshold for f in dx.get_diagnosis(ids[0], doctor, audit=False).findings}
    names = list(thresholds)

    def far(**near: float) -> dict[str, float]:
        """Every finding 3 log-odds from its threshold, except those given as a log-odds offset."""

        def at(name: str, offset: float) -> float:
            t = thresholds[name]
            return 1 / (1 + math.exp(-(math.log(t / (1 - t)) + offset)))

        return {n: at(n, near.get(n, -3.0)) for n in names}

    _set_read(ids[0], far(), minutes_ago=50)  # sure of everything, oldest
    _set_read(ids[1], far(**{names[4]: 0.1}), minutes_ago=10)  # one finding right at its threshold
    _set_read(ids[2], far(**{names[0]: -0.8}), minutes_ago=30)
    _set_read(ids[3], far(), uncertain=True, minutes_ago=5)  # the triage rule itself was unsure
    _set_read(ids[4], far(**{names[2]: 0.05}), minutes_ago=1)  # closest of all, but already reviewed
    state = cx.get_editor_state(ids[4], doctor, audit=False)
    cx.save_correction(ids[4], dict(state.labels), state.boxes, "", state.study_version, doctor)

    queue = cx.review_queue()
    assert [i.study_id for i in queue] == [ids[3], ids[1], ids[2], ids[0]]
    assert queue[1].closest_finding == names[4] and queue[1].margin == pytest.approx(0.1, abs=1e-3)
    assert queue[2].margin == pytest.approx(0.8, abs=1e-3) and queue[3].margin == pytest.approx(3.0, abs=1e-3)
    assert queue[0].uncertain and queue[0].uncertain_reason == "close call"
    assert queue[1].thumbnail_path.is_file() and queue[1].patient_id == "ED-1"
    assert [i.study_id for i in cx.review_queue(limit=2)] == [ids[3], ids[1]]


@pytest.mark.usefixtures("database")
def test_review_queue_is_empty_without_studies() -> None:
    assert cx.review_queue() == ()
    with session_scope() as s:
        assert s.scalar(select(func.count()).select_from(models.Correction)) == 0
