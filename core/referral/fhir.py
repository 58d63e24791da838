"""The referral between separate installations: a FHIR R4 ``transaction`` Bundle with a ``Task`` (the request
to take the patient, owned by the receiving department) and a ``ServiceRequest`` (what is asked, why, the crew's
note), plus the film's report resources from ``core.handoff.fhir`` (Patient, ImagingStudy, DiagnosticReport,
Observations), POSTed to the outside site's FHIR base (``fhir_url`` in config/sites.toml).

Inside one installation a referral is rows in the shared database (``core.referral.service``); a department
with a ``fhir_url`` is an outside installation and receives this Bundle as well. Each send is audited.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
import uuid
from typing import Any

from sqlalchemy import select

from core import audit
from core.auth import AuthenticatedUser
from core.errors import AppError
from core.handoff import content as report_content
from core.handoff import fhir as report_fhir
from core.referral import service
from db import models
from db.session import session_scope

TIMEOUT_S = 10
SYSTEM = "urn:cxr:referral"
CONTENT_TYPE = "application/fhir+json"


class SendFailed(AppError):
    """The outside site did not take the referral (unreachable, or answered with an error)."""


def _urn() -> str:
    return f"urn:uuid:{uuid.uuid4()}"


def bundle(referral_id: int, site_code: str, actor: AuthenticatedUser) -> dict[str, Any]:
    """The transaction Bundle of referral ``referral_id`` for department ``site_code``."""
    view = service.get_referral(referral_id, actor, audit_read=False)
    target = view.target(site_code)
    if target is None:
        raise AppError(f"Referral {referral_id} was not sent to {site_code}.")
    report = report_fhir.bundle(report_content.gather(view.study_id, actor))
    entries = [dict(e) for e in report["entry"]]
    refs = {e["resource"]["resourceType"]: e["fullUrl"] for e in entries}
    task_ref, request_ref = _urn(), _urn()
    findings = [*view.likely, *view.possible]
    reason = [{"text": f.replace("_", " ")} for f in findings] or [{"text": "Chest X-ray read by the crew"}]
    service_request: dict[str, Any] = {
        "resourceType": "ServiceRequest",
        "identifier": [{"system": SYSTEM, "value": f"{referral_id}"}],
        "status": "active",
        "intent": "order",
        "priority": "urgent" if view.triage_level == "urgent" else "asap",
        "code": {"text": "Transfer to an emergency department"},
        "subject": {"reference": refs["Patient"]},
        "authoredOn": view.created_at.isoformat(),
        "requester": {"display": view.sent_by},
        "performer": [{"display": target.site_name}],
        "reasonCode": reason,
        "supportingInfo": [{"reference": refs["DiagnosticReport"]}, {"reference": refs["ImagingStudy"]}],
        "note": [{"text": view.note}] if view.note else [],
    }
    if not service_request["note"]:
        del service_request["note"]
    task: dict[str, Any] = {
        "resourceType": "Task",
        "identifier": [{"system": SYSTEM, "value": f"{referral_id}-{target.site_code}"}],
        "status": "requested",
        "intent": "order",
        "priority": service_request["priority"],
        "code": {"text": "Accept or decline the patient"},
        "description": f"Referral {referral_id}: {target.reasons}",
        "focus": {"reference": request_ref},
        "for": {"reference": refs["Patient"]},
        "authoredOn": view.created_at.isoformat(),
        "requester": {"display": view.sent_by},
        "owner": {
            "identifier": {"system": "urn:cxr:site", "value": target.site_code},
            "display": target.site_name,
        },
    }
    entries += [
        {"fullUrl": request_ref, "resource": service_request},
        {"fullUrl": task_ref, "resource": task},
    ]
    for entry in entries:
        entry["request"] = {"method": "POST", "url": entry["resource"]["resourceType"]}
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


def send(referral_id: int, actor: AuthenticatedUser) -> dict[str, int]:
    """POST the Bundle to every department of the referral that is an outside installation (``fhir_url``);
    returns site code -> HTTP status. ``SendFailed`` names the first site that did not take it. Audited."""
    with session_scope() as session:
        outside = session.execute(
            select(models.Site.code, models.Site.fhir_url)
            .join(models.ReferralTarget, models.ReferralTarget.site_id == models.Site.id)
            .where(models.ReferralTarget.referral_id == referral_id, models.Site.fhir_url.is_not(None))
        ).all()
    results: dict[str, int] = {}
    for code, url in outside:
        body = json.dumps(bundle(referral_id, code, actor)).encode()
        request = urllib.request.Request(
            str(url).rstrip("/"),
            data=body,
            method="POST",
            headers={"Content-Type": CONTENT_TYPE, "Accept": CONTENT_TYPE},
        )
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
                results[code] = int(response.status)
        except (urllib.error.URLError, OSError) as exc:
            _audit(referral_id, actor, code, f"FHIR referral to {code} failed: {exc}")
            raise SendFailed(
                f"The referral could not be sent to {code}: the site's FHIR server did not take it."
            ) from exc
        _audit(referral_id, actor, code, f"FHIR Task + ServiceRequest to {code}: HTTP {results[code]}")
    return results


def _audit(referral_id: int, actor: AuthenticatedUser, code: str, detail: str) -> None:
    with session_scope() as session:
        patient_id = session.scalars(
            select(models.Patient.patient_id)
            .join(models.Study, models.Study.patient_pk == models.Patient.id)
            .join(models.Referral, models.Referral.study_id == models.Study.id)
            .where(models.Referral.id == referral_id)
        ).first()
        audit.write(
            session,
            actor,
            "export",
            "referral",
            referral_id,
            patient_id=patient_id,
            after={"site": code},
            detail=detail,
        )
