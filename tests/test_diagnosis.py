"""The diagnose use cases (core/xray/diagnosis.py) on SQLite and PostgreSQL, with the real active models.

Atomicity is proven by injecting a failure after the files are written and after each row insert: no
orphan file, no partial row, and files that other studies use are never removed.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import func, select, update

from core.auth import AuthenticatedUser
from core.config import get_settings
from core.errors import NotFound, ValidationError
from core.imaging import ImageRejected, storage
from core.ml import inference
from core.records import PatientRecord, VisitInput, add_visit
from core.xray import diagnosis as dx
from db import models
from db import repository as repo
from db.base import utcnow
from db.session import session_scope
from tests.support.stubs import StubDetector
from tests.support.xray_samples import (
    DICOM,
    DICOM_PATIENT_ID,
    NOT_CHEST_DICOM,
    PNG,
    PNGS,
    big_dicom,
    png_variant,
)

MakePatient = Callable[..., PatientRecord]


class Boom(RuntimeError):
    """The injected failure."""


def stored_files() -> list[str]:
    root = get_settings().data_dir
    if not root.exists():
        return []
    # locks/ holds the 256 lock files of core.imaging.storage (made once, empty, never removed)
    return sorted(
        str(p.relative_to(root))
        for p in root.rglob("*")
        if p.is_file() and p.relative_to(root).parts[0] != storage.LOCKS
    )


def counts() -> tuple[int, int]:
    with session_scope() as s:
        return (
            s.scalar(select(func.count()).select_from(models.Study)) or 0,
            s.scalar(select(func.count()).select_from(models.Diagnosis)) or 0,
        )


def audit_actions(patient_id: str) -> list[tuple[str, str]]:
    with session_scope() as s:
        rows = s.scalars(
            select(models.AuditLog)
            .where(models.AuditLog.patient_id == patient_id, models.AuditLog.entity_type == "study")
            .order_by(models.AuditLog.id)
        ).all()
        return [(r.action, r.detail) for r in rows]


@pytest.fixture
def patient(make_patient: MakePatient) -> PatientRecord:
    return make_patient("ED-1", given_name="Ada", family_name="Lovelace")


@pytest.fixture
def stub_detector(monkeypatch: pytest.MonkeyPatch) -> StubDetector:
    stub = StubDetector()
    monkeypatch.setattr(inference, "detector_configured", lambda: True)
    monkeypatch.setattr(inference, "get_detector", lambda _model_dir=None: stub)
    return stub


# ------------------------------------------------------------------ saving


@pytest.mark.usefixtures("patient")
def test_upload_saves_study_diagnosis_files_and_audit(doctor: AuthenticatedUser) -> None:
    data = PNG.read_bytes()
    view = dx.diagnose_upload("ed-1", data, "chest.png", doctor)
    classifier = inference.get_classifier()

    assert view.patient_id == "ED-1" and view.status == "new" and not view.duplicate
    assert view.uploaded_by == doctor.username and view.original_filename == "chest.png"
    assert (view.width, view.height, view.source_format) == (1024, 1024, "png")
    assert [f.name for f in view.findings] == list(classifier.finding_names)
    assert {f.name: f.threshold for f in view.findings} == {f.name: f.threshold for f in classifier.findings}
    assert len(view.top3) == 3 and view.top3[0].probability >= view.top3[-1].probability
    assert all(f.flagged for f in view.flagged)
    assert view.triage_level in dx.triage.LEVELS and view.triage_explanation
    assert view.uncertain == bool(view.uncertain_reason)
    assert view.models["classifier"] == classifier.version
    assert {"read", "inference", "render", "files", "total"} <= set(view.timing_ms)

    assert counts() == (1, 1)
    with session_scope() as s:
        study = s.scalars(select(models.Study)).one()
        diagnosis = s.scalars(select(models.Diagnosis)).one()
        assert study.sha256 == storage.sha256_hex(data)
        assert study.file_path == storage.FileStore.content_path(storage.ORIGINALS, study.sha256, ".png")
        assert diagnosis.probabilities.keys() == set(classifier.finding_names)
        assert diagnosis.classifier_version == classifier.version and diagnosis.created_by == doctor.id
        assert diagnosis.triage_rule["version"] == dx.triage.RULE_VERSION
    store = storage.FileStore()
    assert store.absolute(study.file_path).read_bytes() == data
    for path in (view.image_path, view.preview_path, view.thumbnail_path, view.heatmap_path):
        assert path is not None and path.is_file()
    assert audit_actions("ED-1") == [("diagnose", "")]


@pytest.mark.usefixtures("patient")
def test_the_same_image_twice_is_recognised_not_saved_again(doctor: AuthenticatedUser) -> None:
    first = dx.diagnose_upload("ED-1", PNG.read_bytes(), "a.png", doctor)
    files = stored_files()
    again = dx.diagnose_upload("ED-1", PNG.read_bytes(), "renamed.png", doctor)
    assert again.duplicate and again.study_id == first.study_id and again.original_filename == "a.png"
    assert counts() == (1, 1) and stored_files() == files
    assert [a for a, _ in audit_actions("ED-1")] == ["diagnose", "view"]


def test_one_image_in_two_records_is_two_studies_sharing_the_file(
    make_patient: MakePatient, doctor: AuthenticatedUser
) -> None:
    make_patient("ED-1")
    make_patient("ED-2")
    a = dx.diagnose_upload("ED-1", PNG.read_bytes(), "a.png", doctor)
    files = stored_files()
    b = dx.diagnose_upload("ED-2", PNG.read_bytes(), "a.png", doctor)
    assert a.study_id != b.study_id and not b.duplicate
    assert counts() == (2, 2) and stored_files() == files  # content addressed: nothing new on disk


@pytest.mark.usefixtures("patient")
def test_dicom_naming_another_patient_needs_confirmation(doctor: AuthenticatedUser) -> None:
    data = DICOM.read_bytes()
    with pytest.raises(dx.PatientMismatch) as refused:
        dx.diagnose_upload("ED-1", data, "film.dcm", doctor)
    assert refused.value.dicom_patient_id == DICOM_PATIENT_ID and "ED-1" in str(refused.value)
    assert counts() == (0, 0) and stored_files() == []

    view = dx.diagnose_upload("ED-1", data, "film.dcm", doctor, confirm_patient_mismatch=True)
    assert view.source_format == "dicom" and view.patient_id_differs
    assert view.dicom is not None and view.dicom["patient_id"] == DICOM_PATIENT_ID
    assert view.dicom["modality"] == "DX"
    [(action, detail)] = audit_actions("ED-1")
    assert action == "diagnose" and DICOM_PATIENT_ID in detail and "confirmation" in detail


@pytest.mark.usefixtures("patient")
@pytest.mark.parametrize(
    ("data", "code"),
    [
        (b"", "empty_file"),
        (b"%PDF-1.7 not an x-ray", "unsupported_format"),
        (PNG.read_bytes()[:5000], "corrupt_image"),
        (NOT_CHEST_DICOM.read_bytes(), "not_chest_xray"),
    ],
    ids=["empty", "pdf", "truncated-png", "extremity-dicom"],
)
def test_every_refusal_saves_nothing(doctor: AuthenticatedUser, data: bytes, code: str) -> None:
    with pytest.raises(ImageRejected) as refused:
        dx.diagnose_upload("ED-1", data, "upload", doctor)
    assert refused.value.code == code and refused.value.user_message
    assert counts() == (0, 0) and stored_files() == []
    # Issue 13: the refusal itself is audited (who tried what on whose record), and that is all it leaves.
    assert audit_actions("ED-1") == [("upload_refused", refused.value.user_message)]


def test_unknown_patient_and_foreign_visit_are_refused(
    make_patient: MakePatient, doctor: AuthenticatedUser
) -> None:
    make_patient("ED-1")
    make_patient("ED-2")
    other_visit = add_visit("ED-2", VisitInput(utcnow().date(), "fall"), doctor)
    with pytest.raises(NotFound):
        dx.diagnose_upload("ED-404", PNG.read_bytes(), "a.png", doctor)
    with pytest.raises(ValidationError):
        dx.diagnose_upload("ED-1", PNG.read_bytes(), "a.png", doctor, visit_id=other_visit.id)
    own_visit = add_visit("ED-1", VisitInput(utcnow().date(), "chest pain"), doctor)
    view = dx.diagnose_upload("ED-1", PNG.read_bytes(), "a.png", doctor, visit_id=own_visit.id)
    with session_scope() as s:
        assert repo.get_study(s, view.study_id).visit_pk == own_visit.id  # type: ignore[union-attr]


# ------------------------------------------------------------------ atomicity


def _fail_after(
    monkeypatch: pytest.MonkeyPatch, name: str, when: Callable[..., bool] = lambda **_kw: True
) -> None:
    """Make ``db.repository.<name>`` do its work, then raise (the row is in the transaction)."""
    real = getattr(repo, name)

    def broken(session, **fields):  # type: ignore[no-untyped-def]
        result = real(session, **fields)
        if when(**fields):
            raise Boom(f"injected after {name}")
        return result

    monkeypatch.setattr(repo, name, broken)


@pytest.mark.usefixtures("patient")
@pytest.mark.parametrize(
    "where",
    [
        "after the file write",
        "after the study insert",
        "after the diagnosis insert",
        "after the audit insert",
    ],
)
def test_a_failure_anywhere_leaves_no_orphan_file_and_no_partial_row(
    doctor: AuthenticatedUser, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    if where == "after the file write":
        real_put = storage.StagedFiles.put

        def put_then_fail(self, data, kind, suffix, digest=None):  # type: ignore[no-untyped-def]
            relpath = real_put(self, data, kind, suffix, digest)
            assert storage.FileStore().exists(relpath)  # the file really was written
            if kind == storage.RENDERS and suffix == ".npz":  # the last file of the save
                raise Boom("injected after the file write")
            return relpath

        monkeypatch.setattr(storage.StagedFiles, "put", put_then_fail)
    elif where == "after the study insert":
        _fail_after(monkeypatch, "add_study")
    elif where == "after the diagnosis insert":
        _fail_after(monkeypatch, "add_diagnosis")
    else:
        _fail_after(monkeypatch, "add_audit", when=lambda **kw: kw["action"] == "diagnose")

    with pytest.raises(Boom):
        dx.diagnose_upload("ED-1", PNG.read_bytes(), "a.png", doctor)
    assert stored_files() == []
    assert counts() == (0, 0) and audit_actions("ED-1") == []
    # and the next attempt works normally
    monkeypatch.undo()
    dx.diagnose_upload("ED-1", PNG.read_bytes(), "a.png", doctor)
    assert counts() == (1, 1)


def test_a_failed_save_never_removes_files_another_study_uses(
    make_patient: MakePatient, doctor: AuthenticatedUser, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_patient("ED-1")
    make_patient("ED-2")
    kept = dx.diagnose_upload("ED-1", PNG.read_bytes(), "a.png", doctor)
    files = stored_files()
    _fail_after(monkeypatch, "add_diagnosis")
    with pytest.raises(Boom):
        dx.diagnose_upload("ED-2", PNG.read_bytes(), "a.png", doctor)  # the same bytes: the same files
    assert stored_files() == files and counts() == (1, 1)
    monkeypatch.undo()
    assert dx.get_diagnosis(kept.study_id, doctor).image_path.is_file()


@pytest.mark.usefixtures("patient")
def test_a_concurrent_save_of_the_same_image_is_answered_as_a_duplicate(
    doctor: AuthenticatedUser, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = dx.diagnose_upload("ED-1", PNG.read_bytes(), "a.png", doctor)
    files = stored_files()
    real = repo.find_study
    calls: list[int] = []

    def not_yet(session, patient_pk, sha256):  # type: ignore[no-untyped-def]
        # the first look happens before the other upload committed; the unique constraint catches it
        calls.append(1)
        return None if len(calls) == 1 else real(session, patient_pk, sha256)

    monkeypatch.setattr(repo, "find_study", not_yet)
    again = dx.diagnose_upload("ED-1", PNG.read_bytes(), "b.png", doctor)
    assert again.duplicate and again.study_id == first.study_id
    assert counts() == (1, 1) and stored_files() == files


# ------------------------------------------------------------------ detector, heat maps, big films


@pytest.mark.usefixtures("patient", "stub_detector")
def test_boxes_are_saved_and_drawn(
    doctor: AuthenticatedUser,
) -> None:
    view = dx.diagnose_upload("ED-1", PNG.read_bytes(), "a.png", doctor)
    assert view.models["detector"] == "stub-det" and view.detector_ran
    assert [(b.label, b.confidence) for b in view.boxes] == [("Nodule", 0.81), ("Effusion", 0.42)]
    assert view.boxes[0].x1 == pytest.approx(102.4, abs=0.1)  # in the original's pixels
    assert view.image_path != view.preview_path
    from PIL import Image

    overlay = np.asarray(Image.open(view.image_path).convert("RGB")).astype(int)
    red = (overlay[..., 0] > 200) & (overlay[..., 1] < 90) & (overlay[..., 2] < 90)
    assert red.sum() > 500  # red box outlines and label tags


@pytest.mark.usefixtures("patient")
def test_no_detector_means_no_boxes_and_the_plain_preview(
    doctor: AuthenticatedUser, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(inference, "detector_configured", lambda: False)
    view = dx.diagnose_upload("ED-1", PNG.read_bytes(), "a.png", doctor)
    assert view.boxes == () and not view.detector_ran and view.image_path == view.preview_path


@pytest.mark.usefixtures("patient")
def test_heat_maps_render_once_then_come_from_the_disk_cache(doctor: AuthenticatedUser) -> None:
    from PIL import Image

    view = dx.diagnose_upload("ED-1", PNG.read_bytes(), "a.png", doctor)
    maps = [dx.heatmap_image(view, f.name) for f in view.findings]
    path = maps[0].path
    stamp = path.stat().st_mtime_ns
    assert dx.heatmap_image(view, view.findings[0].name).path == path and path.stat().st_mtime_ns == stamp
    assert path.is_relative_to(get_settings().data_dir / storage.CACHE)
    preview = np.asarray(Image.open(view.preview_path).convert("RGB"), dtype=float)
    for heat in maps:
        shown = np.asarray(Image.open(heat.path).convert("RGB"), dtype=float)
        # share of pixels tinted by the map (JPEG noise stays within a few grey levels); the map peaks at 1,
        # where the film is blended 45 % with the colour scale's brightest colour
        warm = float((np.abs(shown - preview).max(axis=-1) > 20).mean())
        assert (warm < 0.001) if heat.flat else (warm > 0.002), (heat.finding, heat.flat, warm)
    assert not all(h.flat for h in maps)  # some finding's map shows something
    with pytest.raises(NotFound):
        dx.heatmap_image(view, "Not a finding")


@pytest.mark.usefixtures("patient")
def test_a_3000_px_dicom_is_kept_whole_and_shown_from_a_smaller_preview(doctor: AuthenticatedUser) -> None:
    from PIL import Image

    view = dx.diagnose_upload("ED-1", big_dicom(3000), "big.dcm", doctor)
    assert (view.width, view.height) == (3000, 3000) and not view.patient_id_differs
    assert max(Image.open(view.preview_path).size) == dx.PREVIEW_MAX_SIDE
    assert max(Image.open(view.thumbnail_path).size) == dx.THUMBNAIL_SIDE


@pytest.mark.usefixtures("patient")
def test_concurrent_uploads_share_the_models_safely(doctor: AuthenticatedUser) -> None:
    results: list[dx.DiagnosisView] = []
    errors: list[BaseException] = []

    def upload(i: int) -> None:
        try:
            results.append(dx.diagnose_upload("ED-1", png_variant(i), f"{i}.png", doctor))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=upload, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and len({r.study_id for r in results}) == 3
    # the same film with one pixel changed reads (almost) the same in every thread
    first = results[0].findings
    for r in results[1:]:
        assert max(abs(a.probability - b.probability) for a, b in zip(first, r.findings, strict=True)) < 0.02


# ------------------------------------------------------------------ history and worklist


def _set(
    study_id: int, *, level: str | None = None, minutes_ago: float | None = None, status: str | None = None
) -> None:
    """Give a saved study a chosen triage level, age or status (what the model and time would have done)."""
    with session_scope() as s:
        if level is not None:
            s.execute(
                update(models.Diagnosis)
                .where(models.Diagnosis.study_id == study_id)
                .values(triage_level=level)
            )
        values: dict[str, object] = {}
        if minutes_ago is not None:
            values["uploaded_at"] = utcnow() - timedelta(minutes=minutes_ago)
        if status is not None:
            values["status"] = status
        if values:
            s.execute(update(models.Study).where(models.Study.id == study_id).values(**values))


@pytest.mark.usefixtures("patient")
def test_history_is_newest_first_with_thumbnails_and_series_oldest_first(doctor: AuthenticatedUser) -> None:
    views = [dx.diagnose_upload("ED-1", p.read_bytes(), p.name, doctor) for p in PNGS[:3]]
    for minutes, view in zip((30, 20, 10), views, strict=True):
        _set(view.study_id, minutes_ago=minutes)
    history = dx.patient_history("ED-1")
    assert [h.study_id for h in history] == [v.study_id for v in reversed(views)]
    for h, v in zip(history, reversed(views), strict=True):
        assert h.thumbnail_path.is_file() and h.status == "new" and h.triage_level == v.triage_level
        assert [n for n, _ in h.top3] == [f.name for f in v.top3]
    series = dx.probability_series("ED-1")
    n = len(views[0].findings)
    assert len(series) == 3 * n
    assert [p.study_id for p in series[::n]] == [v.study_id for v in views]  # oldest first
    with pytest.raises(NotFound):
        dx.patient_history("ED-404")


def test_worklist_orders_by_triage_level_then_waiting_time(
    make_patient: MakePatient, doctor: AuthenticatedUser
) -> None:
    make_patient("ED-1")
    make_patient("ED-2")
    plan = [  # (patient, level, minutes waiting, status)
        ("ED-1", "routine", 50, "new"),
        ("ED-2", "urgent", 5, "new"),
        ("ED-1", "priority", 40, "new"),
        ("ED-2", "urgent", 15, "new"),
        ("ED-1", "urgent", 60, "reviewed"),  # reviewed: off the worklist
        ("ED-2", "priority", 10, "new"),
    ]
    ids = []
    for i, (pid, level, minutes, status) in enumerate(plan):
        view = dx.diagnose_upload(pid, png_variant(i), f"{i}.png", doctor)
        _set(view.study_id, level=level, minutes_ago=minutes, status=status)
        ids.append(view.study_id)
    items = dx.worklist()
    assert [i.study_id for i in items] == [ids[3], ids[1], ids[2], ids[5], ids[0]]
    assert [i.triage_level for i in items] == ["urgent", "urgent", "priority", "priority", "routine"]
    assert items[0].patient_id == "ED-2" and items[0].patient_name == "LOVELACE, Ada"
    assert len(dx.worklist(limit=2)) == 2


@pytest.mark.usefixtures("patient")
def test_get_diagnosis_audits_the_view_and_refuses_unknown_ids(doctor: AuthenticatedUser) -> None:
    saved = dx.diagnose_upload("ED-1", PNG.read_bytes(), "a.png", doctor)
    shown = dx.get_diagnosis(saved.study_id, doctor)
    assert shown.findings == saved.findings and shown.triage_level == saved.triage_level
    assert [a for a, _ in audit_actions("ED-1")] == ["diagnose", "view"]
    with pytest.raises(NotFound):
        dx.get_diagnosis(999_999, doctor)


@pytest.mark.usefixtures("patient")
def test_stored_paths_are_relative_to_the_data_directory(doctor: AuthenticatedUser) -> None:
    dx.diagnose_upload("ED-1", PNG.read_bytes(), "a.png", doctor)
    with session_scope() as s:
        study = s.scalars(select(models.Study)).one()
    for relpath in (study.file_path, study.preview_path, study.thumbnail_path):
        assert not Path(relpath).is_absolute() and relpath.startswith(("originals/", "renders/"))


# ------------------------------------------------------------------ boxes and the classifier


@pytest.mark.usefixtures("patient")
def test_a_box_shows_the_classifiers_probability_and_disagreements_are_said(
    doctor: AuthenticatedUser,
) -> None:
    from dataclasses import replace

    from core.ml.boxes import Box

    view = dx.diagnose_upload("ED-1", PNG.read_bytes(), "chest.png", doctor)
    probs = {f.name: f for f in view.findings}
    low = min(view.findings, key=lambda f: f.probability)  # surely under its cut
    box = Box.scored("Thing", 0.9, 10, 10, 50, 50)
    view = replace(
        view,
        boxes=(box,),
        box_findings={"Thing": (low.name,), "Other": ("Effusion",)},
        likely=("Effusion",),
        models={**view.models, "detector": "det-x"},
    )
    assert view.box_probability(box) == pytest.approx(low.probability)
    assert view.box_probability(Box.scored("Unknown", 0.5, 0, 0, 1, 1)) is None
    said = view.disagreements
    assert any(f"The detector marked Thing, but the classifier puts {low.label} at only" in s for s in said)
    assert any(f"finds Effusion likely ({probs['Effusion'].probability:.0%})" in s for s in said)


def test_the_card_decides_which_detector_classes_draw_boxes() -> None:
    from core.ml.detector import choose_drawn_classes, drawn_classes

    card = {"classes": [{"name": "A"}, {"name": "B"}], "thresholds": {}}
    assert drawn_classes(card) == ("A", "B")  # cards from before the choice: every class
    card["thresholds"]["drawn_classes"] = ["B"]
    assert drawn_classes(card) == ("B",)
    assert choose_drawn_classes({"A": {"ap50": 0.02}, "B": {"ap50": 0.4}}) == ["B"]
    active = inference.get_detector()
    assert active.drawn == set(active.card["thresholds"]["drawn_classes"]) < set(active.classes)
