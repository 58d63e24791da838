"""One entry point for a film's report in any format, audited: the page's download and the CLI both use it."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

from core.audit import write as write_audit
from core.auth import AuthenticatedUser
from core.handoff import content, fhir, pdf
from db.session import session_scope

MEDIA_TYPES = {"pdf": "application/pdf", "fhir": "application/fhir+json"}
SUFFIXES = {"pdf": ".pdf", "fhir": ".fhir.json"}


@dataclass(frozen=True)
class Report:
    data: bytes
    media_type: str
    filename: str
    ms: float  # time to gather and format


def make_report(study_id: int, fmt: str, actor: AuthenticatedUser) -> Report:
    """The report of study ``study_id`` as ``fmt`` (``pdf`` or ``fhir``); writes a 'report' audit row."""
    if fmt not in MEDIA_TYPES:
        raise ValueError(f"unknown report format {fmt!r}")
    t0 = time.perf_counter()
    gathered = content.gather(study_id, actor)
    if fmt == "pdf":
        data = pdf.render_pdf(gathered)
    else:
        data = (json.dumps(fhir.bundle(gathered), indent=2, ensure_ascii=False) + "\n").encode()
    ms = (time.perf_counter() - t0) * 1e3
    with session_scope() as session:
        write_audit(
            session,
            actor,
            "report",
            "study",
            study_id,
            patient_id=gathered.patient_id,
            after={"format": fmt, "bytes": len(data), "reviewed": gathered.reading is not None},
        )
    name = f"cxr-{gathered.patient_id}-study{study_id}{SUFFIXES[fmt]}"
    return Report(data, MEDIA_TYPES[fmt], name, ms)
