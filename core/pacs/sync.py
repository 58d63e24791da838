"""Films from the hospital's PACS into the records, and the read back to the PACS.

:func:`sync` (``python -m core pacs sync``) lists the PACS's instances (QIDO-RS), and takes each one it has not
seen before (``pacs_imports.sop_instance_uid`` is unique; the SR and secondary captures this installation sent,
``pacs_exports``, are skipped) through four steps: retrieve (WADO-RS) -> match the patient by PatientID ->
analyse and save exactly like an upload (:func:`core.xray.diagnosis.diagnose_upload`) -> record the outcome.
A film of an unknown patient, or one whose header's name, sex or birth date contradicts the record its ID
names, is never saved into a record: it is listed as *unmatched* with the reason (a doctor attaches or
dismisses it, :mod:`core.pacs.unmatched`); a film the upload would refuse is recorded as *refused* with the
reason. Then the read of every imported film not yet sent goes back to the PACS (:func:`send_reading`).

Failures: a PACS that stops answering ends the sync with one sentence; what it had not yet recorded is simply
found again by the next sync. A crash after a study was saved and before its row was written is healed the same
way: the upload recognises the image (same sha256) and the sync records that study.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm.exc import StaleDataError

from core import imaging
from core.audit import write as write_audit
from core.auth import AuthenticatedUser
from core.config import get_settings
from core.errors import AppError, NotFound
from core.pacs.client import DicomWebClient, Instance, PacsUnavailable, StoreResult
from core.validation import normalize_patient_id
from core.xray.diagnosis import diagnose_upload
from core.xray.identity import PatientMismatch
from db import models
from db import repository as repo
from db.session import session_scope

log = logging.getLogger(__name__)

__all__ = [
    "PacsNotConfigured",
    "ReadNotExportable",
    "SyncReport",
    "pacs_client",
    "send_after_sign_off",
    "send_reading",
    "sync",
]


class PacsNotConfigured(AppError):
    """No ``CXR_PACS_URL``."""


class ReadNotExportable(AppError):
    """This installation cannot build the DICOM SR / secondary capture (``core.handoff.dicom_out`` missing)."""


@dataclass
class SyncReport:
    """What one sync did: SOP Instance UIDs per outcome, the studies whose read was sent, and any failure."""

    imported: list[str] = field(default_factory=list)
    unmatched: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    sent: list[int] = field(default_factory=list)  # study ids
    send_pending: list[int] = field(default_factory=list)
    error: str = ""  # one sentence: the sync stopped there; the rest is retried next time
    seconds: float = 0.0
    send_seconds: float = 0.0  # of which building and storing the SRs and secondary captures

    def summary(self) -> str:
        """One line for the command line."""
        line = (
            f"imported {len(self.imported)}, unmatched {len(self.unmatched)}, refused {len(self.refused)}, "
            f"read sent for {len(self.sent)} film(s)"
        )
        if self.send_pending:
            line += f", {len(self.send_pending)} still to send"
        return line + f" ({self.seconds:.1f} s)"


def pacs_client() -> DicomWebClient:
    """The client of the hospital's PACS (``CXR_PACS_URL``); :class:`PacsNotConfigured` without one."""
    url = get_settings().pacs_url
    if not url:
        raise PacsNotConfigured("No PACS is configured: set CXR_PACS_URL to its DICOMweb base URL.")
    return DicomWebClient(url)


def _now() -> datetime:
    return datetime.now(UTC)


def sync(actor: AuthenticatedUser, client: DicomWebClient | None = None) -> SyncReport:
    """Import the PACS's new films and send back the reads not yet sent (see the module docstring)."""
    t0 = time.perf_counter()
    client = client or pacs_client()
    report = SyncReport()
    try:
        for instance in _new_instances(client):
            status = _import(client, instance, actor)
            getattr(report, status).append(instance.sop_instance_uid)
    except PacsUnavailable as exc:
        report.error = str(exc)
    for study_id, reason in _studies_to_send():
        if report.error:
            report.send_pending.append(study_id)
            continue
        t_send = time.perf_counter()
        try:
            send_reading(study_id, actor, reason=reason, client=client)
            report.sent.append(study_id)
        except (PacsUnavailable, NotFound, ReadNotExportable) as exc:
            report.error = str(exc)
            report.send_pending.append(study_id)
        report.send_seconds += time.perf_counter() - t_send
    report.seconds = time.perf_counter() - t0
    return report


def _new_instances(client: DicomWebClient) -> list[Instance]:
    """The PACS's instances this installation has neither recorded nor sent itself."""
    listed = list(client.search_instances())
    uids = [i.sop_instance_uid for i in listed]
    known: set[str] = set()
    with session_scope() as session:
        for start in range(0, len(uids), 500):
            chunk = uids[start : start + 500]
            for table in (models.PacsImport, models.PacsExport):
                known.update(
                    session.scalars(select(table.sop_instance_uid).where(table.sop_instance_uid.in_(chunk)))
                )
    return [i for i in listed if i.sop_instance_uid and i.sop_instance_uid not in known]


def _import(client: DicomWebClient, instance: Instance, actor: AuthenticatedUser) -> str:
    """Retrieve, match, analyse and record one instance; its outcome ("imported", "unmatched", "refused")."""
    data = client.retrieve_instance(instance)
    filename = f"{instance.sop_instance_uid}.dcm"
    key = normalize_patient_id(instance.patient_id or "")
    with session_scope() as session:
        known_patient = bool(key) and repo.get_patient(session, key) is not None
    try:
        if not known_patient:
            imaging.read_chest_xray(data, filename)  # an unusable file is refused, never listed for a doctor
            _record(instance, "unmatched", actor, reason=f"No patient with ID {instance.patient_id!r}.")
            return "unmatched"
        view = diagnose_upload(key, data, filename, actor)
    except imaging.ImageRejected as exc:
        _record(instance, "refused", actor, reason=exc.user_message)
        return "refused"
    except PatientMismatch as exc:
        # The ID matches a record but the name, sex or birth date does not: a doctor decides, never the sync.
        _record(instance, "unmatched", actor, reason="; ".join(exc.contradictions))
        return "unmatched"
    reason = "already in the record" if view.duplicate else ""
    _record(instance, "imported", actor, reason=reason, study_id=view.study_id, patient_id=key)
    return "imported"


def _record(
    instance: Instance,
    status: str,
    actor: AuthenticatedUser,
    *,
    reason: str = "",
    study_id: int | None = None,
    patient_id: str | None = None,
) -> None:
    """The instance's ``pacs_imports`` row and its audit row; a concurrent sync that recorded it first wins."""
    try:
        with session_scope() as session:
            row = models.PacsImport(
                sop_instance_uid=instance.sop_instance_uid[:64],
                study_instance_uid=instance.study_instance_uid[:64],
                series_instance_uid=instance.series_instance_uid[:64],
                dicom_patient_id=instance.patient_id[:64],
                dicom_patient_name=instance.patient_name[:200],
                status=status,
                reason=reason[:1000],
                study_id=study_id,
            )
            session.add(row)
            session.flush()
            write_audit(
                session,
                actor,
                "create",
                "pacs_import",
                row.id,
                patient_id=patient_id,
                after={"status": status, "sop_instance_uid": row.sop_instance_uid, "study_id": study_id},
                detail=reason,
            )
    except IntegrityError:
        log.info("instance %s was recorded by another sync", instance.sop_instance_uid)


def _studies_to_send() -> list[tuple[int, str]]:
    """Films from the PACS whose read has not gone back yet ("analysis"), or whose newest signed reading is
    newer than the last send after a sign-off ("sign-off": a send that failed at sign-off is retried here)."""
    with session_scope() as session:
        imported = select(models.PacsImport.study_id).where(
            models.PacsImport.status == "imported", models.PacsImport.study_id.is_not(None)
        )
        unsent = session.scalars(
            imported.where(models.PacsImport.sent_at.is_(None)).order_by(models.PacsImport.id)
        ).all()
        signed = dict(
            session.execute(
                select(models.Correction.study_id, func.max(models.Correction.signed_at))
                .where(models.Correction.signed_at.is_not(None), models.Correction.study_id.in_(imported))
                .group_by(models.Correction.study_id)
            ).all()
        )
        sent = dict(
            session.execute(
                select(models.PacsExport.study_id, func.max(models.PacsExport.sent_at))
                .where(models.PacsExport.reason == "sign-off", models.PacsExport.study_id.in_(list(signed)))
                .group_by(models.PacsExport.study_id)
            ).all()
        )
        resign = [s for s, at in signed.items() if at is not None and (sent.get(s) is None or sent[s] < at)]
        todo = {int(s): "analysis" for s in unsent if s is not None}
        todo.update({int(s): "sign-off" for s in sorted(resign)})  # the signed read is the newest: it wins
        return list(todo.items())


def send_after_sign_off(study_id: int, actor: AuthenticatedUser) -> bool:
    """After a doctor signed a film that came from the PACS, send its read back; never raises for a PACS
    that is down or not configured (the sign-off stands; the next sync retries). True when sent."""
    if not get_settings().pacs_url:
        return False
    with session_scope() as session:
        from_pacs = session.scalar(
            select(func.count()).where(
                models.PacsImport.study_id == study_id, models.PacsImport.status == "imported"
            )
        )
    if not from_pacs:
        return False
    try:
        send_reading(study_id, actor, reason="sign-off")
    except (PacsUnavailable, ReadNotExportable) as exc:
        log.warning("read of study %s not sent after sign-off (the next sync retries): %s", study_id, exc)
        return False
    return True


def send_reading(
    study_id: int, actor: AuthenticatedUser, *, reason: str = "sign-off", client: DicomWebClient | None = None
) -> tuple[str, ...]:
    """Store the film's Structured Report and secondary capture (``core.handoff.dicom_out``) to the PACS in one
    STOW-RS request; record them (``pacs_exports``, so a sync never imports them back) and audit the send.
    ``reason``: ``analysis`` (after a sync's import), ``sign-off`` or ``manual``. Returns the stored SOP
    Instance UIDs. Raises :class:`PacsUnavailable` (nothing recorded), :class:`PacsNotConfigured`, ``NotFound``.
    """
    try:  # the builders of core.handoff, imported late: importing a film does not need the report stack
        from core.handoff import dicom_out
    except ImportError:
        raise ReadNotExportable("The DICOM SR / secondary-capture export is not available here.") from None

    client = client or pacs_client()
    sr, sc = dicom_out.build_both(study_id, actor)  # one gathering: the SR references the SC
    datasets = {"sr": sr, "sc": sc}
    result = client.store(datasets.values())
    uids = {kind: str(ds.SOPInstanceUID) for kind, ds in datasets.items()}
    for attempt in (1, 2):  # a concurrent sync sending the same read may record it first: then look again
        try:
            _record_sent(study_id, uids, result, reason, actor, client.url)
            break
        except (IntegrityError, StaleDataError):
            if attempt == 2:
                raise
    return result.stored


def _record_sent(
    study_id: int, uids: dict[str, str], result: StoreResult, reason: str, actor: AuthenticatedUser, url: str
) -> None:
    """The sent instances (``pacs_exports``, once each), the imports' ``sent_at`` and the audit row."""
    with session_scope() as session:
        study = session.get(models.Study, study_id)
        patient = session.get(models.Patient, study.patient_pk) if study is not None else None
        already = set(
            session.scalars(
                select(models.PacsExport.sop_instance_uid).where(
                    models.PacsExport.sop_instance_uid.in_(list(uids.values()))
                )
            )
        )
        for kind, uid in uids.items():
            # the same read exported again is the same instance (dicom_out derives the UIDs): recorded once
            if uid in result.stored and uid not in already:
                session.add(
                    models.PacsExport(
                        study_id=study_id, sop_instance_uid=uid, kind=kind, reason=reason, sent_by=actor.id
                    )
                )
        for row in session.scalars(select(models.PacsImport).where(models.PacsImport.study_id == study_id)):
            row.sent_at = _now()
        write_audit(
            session,
            actor,
            "export",
            "study",
            study_id,
            patient_id=patient.patient_id if patient is not None else None,
            after={
                "to": url,
                "stored": list(result.stored),
                "failed": list(result.failed),
                "reason": reason,
            },
            detail="structured report and secondary capture stored to the PACS",
        )
