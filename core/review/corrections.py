"""Doctors' corrections of the models' reads: the editor's starting point, saving, the review queue, history.

A correction is saved **beside** the model's read, never over it (as MONAI Label keeps ORIGINAL and FINAL
labels apart): each save is a new ``corrections`` row pointing at the diagnosis it corrects, and the newest
row of a study is its current reading. A correction says, for every finding of the classifier, whether it
is ``present``, ``absent`` or ``uncertain``, and lists the boxes (detector classes, in the original image's
pixels). Saving with ``mark_reviewed`` sets the study's status: **reviewed** when the doctor agreed with the
model (the labels are exactly "flagged findings present, the others absent" and the boxes are the model's),
**corrected** when anything differs. The status change is guarded by ``studies.version``: of two doctors
saving the same study at once, the second gets ``ConflictError`` and nothing of the first is lost.

Each public function is one user action with its own transaction (audit row included) and returns frozen
DTOs; nothing here imports Streamlit. Boxes are :class:`core.ml.boxes.Box` (``CorrectedBox`` names the same
type) labelled with the active detector's classes (:func:`box_classes`, from its model card); the review
queue lives in :mod:`core.xray.queues` beside the worklist and is re-exported here.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import flag_modified
from sqlalchemy.orm.exc import StaleDataError

from core.audit import write as write_audit
from core.auth import AuthenticatedUser
from core.errors import ConflictError, NotFound, ValidationError
from core.imaging import storage
from core.ml import inference
from core.ml.boxes import Box
from core.validation import Checker
from core.xray.queues import QueueItem, review_queue
from core.xray.stored import FindingRead, boxes_of, findings_of, patient_name
from db import models
from db import repository as repo
from db.base import utcnow
from db.models import FINDING_LABELS, LABEL_SOURCES
from db.session import session_scope

__all__ = [
    "FINDING_LABELS",
    "MAX_BOXES",
    "CorrectedBox",
    "CorrectionView",
    "EditorState",
    "QueueItem",
    "box_classes",
    "markable_classes",
    "same_boxes",
    "boxes_from_xywh",
    "correction_history",
    "get_editor_state",
    "review_queue",
    "save_correction",
]

PRESENT, ABSENT, UNCERTAIN = FINDING_LABELS
MAX_BOXES = 50
#: A box within this many original pixels of the model's counts as the model's: the editor hands boxes back
#: as floats scaled to and from its canvas, and the model's boxes are stored to 0.1 px.
BOX_TOLERANCE_PX = 1.0
CONFLICT = "This study was changed by someone else since you opened it"
AMEND_NEEDS_SIGNED_REASON = (
    "This film has a signed reading: it can be changed only by a new signed reading with a reason "
    "(use \u201cAmend and sign\u201d and say why)."
)
SIGN_NEEDS_EVERY_FINDING = (
    "Set every finding (present, absent or uncertain), or accept the model's suggestions, before signing."
)


#: A box as a doctor left it: a :class:`~core.ml.boxes.Box` without a score, in the original image's pixels.
CorrectedBox = Box


def box_classes() -> tuple[str, ...]:
    """The labels a box can carry: the active detector's classes, from its model card (none without one)."""
    return inference.detector_classes()


def markable_classes(finding_names: Iterable[str]) -> tuple[str, ...]:
    """The labels a doctor's box can carry: the detector's classes, then the classifier's findings the
    detector does not know (e.g. Consolidation, Pneumonia); the training export maps only the detector's
    classes to YOLO and keeps the rest in a JSON side file."""
    detector = box_classes()
    known = {c.casefold() for c in detector}
    return detector + tuple(n for n in finding_names if n.casefold() not in known)


def __getattr__(name: str) -> Any:
    # BOX_CLASSES, as callers knew it, read from the active detector's card when asked for.
    if name == "BOX_CLASSES":
        return box_classes()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# ---------------------------------------------------------------- DTOs


@dataclass(frozen=True)
class EditorState:
    """What the correction editor opens with: the model's read (never changed) and the reading to edit,
    pre-filled from the newest correction, else from the model. Pass ``study_version`` back on save."""

    study_id: int
    diagnosis_id: int
    patient_id: str
    patient_name: str
    status: str
    study_version: int
    width: int  # the frame of every box
    height: int
    preview_path: Path  # the display image (at most 2048 px; scale boxes by its size / width)
    model_image_path: Path  # the display image with the model's boxes drawn (the preview if it had none)
    findings: tuple[FindingRead, ...]  # the model's read, model card order
    model_boxes: tuple[Box, ...]  # the model's detections
    detector_ran: bool
    labels: dict[str, str]  # finding -> present | absent | uncertain
    boxes: tuple[CorrectedBox, ...]
    note: str
    based_on: int | None  # the correction pre-filled from; None: the model's read
    based_on_by: str = ""
    based_on_at: datetime | None = None
    unusable_model_boxes: int = 0  # model boxes whose label is not a detector class (left out of the editor)
    sources: dict[str, str] = field(default_factory=dict)  # finding -> LABEL_SOURCES of ``labels``
    signed: bool = False  # ``based_on`` is a signed reading: only a signed amendment with a reason may follow

    @property
    def finding_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.findings)

    @property
    def model_labels(self) -> dict[str, str]:
        """The model's read as labels: findings over their thresholds present, the others absent."""
        return {f.name: PRESENT if f.flagged else ABSENT for f in self.findings}


@dataclass(frozen=True)
class CorrectionView:
    """One saved correction, with how it differs from the model's read it points at."""

    id: int
    study_id: int
    diagnosis_id: int
    labels: dict[str, str]
    boxes: tuple[CorrectedBox, ...]
    note: str
    reviewed: bool
    status: str  # the study's status after this save
    created_by: str
    created_at: datetime
    changed_findings: tuple[str, ...]  # findings labelled otherwise than the model read them
    boxes_changed: bool
    study_version: int | None = None  # the study's version after the save (set by save_correction only)
    signed: bool = False
    amends: int | None = None  # the signed reading this one amends
    amend_reason: str = ""


# ---------------------------------------------------------------- helpers


def _model_labels(diagnosis: models.Diagnosis) -> dict[str, str]:
    flagged = set(diagnosis.flagged)
    return {t["name"]: PRESENT if t["name"] in flagged else ABSENT for t in diagnosis.thresholds}


def _ordered(labels: Mapping[str, str], diagnosis: models.Diagnosis) -> dict[str, str]:
    """Stored labels in model card order (PostgreSQL's JSONB does not keep an object's key order)."""
    names = [t["name"] for t in diagnosis.thresholds]
    return {**{n: labels[n] for n in names if n in labels}, **labels}


def _editable_model_boxes(diagnosis: models.Diagnosis) -> tuple[CorrectedBox, ...]:
    classes = box_classes()
    return tuple(Box.from_model(b) for b in boxes_of(diagnosis) if b.label in classes)


def _stored_boxes(values: Iterable[Mapping[str, Any]]) -> tuple[CorrectedBox, ...]:
    return tuple(Box.from_json(b) for b in values)


def same_boxes(a: Sequence[CorrectedBox], b: Sequence[CorrectedBox]) -> bool:
    """Whether two box lists are the same boxes (any order), each corner within BOX_TOLERANCE_PX."""
    if len(a) != len(b):
        return False
    unmatched = list(b)
    for box in a:
        match = next(
            (
                other
                for other in unmatched
                if other.label == box.label
                and all(
                    abs(p - q) <= BOX_TOLERANCE_PX
                    for p, q in zip(
                        (box.x1, box.y1, box.x2, box.y2),
                        (other.x1, other.y1, other.x2, other.y2),
                        strict=True,
                    )
                )
            ),
            None,
        )
        if match is None:
            return False
        unmatched.remove(match)
    return True


def _view(
    c: models.Correction, username: str, diagnosis: models.Diagnosis, study_version: int | None = None
) -> CorrectionView:
    model = _model_labels(diagnosis)
    boxes = _stored_boxes(c.boxes)
    return CorrectionView(
        id=c.id,
        study_id=c.study_id,
        diagnosis_id=c.diagnosis_id,
        labels=_ordered(c.labels, diagnosis),
        boxes=boxes,
        note=c.note,
        reviewed=c.reviewed,
        status=c.status,
        created_by=username,
        created_at=c.created_at,
        changed_findings=tuple(name for name in model if c.labels.get(name) != model[name]),
        boxes_changed=not same_boxes(boxes, _editable_model_boxes(diagnosis)),
        study_version=study_version,
        signed=c.signed_at is not None,
        amends=c.amends_id,
        amend_reason=c.amend_reason or "",
    )


def _load(session: Session, study_id: int) -> tuple[models.Study, models.Diagnosis]:
    study = repo.get_study(session, study_id)
    if study is None:
        raise NotFound(f"No X-ray study with ID {study_id}.")
    diagnosis = repo.latest_diagnosis(session, study.id)
    if diagnosis is None:  # cannot happen through diagnose_upload, which saves both together
        raise NotFound(f"Study {study_id} has no diagnosis to correct.")
    return study, diagnosis


def _check_version(current: int, expected: int) -> None:
    if current != expected:
        raise StaleDataError("study version changed")


def _conflict(study_id: int) -> ConflictError:
    """The message for a lost race, naming the save that won it when there is one."""
    with session_scope() as session:
        rows = repo.corrections_of_study(session, study_id)
        if rows:
            c, username = rows[0]
            who = f" ({username} saved a reading at {c.created_at:%Y-%m-%d %H:%M} UTC)"
        else:
            who = ""
    return ConflictError(f"{CONFLICT}{who} — reload to see the latest reading; your changes were not saved.")


def _check_labels(labels: Mapping[str, str], names: Sequence[str]) -> list[str]:
    problems = [f"{name!r} is not a finding of this read." for name in labels if name not in names]
    missing = [name for name in names if name not in labels]
    if missing:
        problems.append(f"No label for {', '.join(missing)}.")
    problems += [
        f"{labels[name]!r} is not a label for {name}: choose {', '.join(FINDING_LABELS)}."
        for name in names
        if name in labels and labels[name] not in FINDING_LABELS
    ]
    return problems


def _check_boxes(
    boxes: Sequence[CorrectedBox | Mapping[str, Any]],
    width: int,
    height: int,
    finding_names: Sequence[str] = (),
) -> tuple[list[CorrectedBox], list[str]]:
    if len(boxes) > MAX_BOXES:
        return [], [f"At most {MAX_BOXES} boxes can be saved (got {len(boxes)})."]
    checked: list[CorrectedBox] = []
    problems: list[str] = []
    classes = markable_classes(finding_names)
    for n, raw in enumerate(boxes, start=1):
        try:
            box = raw if isinstance(raw, CorrectedBox) else _stored_boxes([raw])[0]
            coords = [float(v) for v in (box.x1, box.y1, box.x2, box.y2)]
        except (KeyError, TypeError, ValueError):
            problems.append(f"Box {n} is not a label with four coordinates.")
            continue
        x1, y1, x2, y2 = coords
        if box.label not in classes:
            problems.append(f"Box {n}: {box.label!r} is not a box class ({', '.join(classes)}).")
        elif not all(math.isfinite(v) for v in coords):
            problems.append(f"Box {n} has a coordinate that is not a number.")
        elif x2 <= x1 or y2 <= y1:
            problems.append(f"Box {n} ({box.label}) has no area.")
        elif x1 < 0 or y1 < 0 or x2 > width or y2 > height:
            problems.append(f"Box {n} ({box.label}) reaches outside the image ({width} x {height} px).")
        else:
            checked.append(CorrectedBox(box.label, *(round(v, 1) for v in coords)))
    return checked, problems


# ---------------------------------------------------------------- use cases


def boxes_from_xywh(
    items: Iterable[Mapping[str, Any]], scale_x: float, scale_y: float, width: int, height: int
) -> tuple[CorrectedBox, ...]:
    """Boxes an editor drew on a scaled copy of the image (``{"label", "bbox": [x, y, w, h]}``, with
    ``scale_x``/``scale_y`` = original pixels per editor pixel along each axis) as boxes in the original
    frame, rounded to 0.1 px.

    Coordinates past an edge by at most one pixel (float noise of the scaling) are pulled onto the edge;
    anything further out is left for :func:`save_correction` to refuse.
    """
    result = []
    for item in items:
        x, w = (float(v) * scale_x for v in (item["bbox"][0], item["bbox"][2]))
        y, h = (float(v) * scale_y for v in (item["bbox"][1], item["bbox"][3]))
        x1, y1, x2, y2 = x, y, x + w, y + h
        x1, y1 = (0.0 if -1.0 <= v < 0 else v for v in (x1, y1))
        x2 = float(width) if width < x2 <= width + 1.0 else x2
        y2 = float(height) if height < y2 <= height + 1.0 else y2
        result.append(CorrectedBox(str(item["label"]), *(round(v, 1) for v in (x1, y1, x2, y2))))
    return tuple(result)


def get_editor_state(study_id: int, actor: AuthenticatedUser, *, audit: bool = True) -> EditorState:
    """The correction editor's starting point for a study; writes a 'view' audit row unless ``audit`` is
    false (the same opening, fetched again after a save). ``NotFound`` for an unknown study."""
    store = storage.FileStore()
    with session_scope() as session:
        study, diagnosis = _load(session, study_id)
        patient = repo.get_patient_by_pk(session, study.patient_pk)
        rows = repo.corrections_of_study(session, study.id)
        model_boxes = boxes_of(diagnosis)
        if rows:
            latest, username = rows[0]
            labels, boxes, note = _ordered(latest.labels, diagnosis), _stored_boxes(latest.boxes), latest.note
            based_on, based_on_by, based_on_at = latest.id, username, latest.created_at
            sources = dict.fromkeys(labels, "doctor")
            sources.update({k: str(v) for k, v in (latest.label_sources or {}).items()})
            signed = latest.signed_at is not None
        else:
            labels, boxes, note = _model_labels(diagnosis), _editable_model_boxes(diagnosis), ""
            based_on, based_on_by, based_on_at = None, "", None
            sources, signed = dict.fromkeys(labels, "model"), False
        if audit:
            write_audit(
                session,
                actor,
                "view",
                "study",
                study.id,
                patient_id=patient.patient_id,
                detail="correction editor",
            )
        return EditorState(
            study_id=study.id,
            diagnosis_id=diagnosis.id,
            patient_id=patient.patient_id,
            patient_name=patient_name(patient),
            status=study.status,
            study_version=study.version,
            width=study.width,
            height=study.height,
            preview_path=store.absolute(study.preview_path),
            model_image_path=store.absolute(diagnosis.overlay_path or study.preview_path),
            findings=findings_of(diagnosis),
            model_boxes=model_boxes,
            detector_ran=diagnosis.detector_version is not None,
            labels=labels,
            boxes=boxes,
            note=note,
            based_on=based_on,
            based_on_by=based_on_by,
            based_on_at=based_on_at,
            unusable_model_boxes=sum(b.label not in box_classes() for b in model_boxes),
            sources=sources,
            signed=signed,
        )


def save_correction(
    study_id: int,
    labels: Mapping[str, str],
    boxes: Sequence[CorrectedBox | Mapping[str, Any]],
    note: str,
    expected_version: int,
    actor: AuthenticatedUser,
    mark_reviewed: bool = True,
    *,
    sources: Mapping[str, str] | None = None,
    sign: bool = False,
    amend_reason: str = "",
) -> CorrectionView:
    """Save a doctor's reading of a study as a new correction row, beside the model's read.

    ``labels`` must give every finding of the study's diagnosis one of ``FINDING_LABELS``; ``boxes`` are
    :class:`CorrectedBox` (or ``{"label", "x1", "y1", "x2", "y2"}``) in the original image's pixels, inside
    the image, with an area, labelled with a detector class (:func:`box_classes`); ``note`` is free text.
    With ``mark_reviewed`` the study becomes 'reviewed' (agrees with the model) or 'corrected'; without it
    the row is a draft and the status stays. Raises ``ValidationError`` (nothing saved), ``NotFound``, or
    ``ConflictError`` when the study's version is no longer ``expected_version`` (someone saved meanwhile).

    ``sources`` says per finding who set its label (``LABEL_SOURCES``: ``doctor``, ``accepted`` = the
    model's suggestion accepted by an explicit action, ``model`` = left unset, the suggestion stored only as
    context); ``None`` means the doctor set every label. ``sign`` saves a signed reading (the doctor is the
    reader of record; every finding must be set or accepted). Once a study has a signed reading, the only
    save allowed is a new signed one with an ``amend_reason``; it records the reading it amends.
    """
    try:
        with session_scope() as session:
            study, diagnosis = _load(session, study_id)
            names = [t["name"] for t in diagnosis.thresholds]
            checker = Checker()
            clean_note = checker.text("note", note, "correction_note", label="The note", multiline=True)
            errors = dict(checker.errors)
            label_problems = _check_labels(labels, names)
            checked_boxes, box_problems = _check_boxes(list(boxes), study.width, study.height, names)
            clean_sources = dict.fromkeys(names, "doctor") if sources is None else dict(sources)
            source_problems = [
                f"{name}: {value!r} is not a label source ({', '.join(LABEL_SOURCES)})."
                for name, value in clean_sources.items()
                if name in names and value not in LABEL_SOURCES
            ] + [f"{name!r} is not a finding of this read." for name in clean_sources if name not in names]
            clean_sources = {name: clean_sources.get(name, "model") for name in names}
            if sign and any(v == "model" for v in clean_sources.values()):
                source_problems.append(SIGN_NEEDS_EVERY_FINDING)
            if source_problems:
                errors["sources"] = " ".join(source_problems)
            signed_current = repo.current_signed_correction(session, study.id)
            reason = amend_reason.strip()
            if signed_current is not None:
                if not (sign and mark_reviewed):
                    errors["sign"] = AMEND_NEEDS_SIGNED_REASON
                elif not reason:
                    errors["amend_reason"] = "Say why you amend the signed reading."
                else:
                    reason = checker.text(
                        "amend_reason", reason, "amend_reason", label="The reason", multiline=True
                    )
                    errors.update(checker.errors)
            if sign and not mark_reviewed:
                errors["sign"] = "A draft cannot be signed: save it as reviewed."
            if label_problems:
                errors["labels"] = " ".join(label_problems)
            if box_problems:
                errors["boxes"] = " ".join(box_problems)
            if errors:
                raise ValidationError(errors)
            clean_labels = {name: labels[name] for name in names}  # model card order
            _check_version(study.version, expected_version)

            model_labels = _model_labels(diagnosis)
            agrees = clean_labels == model_labels and same_boxes(
                checked_boxes, _editable_model_boxes(diagnosis)
            )
            before = study.status
            study.status = ("reviewed" if agrees else "corrected") if mark_reviewed else study.status
            # Every save bumps the version, even a draft that leaves the status as it was: the UPDATE's
            # "WHERE version = ?" is what turns a concurrent save into a conflict instead of a lost reading.
            flag_modified(study, "status")
            session.flush()
            correction = repo.add_correction(
                session,
                study_id=study.id,
                diagnosis_id=diagnosis.id,
                labels=clean_labels,
                boxes=[b.to_json() for b in checked_boxes],
                note=clean_note,
                reviewed=mark_reviewed,
                status=study.status,
                created_by=actor.id,
                label_sources=clean_sources,
                signed_at=utcnow() if sign else None,
                signed_by=actor.id if sign else None,
                amends_id=signed_current.id if signed_current is not None else None,
                amend_reason=reason if signed_current is not None else None,
            )
            view = _view(correction, actor.username, diagnosis, study.version)
            patient = repo.get_patient_by_pk(session, study.patient_pk)
            write_audit(
                session,
                actor,
                ("amend" if signed_current is not None else "sign") if sign else "correct",
                "study",
                study.id,
                patient_id=patient.patient_id,
                before={"status": before},
                after={
                    "status": study.status,
                    "correction_id": correction.id,
                    "diagnosis_id": diagnosis.id,
                    "reviewed": mark_reviewed,
                    "changed_findings": {n: clean_labels[n] for n in view.changed_findings},
                    "boxes": len(checked_boxes),
                    "boxes_changed": view.boxes_changed,
                    "signed": sign,
                    "amends": correction.amends_id,
                    "amend_reason": correction.amend_reason,
                    "label_sources": {
                        src: sum(v == src for v in clean_sources.values()) for src in LABEL_SOURCES
                    },
                },
            )
            saved = view
    except StaleDataError as exc:
        raise _conflict(study_id) from exc
    if sign:  # a signed read of a film from the PACS goes back to it (never fails the sign-off)
        from core.pacs.sync import send_after_sign_off

        send_after_sign_off(study_id, actor)
    return saved


def correction_history(study_id: int) -> tuple[CorrectionView, ...]:
    """Every correction of a study, newest first (the first is the current reading). ``NotFound`` for an
    unknown study; an empty tuple when nobody has corrected it."""
    with session_scope() as session:
        study, _ = _load(session, study_id)
        diagnoses: dict[int, models.Diagnosis] = {}
        views = []
        for c, username in repo.corrections_of_study(session, study.id):
            if c.diagnosis_id not in diagnoses:
                diagnoses[c.diagnosis_id] = session.get(models.Diagnosis, c.diagnosis_id)  # type: ignore[assignment]
            views.append(_view(c, username, diagnoses[c.diagnosis_id]))
        return tuple(views)
