"""The export of reviewed studies as a training set (core/review/export.py, ``python -m core corrections export``) on
SQLite and PostgreSQL: which studies leave, the files, the CSV values, the YOLO lines, the manifest's hashes,
the refusals, and the command line."""

from __future__ import annotations

import csv
import hashlib
import hmac
import io
import json
import stat
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sqlalchemy import select

from core import imaging
from core.__main__ import main
from core.auth import AuthenticatedUser
from core.config import get_settings
from core.errors import PermissionDenied
from core.imaging import storage
from core.ml import inference
from core.records import PatientRecord
from core.review import corrections as cx
from core.review import export
from core.xray import diagnosis as dx
from db import models
from db.session import session_scope
from tests.support.db import TestAccount
from tests.support.stubs import StubDetector
from tests.support.xray_samples import PNG, png_variant

MakePatient = Callable[..., PatientRecord]
MakeUser = Callable[..., TestAccount]


@pytest.fixture(autouse=True)
def stub_detector(monkeypatch: pytest.MonkeyPatch) -> StubDetector:
    stub = StubDetector()
    monkeypatch.setattr(inference, "detector_configured", lambda: True)
    monkeypatch.setattr(inference, "get_detector", lambda _model_dir=None: stub)
    return stub


def wide_png(width: int = 1600, height: int = 1250) -> bytes:
    """The sample film resized to a non-square frame larger than the export's 1024 px."""
    grey = Image.open(PNG).convert("L").resize((width, height), Image.Resampling.BILINEAR)
    out = io.BytesIO()
    grey.save(out, format="PNG")
    return out.getvalue()


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def correct(
    study_id: int, actor: AuthenticatedUser, boxes: list[cx.CorrectedBox], **labels: str
) -> cx.CorrectionView:
    state = cx.get_editor_state(study_id, actor, audit=False)
    return cx.save_correction(study_id, {**state.labels, **labels}, boxes, "", state.study_version, actor)


@pytest.fixture
def reviewed(make_patient: MakePatient, doctor: AuthenticatedUser) -> dict[str, dx.DiagnosisView]:
    """ED-1: a corrected wide film with two boxes, a reviewed film, a film with only a draft, an untouched
    film. ED-2: nothing reviewed."""
    make_patient("ED-1")
    make_patient("ED-2")
    films = {
        "wide": dx.diagnose_upload("ED-1", wide_png(), "wide.png", doctor),
        "agreed": dx.diagnose_upload("ED-1", png_variant(1), "agreed.png", doctor),
        "draft": dx.diagnose_upload("ED-1", png_variant(2), "draft.png", doctor),
        "new": dx.diagnose_upload("ED-1", png_variant(3), "new.png", doctor),
        "other": dx.diagnose_upload("ED-2", png_variant(4), "other.png", doctor),
    }
    names = [f.name for f in films["wide"].findings]
    correct(
        films["wide"].study_id,
        doctor,
        [
            cx.CorrectedBox("Effusion", 160, 125, 800, 625),
            cx.CorrectedBox("Fracture", 1500, 1000, 1600, 1250),
        ],
        **{names[0]: cx.PRESENT, names[1]: cx.ABSENT, names[2]: cx.UNCERTAIN},
    )
    state = cx.get_editor_state(films["agreed"].study_id, doctor, audit=False)
    cx.save_correction(
        films["agreed"].study_id, dict(state.labels), state.boxes, "", state.study_version, doctor
    )
    state = cx.get_editor_state(films["draft"].study_id, doctor, audit=False)
    cx.save_correction(
        films["draft"].study_id, dict(state.labels), [], "", state.study_version, doctor, mark_reviewed=False
    )
    return films


def read_labels(out: Path) -> list[dict[str, str]]:
    with (out / "labels.csv").open(newline="") as f:
        return list(csv.DictReader(f))


def test_export_writes_images_labels_yolo_and_manifest(
    reviewed: dict[str, dx.DiagnosisView], admin: AuthenticatedUser, doctor: AuthenticatedUser, tmp_path: Path
) -> None:
    out = tmp_path / "export"
    manifest = export.export_reviewed(out, admin)
    version, findings = export.classifier_findings()
    assert findings == tuple(f.name for f in inference.get_classifier().findings)
    wide, agreed = reviewed["wide"], reviewed["agreed"]

    # labels.csv: the two reviewed studies (never a draft, an untouched or an unreviewed study).
    with (out / "labels.csv").open(newline="") as f:
        header = next(csv.reader(f))
    assert header == [*export.LEADING_COLUMNS, *findings, "signed", *(f"{f}_source" for f in findings)]
    rows = {int(r["study_id"]): r for r in read_labels(out)}
    assert set(rows) == {wide.study_id, agreed.study_id}
    history = cx.correction_history(wide.study_id)[0]
    row = rows[wide.study_id]
    assert row["image"] == f"images/{wide.sha256}.png" and row["correction_id"] == str(history.id)
    # issue 13: an HMAC keyed with the site's secret, not a plain sha256 anyone can recompute from an ID
    assert row["patient_key"] == hmac.new(export.site_secret(), b"ED-1", hashlib.sha256).hexdigest()
    assert row["patient_key"] != hashlib.sha256(b"ED-1").hexdigest() and "ED-1" not in json.dumps(row)
    secret_file = get_settings().var_dir / export.SITE_SECRET_FILE
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
    # the export is the service account's alone: folders 0700, files 0600
    assert stat.S_IMODE(out.stat().st_mode) == 0o700
    assert {stat.S_IMODE(p.stat().st_mode) for p in out.rglob("*") if p.is_file()} == {0o600}
    assert row["reviewed_by"] == doctor.username and row["reviewed_at"] == history.created_at.isoformat()
    assert (row[findings[0]], row[findings[1]], row[findings[2]]) == ("1", "0", "")
    assert all(row[f] == ("1" if history.labels[f] == cx.PRESENT else "0") for f in findings[3:])
    agreed_row = rows[agreed.study_id]
    assert [agreed_row[f] for f in findings] == ["1" if f.flagged else "0" for f in agreed.findings]

    # images: 8-bit grey, longest side 1024, the decoded original.
    with Image.open(out / row["image"]) as image:
        assert image.mode == "L" and image.size == (1024, 800)
        pixels = np.asarray(image, dtype=np.float32)
    original = imaging.read_image(storage.FileStore().absolute(_file_path(wide.study_id)).read_bytes())
    expected = np.asarray(
        Image.fromarray(imaging.to_uint8(original.pixels)).resize((1024, 800), Image.Resampling.LANCZOS),
        dtype=np.float32,
    )
    assert np.abs(pixels - expected).max() == 0
    with Image.open(out / f"images/{agreed.sha256}.png") as image:
        assert image.mode == "L" and image.size == (1024, 1024)  # not enlarged

    # YOLO: same image, normalised boxes with class indexes, an empty label file for a study without boxes.
    assert (out / "yolo/images" / f"{wide.sha256}.png").read_bytes() == (out / row["image"]).read_bytes()
    assert (out / "yolo/classes.txt").read_text().splitlines() == list(cx.BOX_CLASSES)
    lines = (out / "yolo/labels" / f"{wide.sha256}.txt").read_text().splitlines()
    effusion, fracture = cx.BOX_CLASSES.index("Effusion"), cx.BOX_CLASSES.index("Fracture")
    assert lines == [
        f"{effusion} 0.300000 0.300000 0.400000 0.400000",  # (160,125)-(800,625) in a 1600 x 1250 frame
        f"{fracture} 0.968750 0.900000 0.062500 0.200000",
    ]
    agreed_boxes = cx.correction_history(agreed.study_id)[0].boxes
    agreed_lines = (out / "yolo/labels" / f"{agreed.sha256}.txt").read_text().splitlines()
    assert len(agreed_lines) == len(agreed_boxes) == 1  # the stub's Effusion (its "Nodule" is no class)

    # manifest: counts, lists, and the hash of every other file.
    document = json.loads((out / "manifest.json").read_text())
    assert document == manifest.document and manifest.out_dir == out
    assert document["format_version"] == 1 and document["created_by"] == admin.username
    assert document["classifier_findings"] == list(findings) and document["classifier_version"] == version
    assert document["detector_classes"] == list(cx.BOX_CLASSES) and document["skipped"] == []
    counts = document["counts"]
    assert counts["studies"] == 2 and counts["boxes"] == 3 and counts["skipped"] == 0
    assert counts["boxes_per_class"]["Effusion"] == 2 and counts["boxes_per_class"]["Fracture"] == 1
    assert counts["positives"] == {f: sum(r[f] == "1" for r in rows.values()) for f in findings}
    written = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()} - {"manifest.json"}
    assert set(document["files"]) == written
    assert all(sha256(out / rel) == digest for rel, digest in document["files"].items())
    assert not list(tmp_path.glob(".tmp-*"))  # the temporary folder was renamed into place

    with session_scope() as s:
        [entry] = s.scalars(select(models.AuditLog).where(models.AuditLog.action == "export")).all()
        assert entry.username == admin.username and entry.after is not None
        assert entry.after["studies"] == 2 and entry.after["out_dir"] == str(out)


def _file_path(study_id: int) -> str:
    with session_scope() as s:
        study = s.get(models.Study, study_id)
        assert study is not None
        return study.file_path


@pytest.mark.usefixtures("reviewed")
def test_the_retraining_reader_accepts_the_export(admin: AuthenticatedUser, tmp_path: Path) -> None:
    reader = pytest.importorskip("core.training.corrections_data")  # the retraining side (another change)
    _, findings = export.classifier_findings()
    export.export_reviewed(tmp_path / "out", admin)
    read = reader.read_export(tmp_path / "out", findings, cx.BOX_CLASSES)
    assert len(read) == 2 and read.label_matrix().shape == (2, len(findings))


def test_an_image_in_two_records_is_exported_once(
    make_patient: MakePatient, doctor: AuthenticatedUser, admin: AuthenticatedUser, tmp_path: Path
) -> None:
    make_patient("ED-1")
    make_patient("ED-2")
    first = dx.diagnose_upload("ED-1", png_variant(7), "a.png", doctor)
    second = dx.diagnose_upload("ED-2", png_variant(7), "a.png", doctor)
    correct(first.study_id, doctor, [])
    correct(second.study_id, doctor, [cx.CorrectedBox("Effusion", 10, 10, 100, 100)])
    manifest = export.export_reviewed(tmp_path / "out", admin)
    assert [int(r["study_id"]) for r in read_labels(tmp_path / "out")] == [second.study_id]  # the newest
    assert manifest.skipped == (
        {"study_id": first.study_id, "reason": f"same image as study {second.study_id}"},
    )
    assert manifest.document["counts"]["skipped"] == 1


def test_a_study_whose_original_is_gone_is_left_out_with_the_reason(
    reviewed: dict[str, dx.DiagnosisView], admin: AuthenticatedUser, tmp_path: Path
) -> None:
    storage.FileStore().absolute(_file_path(reviewed["agreed"].study_id)).unlink()
    manifest = export.export_reviewed(tmp_path / "out", admin)
    assert manifest.studies == 1 and manifest.skipped[0]["study_id"] == reviewed["agreed"].study_id
    assert "not readable" in manifest.skipped[0]["reason"]


@pytest.mark.usefixtures("database")
def test_nothing_reviewed_is_an_empty_export(admin: AuthenticatedUser, tmp_path: Path) -> None:
    manifest = export.export_reviewed(tmp_path / "out", admin)
    assert manifest.studies == 0 and read_labels(tmp_path / "out") == []
    assert (tmp_path / "out/yolo/classes.txt").is_file()


@pytest.mark.usefixtures("reviewed")
def test_refusals(admin: AuthenticatedUser, doctor: AuthenticatedUser, tmp_path: Path) -> None:
    with pytest.raises(PermissionDenied):
        export.export_reviewed(tmp_path / "by-doctor", doctor)
    assert not (tmp_path / "by-doctor").exists()
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("keep me")
    with pytest.raises(export.ExportError, match="not an empty folder"):
        export.export_reviewed(busy, admin)
    assert [p.name for p in busy.iterdir()] == ["notes.txt"]
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(export.ExportError):
        export.export_reviewed(a_file, admin)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert export.export_reviewed(empty, admin).studies == 2  # an empty folder is filled


@pytest.mark.usefixtures("reviewed")
def test_a_failure_leaves_no_folder(
    admin: AuthenticatedUser,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("disk full")

    monkeypatch.setattr(export, "_yolo_lines", broken)
    with pytest.raises(RuntimeError):
        export.export_reviewed(tmp_path / "exports" / "out", admin)
    assert list((tmp_path / "exports").iterdir()) == []  # neither the folder nor its temporary twin


@pytest.mark.usefixtures("reviewed")
def test_zip_export_holds_every_file(admin: AuthenticatedUser) -> None:
    out = export.default_export_dir()
    assert out.parent == storage.FileStore().root / export.EXPORTS
    export.export_reviewed(out, admin)
    archive = export.zip_export(out)
    assert archive == out.with_name(out.name + ".zip")
    with zipfile.ZipFile(archive) as z:
        names = {n.removeprefix(f"{out.name}/") for n in z.namelist()}
        manifest = json.loads(z.read(f"{out.name}/manifest.json"))
    assert names == set(manifest["files"]) | {"manifest.json"}


@pytest.mark.usefixtures("reviewed")
def test_command_line(
    admin: AuthenticatedUser,
    doctor: AuthenticatedUser,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "cli"
    assert main(["corrections", "export", str(out), "--user", admin.username]) == 0
    assert f"Exported 2 reviewed studies with 3 boxes to {out}" in capsys.readouterr().out
    assert (out / "manifest.json").is_file()
    assert main(["corrections", "export", str(out), "--user", admin.username]) == 1
    assert "not an empty folder" in capsys.readouterr().err
    assert main(["corrections", "export", str(tmp_path / "x"), "--user", doctor.username]) == 1
    assert "administrator" in capsys.readouterr().err
    assert main(["corrections", "export", str(tmp_path / "y"), "--user", "nobody"]) == 2
    assert "No active user" in capsys.readouterr().err


def test_export_marks_label_provenance_and_keeps_unknown_box_classes_aside(
    make_patient: MakePatient, doctor: AuthenticatedUser, admin: AuthenticatedUser, tmp_path: Path
) -> None:
    """Issue 12: a label the doctor left unset is no label; accepted and doctor-set labels are marked; a
    signed reading says so; a box of a finding the detector does not know goes to extra_boxes.json."""
    make_patient("ED-1")
    film = dx.diagnose_upload("ED-1", png_variant(5), "film.png", doctor)
    state = cx.get_editor_state(film.study_id, doctor, audit=False)
    first, second, third, *rest = state.finding_names
    extra = next(n for n in cx.markable_classes(state.finding_names) if n not in cx.BOX_CLASSES)
    sources = {first: "doctor", second: "accepted", third: "model", **dict.fromkeys(rest, "accepted")}
    labels = {**state.model_labels, first: cx.PRESENT, third: cx.PRESENT}
    cx.save_correction(
        film.study_id,
        labels,
        [cx.CorrectedBox("Effusion", 10, 10, 100, 100), cx.CorrectedBox(extra, 200, 200, 400, 300)],
        "",
        state.study_version,
        doctor,
        sources=sources,
    )
    state = cx.get_editor_state(film.study_id, doctor, audit=False)
    signed_sources = {**sources, third: "doctor"}
    cx.save_correction(
        film.study_id,
        {**labels, third: cx.ABSENT},
        state.boxes,
        "",
        state.study_version,
        doctor,
        sources=signed_sources,
        sign=True,
    )
    manifest = export.export_reviewed(tmp_path / "out", admin)
    [row] = read_labels(tmp_path / "out")
    assert row["signed"] == "1"
    assert [row[f"{f}_source"] for f in state.finding_names] == [
        signed_sources[f] for f in state.finding_names
    ]
    assert row[first] == "1" and row[third] == "0"
    assert row[second] == ("1" if state.model_labels[second] == cx.PRESENT else "0")
    counts = manifest.document["counts"]
    assert counts["label_sources"]["doctor"] == 2 and counts["label_sources"]["model"] == 0
    assert counts["boxes"] == 1 and counts["extra_boxes"] == 1
    lines = (tmp_path / "out/yolo/labels" / f"{film.sha256}.txt").read_text().splitlines()
    assert [line.split()[0] for line in lines] == [str(cx.BOX_CLASSES.index("Effusion"))]
    side = json.loads((tmp_path / "out/extra_boxes.json").read_text())
    assert side[film.sha256]["boxes"] == [
        {"label": extra, "x1": 200.0, "y1": 200.0, "x2": 400.0, "y2": 300.0}
    ]


def test_an_unset_finding_is_exported_as_no_label(
    make_patient: MakePatient, doctor: AuthenticatedUser, admin: AuthenticatedUser, tmp_path: Path
) -> None:
    make_patient("ED-1")
    film = dx.diagnose_upload("ED-1", png_variant(6), "film.png", doctor)
    state = cx.get_editor_state(film.study_id, doctor, audit=False)
    first, *rest = state.finding_names
    cx.save_correction(
        film.study_id,
        {**state.model_labels, first: cx.PRESENT},
        [],
        "",
        state.study_version,
        doctor,
        sources={first: "doctor", **dict.fromkeys(rest, "model")},
    )
    export.export_reviewed(tmp_path / "out", admin)
    [row] = read_labels(tmp_path / "out")
    assert row[first] == "1" and row["signed"] == "0"
    assert all(row[f] == "" and row[f"{f}_source"] == "model" for f in rest)  # the model's guess is no label
