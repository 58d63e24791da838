"""The read of one film as DICOM for a PACS: a Comprehensive SR (TID 1500 measurement report, highdicom) and
a secondary-capture image of the film with the boxes burned in (this copy only).

Identity and UIDs. The patient is the record's (ID, name, sex, birth date). When the film came as DICOM, the
stored original's header gives the Study Instance UID, its series and the image's SOP instance: both new
objects join that study (each in its own series) and reference the original image (the SC through its Source
Image Sequence, the SR through its evidence and, when the film was read upright, its SCOORDs). A PNG/JPEG
film gets a Study Instance UID derived from the site and the film's content hash, so every export of the
same film lands in one study. Series UIDs are derived from the study UID (one SR series, one SC series per
film); instance UIDs from the diagnosis and the current reading, so the same read exported twice is the same
instance, and a new reading makes new instances.

The SR (``build_sr``): observer context with the AI as device (name, the model versions) and the reader of
the current reading as person; one TID 1501 group per finding of the model card (the classifier's
probability and threshold in %, the algorithm and its version, and the doctor's status: present / absent /
uncertain / not reviewed); one TID 1410 group per detector box (the detector's score) and per doctor's box,
each a closed POLYLINE SCOORD on the original image (or on the secondary capture when the film was turned or
is not DICOM); the doctor's note and "Decision aid, not a diagnosis" as text in the report's Qualitative
Evaluations container. A signed reading makes the SR complete and verified (the reader as verifying
observer); otherwise it is partial and unverified. Findings use local codes (scheme ``99CXR``, declared in the
Coding Scheme Identification Sequence); present/absent are SNOMED CT.
"""

from __future__ import annotations

import io
import uuid
from datetime import UTC

import highdicom as hd
import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes

from core.auth import AuthenticatedUser
from core.handoff import content as report_content
from core.handoff.content import DISCLAIMER, ReportContent
from core.handoff.film import annotated_film, doctor_boxes
from core.ml import film_check
from core.ml.boxes import Box

MANUFACTURER = "CXR assistant"
LOCAL = "99CXR"
SR_SERIES_NUMBER = 9901
SC_SERIES_NUMBER = 9902
SEX = {"female": "F", "male": "M", "other": "O"}
PERCENT = hd.sr.CodedConcept("%", "UCUM", "percent")
PROCEDURE = hd.sr.CodedConcept("36643-5", "LN", "XR Chest 2 Views")
DOCTOR_VALUES = {
    "present": hd.sr.CodedConcept("52101004", "SCT", "Present"),
    "absent": hd.sr.CodedConcept("2667000", "SCT", "Absent"),
    "uncertain": hd.sr.CodedConcept("uncertain", LOCAL, "Uncertain"),
    "not reviewed": hd.sr.CodedConcept("not-reviewed", LOCAL, "Not reviewed"),
}
PROBABILITY = hd.sr.CodedConcept("probability", LOCAL, "AI probability")
THRESHOLD = hd.sr.CodedConcept("threshold", LOCAL, "AI threshold")
SCORE = hd.sr.CodedConcept("box-score", LOCAL, "AI detector confidence")
DOCTOR_READING = hd.sr.CodedConcept("doctor-reading", LOCAL, "Doctor's reading")
NOTE = hd.sr.CodedConcept("note", LOCAL, "Doctor's note")
NOTICE = hd.sr.CodedConcept("notice", LOCAL, "Notice")
QUALITATIVE = hd.sr.CodedConcept("C0034375", "UMLS", "Qualitative Evaluations")


def _code(name: str, meaning: str) -> hd.sr.CodedConcept:
    return hd.sr.CodedConcept(name[:16], LOCAL, meaning)


def _uid(content: ReportContent, *parts: object) -> str:
    """A UID derived from the site, the film's hash and ``parts`` (a name-based UUID, RFC 4122 version 5, as
    a 2.25 UID, PS3.5 B.2): the same inputs, the same UID."""
    name = "\x1f".join(map(str, (content.site, content.sha256, *parts)))
    return f"2.25.{uuid.uuid5(uuid.NAMESPACE_URL, 'urn:cxr:' + name).int}"


def _person(name: str) -> str:
    """Free text as one DICOM person name component (its separators removed, cut to 63 characters)."""
    return "".join(c for c in name if c not in "^=\\")[:63] or "unknown"


def _reader(content: ReportContent) -> str:
    """The reader's full name as a one-component person name (the trailing caret says so)."""
    reading = content.reading
    return _person(reading.reader_name or reading.reader_username) + "^" if reading is not None else ""


def _source(content: ReportContent) -> Dataset | None:
    """The stored original's header when the film came as DICOM with the UIDs a reference needs."""
    path = content.original_path
    if content.view.source_format != "dicom" or path is None or not path.is_file():
        return None
    header = pydicom.dcmread(path, stop_before_pixels=True, force=True)
    needed = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID")
    if not all(str(header.get(k, "")).strip() for k in needed):
        return None
    _patient(header, content)  # the record's patient, whatever the file said (the upload checked it)
    for keyword in ("PatientAge", "PatientSize", "PatientWeight", "OtherPatientIDs", "OtherPatientNames"):
        if keyword in header:
            delattr(header, keyword)
    _study(header, content, header)
    return header


def _study_uid(content: ReportContent, source: Dataset | None) -> str:
    return str(source.StudyInstanceUID) if source is not None else _uid(content, "study")


def _reading_key(content: ReportContent) -> str:
    return f"{content.view.diagnosis_id}:{content.reading.id if content.reading else 'none'}"


def _patient(ds: Dataset, content: ReportContent) -> None:
    ds.SpecificCharacterSet = "ISO_IR 192"  # UTF-8: names with accents
    ds.PatientID = content.patient_id
    ds.PatientName = f"{_person(content.family_name)}^{_person(content.given_name)}"
    ds.PatientBirthDate = content.birth_date.strftime("%Y%m%d")
    ds.PatientSex = SEX.get(content.sex, "")


def _record_study(content: ReportContent) -> dict[str, str]:
    """The study attributes the record knows (acquisition date, else the upload's date and time)."""
    when = content.acquired or content.view.uploaded_at.date()
    return {
        "StudyDate": when.strftime("%Y%m%d"),
        "StudyTime": content.view.uploaded_at.strftime("%H%M%S") if content.acquired is None else "",
        "StudyID": str(content.view.study_id)[-16:],
        "AccessionNumber": "",
        "ReferringPhysicianName": "",
    }


def _study(ds: Dataset, content: ReportContent, source: Dataset | None) -> None:
    """Study attributes from the original where it has them, else from the record."""
    for keyword, value in _record_study(content).items():
        setattr(ds, keyword, (source.get(keyword, "") if source is not None else "") or value)
    description = source.get("StudyDescription") if source is not None else None
    ds.StudyDescription = str(description or "Chest X-ray")[:64]


def _content_time(ds: Dataset, content: ReportContent) -> None:
    """Content date and time: when the read was made (the reading's save, else the upload), so that the
    same read exported twice is the same instance, byte for byte in its dates."""
    at = content.reading.saved_at if content.reading is not None else content.view.uploaded_at
    ds.ContentDate = at.astimezone(UTC).strftime("%Y%m%d")
    ds.ContentTime = at.astimezone(UTC).strftime("%H%M%S")
    ds.TimezoneOffsetFromUTC = "+0000"


def _secondary_capture(content: ReportContent, source: Dataset | None) -> Dataset:
    film = np.asarray(annotated_film(content, max_side=4096))
    sc = hd.sc.SCImage(
        pixel_array=film,
        photometric_interpretation="RGB",
        bits_allocated=8,
        coordinate_system="PATIENT",
        study_instance_uid=_study_uid(content, source),
        series_instance_uid=_uid(content, "sc-series", _study_uid(content, source)),
        series_number=SC_SERIES_NUMBER,
        sop_instance_uid=_uid(content, "sc", _reading_key(content)),
        instance_number=1,
        manufacturer=MANUFACTURER,
        patient_orientation=("L", "F"),  # highdicom wants one; replaced below (type 2: empty when unknown)
    )
    _patient(sc, content)
    _study(sc, content, source)
    orientation = source.get("PatientOrientation") if source is not None else None
    turned = content.view.orientation in (film_check.ROT90, film_check.ROT180, film_check.ROT270)
    sc.PatientOrientation = list(orientation) if orientation and not turned else []  # type 2: empty
    sc.Modality = "OT"
    sc.BodyPartExamined = "CHEST"  # an unpaired body part: Laterality (type 2C) stays absent
    sc.ConversionType = "WSD"
    sc.SeriesDescription = "AI read, boxes burned in (not for diagnosis)"
    sc.BurnedInAnnotation = "YES"
    sc.ImageType = ["DERIVED", "SECONDARY"]
    _content_time(sc, content)
    sc.DerivationDescription = "Film with the AI's boxes (red) and the doctor's (blue) drawn in"
    sc.ImageComments = DISCLAIMER
    sc.InstitutionName = content.site[:64]
    if source is not None:
        item = Dataset()
        item.ReferencedSOPClassUID = source.SOPClassUID
        item.ReferencedSOPInstanceUID = source.SOPInstanceUID
        sc.SourceImageSequence = [item]
    return sc


def _graphic(box: Box, sx: float, sy: float) -> np.ndarray:
    x1, y1, x2, y2 = box.box
    corners = [(x1, y1), (x2, y1), (x2, y2), (x1, y2), (x1, y1)]
    return np.array([(x * sx, y * sy) for x, y in corners], dtype=np.float32)


def _sr(content: ReportContent, source: Dataset | None, sc: Dataset) -> Dataset:
    view = content.view
    reading = content.reading
    versions = ", ".join(f"{k} {v}" for k, v in sorted(view.models.items()))
    device = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=_uid(content, "device", MANUFACTURER),
            name=MANUFACTURER,
            manufacturer_name=MANUFACTURER,
            model_name=versions[:64],
        ),
    )
    person = None
    if reading is not None:
        person = hd.sr.ObserverContext(
            observer_type=codes.DCM.Person,
            observer_identifying_attributes=hd.sr.PersonObserverIdentifyingAttributes(
                name=_reader(content),
                login_name=reading.reader_username[:64],
                organization_name=content.site[:64],
            ),
        )
    context = hd.sr.ObservationContext(observer_person_context=person, observer_device_context=device)

    # The boxes' frame: the original image when it is the analysed one (upright), else the SC's pixels.
    upright = view.orientation not in (film_check.ROT90, film_check.ROT180, film_check.ROT270)
    if source is not None and upright:
        target: Dataset = source
        sx = int(source.get("Columns", view.width) or view.width) / max(view.width, 1)
        sy = int(source.get("Rows", view.height) or view.height) / max(view.height, 1)
    else:
        target, sx, sy = sc, sc.Columns / max(view.width, 1), sc.Rows / max(view.height, 1)
    region_image = hd.sr.SourceImageForRegion(
        referenced_sop_class_uid=target.SOPClassUID, referenced_sop_instance_uid=target.SOPInstanceUID
    )
    classifier = hd.sr.AlgorithmIdentification(
        name="classifier", version=view.models.get("classifier", "unknown")[:64], manufacturer=MANUFACTURER
    )
    detector = hd.sr.AlgorithmIdentification(
        name="detector", version=view.models.get("detector", "unknown")[:64], manufacturer=MANUFACTURER
    )
    groups: list[
        hd.sr.MeasurementsAndQualitativeEvaluations | hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations
    ] = []
    for f in view.findings:
        groups.append(
            hd.sr.MeasurementsAndQualitativeEvaluations(
                tracking_identifier=hd.sr.TrackingIdentifier(
                    uid=_uid(content, "finding", f.name, _reading_key(content)), identifier=f.name[:64]
                ),
                finding_type=_code(f.name, f.label),
                algorithm_id=classifier,
                measurements=[
                    hd.sr.Measurement(PROBABILITY, round(f.probability * 100, 1), PERCENT),
                    hd.sr.Measurement(THRESHOLD, round(f.threshold * 100, 1), PERCENT),
                ],
                qualitative_evaluations=[
                    hd.sr.QualitativeEvaluation(DOCTOR_READING, DOCTOR_VALUES[content.doctor_status(f.name)])
                ],
            )
        )
    marked = [(b, "AI", detector) for b in view.boxes] + [(b, "doctor", None) for b in doctor_boxes(content)]
    for i, (box, who, algorithm) in enumerate(marked, start=1):
        measurements = []
        if box.score is not None:
            measurements = [hd.sr.Measurement(SCORE, round(box.score * 100, 1), PERCENT)]
        groups.append(
            hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
                tracking_identifier=hd.sr.TrackingIdentifier(
                    uid=_uid(content, "region", i, who, _reading_key(content)),
                    identifier=f"{who} region {i}: {box.label}"[:64],
                ),
                referenced_region=hd.sr.ImageRegion(
                    graphic_type=hd.sr.GraphicTypeValues.POLYLINE,
                    graphic_data=_graphic(box, sx, sy),
                    source_image=region_image,
                ),
                finding_type=_code(box.label, box.label),
                algorithm_id=algorithm,
                measurements=measurements or None,
            )
        )
    report = hd.sr.MeasurementReport(
        observation_context=context, procedure_reported=PROCEDURE, imaging_measurements=groups
    )
    texts = hd.sr.ContainerContentItem(
        name=QUALITATIVE, relationship_type=hd.sr.RelationshipTypeValues.CONTAINS
    )
    texts.ContentSequence = hd.sr.ContentSequence()
    if reading is not None and reading.note:
        texts.ContentSequence.append(
            hd.sr.TextContentItem(NOTE, reading.note, relationship_type=hd.sr.RelationshipTypeValues.CONTAINS)
        )
    texts.ContentSequence.append(
        hd.sr.TextContentItem(NOTICE, DISCLAIMER, relationship_type=hd.sr.RelationshipTypeValues.CONTAINS)
    )
    report[0].ContentSequence.append(texts)

    signed = reading is not None and reading.signed
    evidence = [source] if source is not None else [sc]
    sr = hd.sr.Comprehensive3DSR(
        evidence=evidence,
        content=report[0],
        series_instance_uid=_uid(content, "sr-series", _study_uid(content, source)),
        series_number=SR_SERIES_NUMBER,
        sop_instance_uid=_uid(content, "sr", _reading_key(content)),
        instance_number=1,
        manufacturer=MANUFACTURER,
        is_complete=signed,
        is_final=signed,
        is_verified=signed,
        institution_name=content.site[:64],
        verifying_observer_name=_reader(content) if signed else None,
        verifying_organization=content.site[:64] if signed else None,
    )
    _patient(sr, content)
    _study(sr, content, source)
    sr.SeriesDescription = "AI read and doctor's reading"
    _content_time(sr, content)
    scheme = Dataset()
    scheme.CodingSchemeDesignator = LOCAL
    scheme.CodingSchemeName = "CXR assistant local codes"
    scheme.CodingSchemeResponsibleOrganization = content.site[:64]
    sr.CodingSchemeIdentificationSequence = [scheme]
    return sr


def build_sr(study_id: int, actor: AuthenticatedUser) -> Dataset:
    """The Structured Report of study ``study_id``'s read (``NotFound`` for an unknown study). Not audited:
    callers that export it write the audit row (``core.handoff.export``)."""
    return build_both(study_id, actor)[0]


def build_secondary_capture(study_id: int, actor: AuthenticatedUser) -> Dataset:
    """The secondary capture of study ``study_id``'s film with its boxes burned in. Not audited (as above)."""
    gathered = report_content.gather(study_id, actor)
    return _secondary_capture(gathered, _source(gathered))


def build_both(study_id: int, actor: AuthenticatedUser) -> tuple[Dataset, Dataset]:
    """The SR and the secondary capture from one gathering (the SR may reference the SC's pixels)."""
    return datasets(report_content.gather(study_id, actor))


def datasets(gathered: ReportContent) -> tuple[Dataset, Dataset]:
    """The SR and the secondary capture of already gathered content."""
    source = _source(gathered)
    sc = _secondary_capture(gathered, source)
    return _sr(gathered, source, sc), sc


def encode(ds: Dataset) -> bytes:
    """A dataset as a DICOM Part 10 file."""
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


__all__ = ["build_both", "build_secondary_capture", "build_sr", "datasets", "encode"]
