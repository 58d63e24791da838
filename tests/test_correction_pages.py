"""The correction editor and the review queue through AppTest on SQLite and PostgreSQL: pre-filled labels,
saving (corrected / reviewed / draft), a refused note, a conflict with its reload, the queue's order and
its link to the editor, the admin's export, and the links from the X-ray result."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from sqlalchemy import select
from streamlit.testing.v1 import AppTest

from core.ml import inference
from core.records import PatientRecord
from core.review import corrections as cx
from core.review import export
from core.xray import diagnosis as dx
from db import models
from db.session import session_scope
from tests.support.apptest import login, texts
from tests.support.db import TestAccount
from tests.support.stubs import StubDetector
from tests.support.xray_samples import png_variant
from ui import fmt, session
from ui import review_views as correction_views

MakeUser = Callable[..., TestAccount]
MakePatient = Callable[..., PatientRecord]


@pytest.fixture(autouse=True)
def stub_detector(monkeypatch: pytest.MonkeyPatch) -> StubDetector:
    stub = StubDetector()
    monkeypatch.setattr(inference, "detector_configured", lambda: True)
    monkeypatch.setattr(inference, "get_detector", lambda _model_dir=None: stub)
    return stub


@pytest.fixture
def account(make_user: MakeUser) -> TestAccount:
    return make_user("dr.review")


@pytest.fixture
def study(make_patient: MakePatient, account: TestAccount) -> dx.DiagnosisView:
    make_patient("ED-1", given_name="Ada", family_name="Lovelace")
    return dx.diagnose_upload("ED-1", png_variant(0), "chest.png", account.user)


def open_editor(account: TestAccount, study_id: int) -> AppTest:
    at = login(account)
    at.session_state[session.PATIENT_ID] = "ED-1"
    at.session_state[session.STUDY_ID] = study_id
    at.switch_page(session.REVIEW_PAGE).run()
    assert not at.exception, at.exception
    return at


def radio_key(state: cx.EditorState, finding: str) -> str:
    return f"{correction_views.prefix(state)}label.{finding}"


def corrections() -> list[models.Correction]:
    with session_scope() as s:
        return list(s.scalars(select(models.Correction).order_by(models.Correction.id)))


def test_the_editor_shows_the_model_read_and_a_prefilled_reading(
    account: TestAccount, study: dx.DiagnosisView
) -> None:
    at = open_editor(account, study.study_id)
    state = at.session_state[correction_views.STATE]
    assert state.study_id == study.study_id and "LOVELACE, Ada · ED-1" in [h.value for h in at.subheader]
    shown = texts(at)
    assert "The model's read" in shown and "Pre-filled from the model's read" in shown
    for f in study.findings:  # nothing is the doctor's label until the doctor sets it (no rubber-stamping)
        assert at.radio(key=radio_key(state, f.name)).value == correction_views.NOT_SET
        assert f"model: {cx.PRESENT if f.flagged else cx.ABSENT}" in shown
    model_table = at.dataframe[0].value
    assert list(model_table["Finding"]) == [f.label for f in study.findings]
    assert "Boxes to save" in shown and "Nobody has reviewed this film yet." in shown
    at.run()  # a rerun keeps the same loaded reading (one 'view' audit row per opening)
    assert not at.exception, at.exception
    with session_scope() as s:
        views = s.scalars(select(models.AuditLog).where(models.AuditLog.detail == "correction editor")).all()
        assert len(views) == 1


def test_correcting_a_finding_saves_a_correction_and_marks_the_study_corrected(
    account: TestAccount, study: dx.DiagnosisView
) -> None:
    at = open_editor(account, study.study_id)
    state = at.session_state[correction_views.STATE]
    name = state.finding_names[0]
    new = cx.ABSENT if state.labels[name] == cx.PRESENT else cx.PRESENT
    at.radio(key=radio_key(state, name)).set_value(new).run()
    assert ":orange-badge[differs from model]" in texts(at)
    at.text_area(key=f"{correction_views.prefix(state)}note").set_value("Looks different to me.")
    next(b for b in at.button if b.label == "Save as reviewed").click().run()
    assert not at.exception, at.exception
    assert "the study is marked corrected" in texts(at)

    [row] = corrections()
    assert row.labels[name] == new and row.note == "Looks different to me." and row.status == "corrected"
    assert row.label_sources == {n: "doctor" if n == name else "model" for n in state.finding_names}
    assert [b["label"] for b in row.boxes] == [b.label for b in state.boxes]  # boxes kept as loaded
    reloaded = at.session_state[correction_views.STATE]
    assert reloaded.study_version == state.study_version + 1 and reloaded.based_on == row.id
    assert at.radio(key=radio_key(reloaded, name)).value == new  # the form shows the saved reading
    assert "Readings saved for this study (1)" in [e.label for e in at.expander]
    assert dx.get_diagnosis(study.study_id, account.user, audit=False).status == "corrected"


def test_agreeing_marks_reviewed_and_a_draft_keeps_new(account: TestAccount, study: dx.DiagnosisView) -> None:
    at = open_editor(account, study.study_id)
    next(b for b in at.button if b.label == "Save draft").click().run()
    assert "Draft saved" in texts(at)
    assert [c.reviewed for c in corrections()] == [False]
    next(b for b in at.button if b.label == "Save as reviewed").click().run()
    assert "the study is marked reviewed" in texts(at)
    assert [c.status for c in corrections()] == ["new", "reviewed"]


def test_a_refused_note_is_explained_and_nothing_is_saved(
    account: TestAccount, study: dx.DiagnosisView
) -> None:
    at = open_editor(account, study.study_id)
    state = at.session_state[correction_views.STATE]
    at.text_area(key=f"{correction_views.prefix(state)}note").set_value("bad \x07 bell")
    next(b for b in at.button if b.label == "Save as reviewed").click().run()
    assert not at.exception, at.exception
    assert any("not allowed" in e.value for e in at.error)
    assert corrections() == []


def test_a_save_after_someone_elses_conflicts_and_keeps_what_was_entered(
    account: TestAccount, study: dx.DiagnosisView, make_user: MakeUser
) -> None:
    other = make_user("dr.other").user
    at = open_editor(account, study.study_id)
    state = at.session_state[correction_views.STATE]
    name = state.finding_names[1]
    mine = cx.UNCERTAIN
    at.radio(key=radio_key(state, name)).set_value(mine).run()
    theirs = cx.get_editor_state(study.study_id, other, audit=False)
    cx.save_correction(study.study_id, dict(theirs.labels), [], "theirs", theirs.study_version, other)

    next(b for b in at.button if b.label == "Save as reviewed").click().run()
    assert not at.exception, at.exception
    assert any("changed by someone else" in e.value and "dr.other" in e.value for e in at.error)
    assert [c.note for c in corrections()] == ["theirs"]
    assert at.radio(key=radio_key(state, name)).value == mine  # the form still holds the doctor's choice
    next(b for b in at.button if b.label == "Reload").click().run()
    assert not at.exception, at.exception
    reloaded = at.session_state[correction_views.STATE]
    assert reloaded.note == "theirs" and reloaded.boxes == ()
    assert [e.label for e in at.expander if e.label.startswith("Your unsaved reading")]
    assert fmt.md(f"{name.replace('_', ' ')}: uncertain") in texts(at)


def test_the_result_page_links_to_the_editor(account: TestAccount, study: dx.DiagnosisView) -> None:
    at = login(account)
    at.session_state[session.PATIENT_ID] = "ED-1"
    at.session_state[session.STUDY_ID] = study.study_id
    at.switch_page(session.XRAY_PAGE).run()
    at.button(key=f"xr.review.{study.study_id}").click().run()
    assert not at.exception, at.exception
    assert "Review / correct" in [t.value for t in at.title]
    assert at.session_state[correction_views.STATE].study_id == study.study_id


def test_the_editor_without_a_study(account: TestAccount) -> None:
    at = login(account)
    at.switch_page(session.REVIEW_PAGE).run()
    assert not at.exception, at.exception
    assert "Open a film from the review queue" in texts(at)


def test_the_queue_lists_least_certain_first_and_opens_the_editor(
    account: TestAccount, make_patient: MakePatient
) -> None:
    make_patient("ED-1")
    ids = [dx.diagnose_upload("ED-1", png_variant(i), f"{i}.png", account.user).study_id for i in range(3)]
    at = login(account)
    at.switch_page(session.QUEUE_PAGE).run()
    assert not at.exception, at.exception
    opens = [b.key for b in at.button if b.key and b.key.startswith("rq.open.")]
    assert opens == [f"rq.open.{i.study_id}" for i in cx.review_queue()] and len(opens) == 3
    assert not [b for b in at.button if b.label == "Export reviewed studies"]  # admins only
    at.button(key=f"rq.open.{ids[1]}").click().run()
    assert not at.exception, at.exception
    assert at.session_state[session.STUDY_ID] == ids[1] and "Review / correct" in [t.value for t in at.title]


def test_the_queue_is_empty(account: TestAccount) -> None:
    at = login(account)
    at.switch_page(session.QUEUE_PAGE).run()
    assert "No X-ray is waiting for review." in texts(at)


def test_an_admin_exports_reviewed_studies_from_the_queue_page(
    make_user: MakeUser, study: dx.DiagnosisView, account: TestAccount
) -> None:
    state = cx.get_editor_state(study.study_id, account.user, audit=False)
    cx.save_correction(study.study_id, dict(state.labels), state.boxes, "", state.study_version, account.user)
    admin = make_user("boss", role="admin")
    at = login(admin)
    at.switch_page(session.QUEUE_PAGE).run()
    next(b for b in at.button if b.label == "Export reviewed studies").click().run()
    assert not at.exception, at.exception
    [success] = at.success
    assert "Exported 1 studies with 1 boxes" in success.value
    archive = at.session_state["cx.export"]
    assert archive.endswith(".zip") and archive.startswith(str(export.default_export_dir().parent))
    assert len(at.get("download_button")) == 1


def test_boxes_from_the_editor_are_saved_in_the_films_pixels(
    account: TestAccount, study: dx.DiagnosisView
) -> None:
    """The box component's value (as its Complete button sends it) is scaled back to the original frame."""
    at = open_editor(account, study.study_id)
    state = at.session_state[correction_views.STATE]
    key = f"{correction_views.prefix(state)}boxes"
    at.session_state[key] = [{"bbox": [64.0, 32.0, 128.0, 96.0], "label_id": 5, "label": "Pneumothorax"}]
    at.run()
    assert not at.exception, at.exception
    next(b for b in at.button if b.label == "Save as reviewed").click().run()
    [row] = corrections()
    # The 1024 px film is edited at 640 px: 1.6 original pixels per editor pixel.
    assert row.boxes == [{"label": "Pneumothorax", "x1": 102.4, "y1": 51.2, "x2": 307.2, "y2": 204.8}]
    assert row.status == "corrected"


def test_accepting_the_suggestions_then_sign_then_amend_with_a_reason(
    account: TestAccount, study: dx.DiagnosisView
) -> None:
    at = open_editor(account, study.study_id)
    state = at.session_state[correction_views.STATE]
    first = state.finding_names[0]
    at.radio(key=radio_key(state, first)).set_value(cx.UNCERTAIN).run()
    assert "You have unsaved changes" in texts(at)  # leaving now would lose work: the page says so
    next(b for b in at.button if b.label == "Save and sign").click().run()
    assert any("before signing" in e.value for e in at.error) and corrections() == []

    next(b for b in at.button if b.label.startswith("Accept the model's suggestions")).click().run()
    for name in state.finding_names[1:]:
        assert at.radio(key=radio_key(state, name)).value == state.model_labels[name]
    next(b for b in at.button if b.label == "Save and sign").click().run()
    assert not at.exception, at.exception
    assert "Saved and signed" in texts(at)
    [row] = corrections()
    assert row.signed_at is not None and row.signed_by == account.user.id
    assert row.label_sources == {n: "doctor" if n == first else "accepted" for n in state.finding_names}

    # Signed: only "Amend and sign" with a reason is offered; without a reason it is refused.
    labels = [b.label for b in at.button]
    assert "Amend and sign" in labels and "Save as reviewed" not in labels and "Save draft" not in labels
    next(b for b in at.button if b.label == "Amend and sign").click().run()
    assert any("Say why" in e.value for e in at.error) and len(corrections()) == 1
    signed = at.session_state[correction_views.STATE]
    at.text_input(key=f"{correction_views.prefix(signed)}reason").set_value("Second look at the apex")
    at.radio(key=radio_key(signed, first)).set_value(cx.PRESENT).run()
    next(b for b in at.button if b.label == "Amend and sign").click().run()
    assert not at.exception, at.exception
    assert "amended and signed" in texts(at)
    old, new = corrections()
    assert (
        new.amends_id == old.id
        and new.amend_reason == "Second look at the apex"
        and new.labels[first] == "present"
    )
    assert "amended, signed" in list(at.dataframe[-1].value["Status"])


def _leave_and_come_back(at: AppTest) -> AppTest:
    """Another page through the menu (which drops the link's query), then back to the editor."""
    at.query_params.clear()
    at.switch_page(session.PATIENTS_PAGE).run()
    assert not at.exception, at.exception
    assert [t.value for t in at.title] == ["Patients"]
    at.switch_page(session.REVIEW_PAGE).run()
    assert not at.exception, at.exception
    return at


def test_a_review_typed_and_left_is_restored_then_saved(
    account: TestAccount, study: dx.DiagnosisView
) -> None:
    at = open_editor(account, study.study_id)
    state = at.session_state[correction_views.STATE]
    name = state.finding_names[0]
    new = cx.ABSENT if state.model_labels[name] == cx.PRESENT else cx.PRESENT
    assert correction_views.RESTORED_NOTE not in texts(at)
    at.radio(key=radio_key(state, name)).set_value(new).run()
    # The note is typed and the doctor leaves at once: its change arrives with the run that opens the page.
    at.text_area(key=f"{correction_views.prefix(state)}note").set_value("Left apex: check again.")
    at = _leave_and_come_back(at)

    assert correction_views.RESTORED_NOTE in texts(at)
    assert at.radio(key=radio_key(state, name)).value == new
    assert at.text_area(key=f"{correction_views.prefix(state)}note").value == "Left apex: check again."
    assert any("You have unsaved changes" in w.value for w in at.warning)
    next(b for b in at.button if b.label == "Save as reviewed").click().run()
    assert not at.exception, at.exception
    [row] = corrections()
    assert row.labels[name] == new and row.note == "Left apex: check again."
    assert row.label_sources[name] == "doctor"
    assert at.session_state[correction_views.DRAFTS] == {}  # saved: the draft is gone
    at = _leave_and_come_back(at)
    assert correction_views.RESTORED_NOTE not in texts(at)


def test_a_restored_draft_can_be_discarded(account: TestAccount, study: dx.DiagnosisView) -> None:
    at = open_editor(account, study.study_id)
    state = at.session_state[correction_views.STATE]
    name = state.finding_names[1]
    at.radio(key=radio_key(state, name)).set_value(cx.UNCERTAIN).run()
    at = _leave_and_come_back(at)
    assert at.radio(key=radio_key(state, name)).value == cx.UNCERTAIN
    next(b for b in at.button if b.label == "Discard draft").click().run()
    assert not at.exception, at.exception
    assert correction_views.RESTORED_NOTE not in texts(at)
    assert at.radio(key=radio_key(state, name)).value == correction_views.NOT_SET
    assert not any("You have unsaved changes" in w.value for w in at.warning)
    at = _leave_and_come_back(at)
    assert correction_views.RESTORED_NOTE not in texts(at) and corrections() == []


def test_drawn_boxes_are_restored_too(account: TestAccount, study: dx.DiagnosisView) -> None:
    at = open_editor(account, study.study_id)
    state = at.session_state[correction_views.STATE]
    at.session_state[f"{correction_views.prefix(state)}boxes"] = [
        {"bbox": [64.0, 32.0, 128.0, 96.0], "label_id": 5, "label": "Pneumothorax"}
    ]
    at.run()
    at = _leave_and_come_back(at)
    assert correction_views.RESTORED_NOTE in texts(at)
    assert "Pneumothorax: x 102–307, y 51–205" in texts(at)
    next(b for b in at.button if b.label == "Save as reviewed").click().run()
    [row] = corrections()
    assert row.boxes == [{"label": "Pneumothorax", "x1": 102.4, "y1": 51.2, "x2": 307.2, "y2": 204.8}]
