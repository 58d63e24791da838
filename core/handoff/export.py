"""One entry point for a film's report in any format, audited: the page's download and the CLI both use it.

Formats: ``pdf`` (one page), ``fhir`` (R4 Bundle as JSON), ``dicom-sr`` (the Structured Report and the
secondary capture: two DICOM files, given to a browser as one ZIP).
"""

from __future__ import annotations

import io
import json
import time
import zipfile
from dataclasses import dataclass, field

from core.audit import write as write_audit
from core.auth import AuthenticatedUser
from core.handoff import content, dicom_out, fhir, pdf
from db.session import session_scope

FORMATS = ("pdf", "fhir", "dicom-sr")
MEDIA_TYPES = {"pdf": "application/pdf", "fhir": "application/fhir+json", "dicom-sr": "application/zip"}
SUFFIXES = {"pdf": ".pdf", "fhir": ".fhir.json", "dicom-sr": ".dicom.zip"}
DICOM_SUFFIXES = (".sr.dcm", ".sc.dcm")  # the SR, the secondary capture


@dataclass(frozen=True)
class Report:
    data: bytes  # the download: the file, or for dicom-sr a ZIP of both files
    media_type: str
    filename: str
    ms: float  # time to gather and format
    files: dict[str, bytes] = field(default_factory=dict)  # suffix -> bytes, one file per suffix


def make_report(study_id: int, fmt: str, actor: AuthenticatedUser) -> Report:
    """The report of study ``study_id`` as ``fmt`` (one of ``FORMATS``); writes a 'report' audit row."""
    if fmt not in MEDIA_TYPES:
        raise ValueError(f"unknown report format {fmt!r}")
    t0 = time.perf_counter()
    gathered = content.gather(study_id, actor)
    name = f"cxr-{gathered.patient_id}-study{study_id}"
    detail: dict[str, object] = {}
    if fmt == "pdf":
        data = pdf.render_pdf(gathered)
        files = {SUFFIXES[fmt]: data}
    elif fmt == "fhir":
        data = (json.dumps(fhir.bundle(gathered), indent=2, ensure_ascii=False) + "\n").encode()
        files = {SUFFIXES[fmt]: data}
    else:
        sr, sc = dicom_out.datasets(gathered)
        files = dict(zip(DICOM_SUFFIXES, (dicom_out.encode(sr), dicom_out.encode(sc)), strict=True))
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
            for suffix, part in files.items():
                archive.writestr(name + suffix, part)
        data = buffer.getvalue()
        detail = {"sr_uid": str(sr.SOPInstanceUID), "sc_uid": str(sc.SOPInstanceUID)}
    ms = (time.perf_counter() - t0) * 1e3
    reading = gathered.reading
    with session_scope() as session:
        write_audit(
            session,
            actor,
            "report",
            "study",
            study_id,
            patient_id=gathered.patient_id,
            after={
                "format": fmt,
                "bytes": len(data),
                "reviewed": reading is not None,
                "reading": reading.id if reading is not None else None,
                "signed": bool(reading is not None and reading.signed),
                **detail,
            },
        )
    return Report(data, MEDIA_TYPES[fmt], name + SUFFIXES[fmt], ms, files)
