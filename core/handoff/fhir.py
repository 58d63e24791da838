"""The read of one film as a FHIR R4 ``Bundle`` (type ``collection``): Patient, ImagingStudy, DiagnosticReport
and one Observation per finding of the model's card, as plain JSON (validated against the R4B models of
``fhir.resources`` in the tests; R4B changed none of these resources' elements from R4).

Each Observation carries the classifier's probability (``valueQuantity``, unit %, UCUM), the threshold it
was compared with (a ``component``), an interpretation (A = over the threshold, N = under), and the doctor's
status of the finding (a second ``component``: present / absent / uncertain / not reviewed, SNOMED CT coded
where a code exists). Statuses follow the doctor's current reading: ``final`` once it is signed (``amended``
for an amendment), ``preliminary`` while it is only saved or only the model has read the film; the reader is
the ``performer`` / ``resultsInterpreter``. Identifiers use the site's own systems (``urn:cxr:<site>:...``); patients are
identified by the record's patient ID.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

from core.handoff.content import DISCLAIMER, ReportContent

LOINC_CXR = {"system": "http://loinc.org", "code": "36643-5", "display": "XR Chest 2 Views"}
INTERPRETATION = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
SEX = {"female": "female", "male": "male", "other": "other", "unknown": "unknown"}
SNOMED = "http://snomed.info/sct"
DOCTOR_CODES = {"present": ("52101004", "Present"), "absent": ("2667000", "Absent")}


def _doctor_value(status: str) -> dict[str, Any]:
    coded = DOCTOR_CODES.get(status)
    value: dict[str, Any] = {"text": status}
    if coded is not None:
        value["coding"] = [{"system": SNOMED, "code": coded[0], "display": coded[1]}]
    return value


def _system(content: ReportContent, kind: str) -> str:
    site = re.sub(r"[^a-z0-9]+", "-", content.site.lower()).strip("-") or "site"
    return f"urn:cxr:{site}:{kind}"


def _urn() -> str:
    return f"urn:uuid:{uuid.uuid4()}"


def bundle(content: ReportContent) -> dict[str, Any]:
    """The FHIR R4 Bundle (a JSON-ready dict) of ``content``."""
    view = content.view
    reader = content.reading
    status = "preliminary"
    if reader is not None and reader.signed:
        status = "amended" if reader.amends is not None else "final"
    patient_ref, study_ref, report_ref = _urn(), _urn(), _urn()
    performer = []
    if reader is not None:
        performer = [
            {"display": f"{reader.reader_name or reader.reader_username} ({reader.reader_username})"}
        ]
    issued = content.generated_at.isoformat()

    patient = {
        "resourceType": "Patient",
        "identifier": [{"system": _system(content, "patient-id"), "value": content.patient_id}],
        "name": [{"family": content.family_name, "given": [content.given_name]}],
        "gender": SEX.get(content.sex, "unknown"),
        "birthDate": content.birth_date.isoformat(),
    }
    started = content.acquired.isoformat() if content.acquired else view.uploaded_at.isoformat()
    imaging_study = {
        "resourceType": "ImagingStudy",
        "identifier": [{"system": _system(content, "study"), "value": str(view.study_id)}],
        "status": "available",
        "subject": {"reference": patient_ref},
        "started": started,
        "modality": [{"system": "http://dicom.nema.org/resources/ontology/DCM", "code": "DX"}],
        "numberOfSeries": 1,
        "numberOfInstances": 1,
        "description": "Chest X-ray" + (f", {content.projection}" if content.projection else ""),
    }
    observations = []
    for f in view.findings:
        obs: dict[str, Any] = {
            "resourceType": "Observation",
            "status": status,
            "code": {"text": f.label},
            "subject": {"reference": patient_ref},
            "derivedFrom": [{"reference": study_ref}],
            "valueQuantity": {
                "value": round(f.probability * 100, 1),
                "unit": "%",
                "system": "http://unitsofmeasure.org",
                "code": "%",
            },
            "interpretation": [
                {
                    "coding": [
                        {"system": INTERPRETATION, "code": "A" if f.flagged else "N"},
                    ],
                    "text": "over the model's threshold" if f.flagged else "under the model's threshold",
                }
            ],
            "component": [
                {
                    "code": {"text": "model threshold"},
                    "valueQuantity": {
                        "value": round(f.threshold * 100, 1),
                        "unit": "%",
                        "system": "http://unitsofmeasure.org",
                        "code": "%",
                    },
                },
                {
                    "code": {"text": "doctor's reading"},
                    "valueCodeableConcept": _doctor_value(content.doctor_status(f.name)),
                },
            ],
            "method": {"text": f"AI classifier {view.models.get('classifier', '')}".strip()},
            "note": [{"text": f"Doctor's reading: {content.doctor_status(f.name)}"}],
        }
        if performer:
            obs["performer"] = performer
        observations.append((_urn(), obs))

    likely = ", ".join(view.likely) or "none"
    conclusion = f"Triage {view.triage_level}. AI likely findings: {likely}. {DISCLAIMER}"
    if reader is not None:
        present = ", ".join(reader.present) or "none"
        state = "signed" if reader.signed else "saved, not signed"
        conclusion = f"Doctor's reading ({state}): present {present}" + (
            f"; note: {reader.note}" if reader.note else ""
        )
        conclusion += f". AI triage {view.triage_level}. {DISCLAIMER}"
    report = {
        "resourceType": "DiagnosticReport",
        "status": status,
        "code": {"coding": [LOINC_CXR], "text": "Chest X-ray read"},
        "subject": {"reference": patient_ref},
        "effectiveDateTime": started if "T" in started else f"{started}T00:00:00+00:00",
        "issued": issued,
        "imagingStudy": [{"reference": study_ref}],
        "result": [{"reference": ref} for ref, _ in observations],
        "conclusion": conclusion,
    }
    if performer:
        report["resultsInterpreter"] = performer

    entries = [(patient_ref, patient), (study_ref, imaging_study), (report_ref, report), *observations]
    return {
        "resourceType": "Bundle",
        "type": "collection",
        "timestamp": issued,
        "entry": [{"fullUrl": ref, "resource": resource} for ref, resource in entries],
    }
