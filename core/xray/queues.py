"""The studies waiting for a doctor (status 'new'), in two orders: one item type, two orderings.

* :func:`worklist`: the emergency worklist, most pressing triage level first, then longest waiting; on
  request followed by the films already read in the last hours (newest first), for "reviewed by".
* :func:`review_queue`: the review queue, least certain first, for doctors to label where it teaches most.
* :func:`waiting`: how many films wait to be read, and how many of them are urgent (the landing page).

The two lists return frozen :class:`QueueItem` rows; nothing here imports Streamlit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from core import audit
from core.audit import Who
from core.imaging import storage
from core.ml import triage
from core.ml.probability import logit
from core.xray.stored import findings_of, patient_name, tiers_of
from db import models
from db import repository as repo
from db.base import utcnow
from db.models import TRIAGE_LEVELS
from db.session import session_scope

WORKLIST_LIMIT = 200
READ_HOURS = 12  # how far back the worklist shows films already read (a shift)
#: How many of the oldest unreviewed studies the review queue ranks (far more than an ED accumulates).
QUEUE_SCAN_LIMIT = 5000

__all__ = [
    "QUEUE_SCAN_LIMIT",
    "WORKLIST_LIMIT",
    "QueueItem",
    "Waiting",
    "review_queue",
    "waiting",
    "worklist",
]


@dataclass(frozen=True)
class QueueItem:
    """An unreviewed study: who, when, the read's triage and top finding, and how close it is to flipping
    a finding (``margin``: min over findings of |logit(p) - logit(threshold)|, the review queue's key)."""

    study_id: int
    patient_id: str
    patient_name: str
    uploaded_at: datetime
    triage_level: str
    uncertain: bool
    uncertain_reason: str
    top_finding: str
    top_probability: float
    likely: tuple[str, ...]  # the read's two tiers (core.xray.stored.tiers_of)
    possible: tuple[str, ...]
    thumbnail_path: Path
    margin: float
    closest_finding: str
    closest_probability: float
    closest_threshold: float
    sex: str = "unknown"
    date_of_birth: date | None = None
    status: str = "new"  # new (not yet read) | reviewed | corrected


@dataclass(frozen=True)
class Waiting:
    """How many films wait for a doctor (the worklist's unread films) and how many of them are urgent."""

    total: int
    urgent: int


def _item(s: models.Study, d: models.Diagnosis, p: models.Patient, store: storage.FileStore) -> QueueItem:
    top_name, top_p = d.top3[0] if d.top3 else ("", 0.0)
    findings = findings_of(d)
    likely, possible = tiers_of(d)
    closest = min(findings, key=lambda f: abs(logit(f.probability) - logit(f.threshold)), default=None)
    return QueueItem(
        study_id=s.id,
        patient_id=p.patient_id,
        patient_name=patient_name(p),
        uploaded_at=s.uploaded_at,
        triage_level=d.triage_level,
        uncertain=d.uncertain,
        uncertain_reason=d.uncertain_reason,
        top_finding=str(top_name),
        top_probability=float(top_p),
        likely=likely,
        possible=possible,
        thumbnail_path=store.absolute(s.thumbnail_path),
        margin=abs(logit(closest.probability) - logit(closest.threshold)) if closest else math.inf,
        closest_finding=closest.name if closest else "",
        closest_probability=closest.probability if closest else 0.0,
        closest_threshold=closest.threshold if closest else 0.0,
        sex=p.sex,
        date_of_birth=p.date_of_birth,
        status=s.status,
    )


def _audit_listing(session: Session, actor: Who | None, what: str, items: tuple[QueueItem, ...]) -> None:
    # Which patients appeared on whose screen: the list, its length and the first patients shown.
    if actor is not None:
        shown = list(dict.fromkeys(i.patient_id for i in items))[:50]
        audit.write(session, actor, "list", what, after={"patients": shown}, detail=f"{len(items)} films")


def worklist(
    limit: int = WORKLIST_LIMIT,
    *,
    actor: Who | None = None,
    include_read: bool = False,
    read_hours: int = READ_HOURS,
    now: datetime | None = None,
) -> tuple[QueueItem, ...]:
    """Unreviewed studies of every patient: most pressing triage level first, then longest waiting; with
    ``include_read``, then the studies uploaded in the last ``read_hours`` that a doctor has read, newest
    first. Shown to ``actor``, the listing is audited (``list``)."""
    store = storage.FileStore()
    limit = max(1, min(limit, 1000))
    with session_scope() as session:
        rows = list(repo.unreviewed_studies(session, triage.LEVELS, limit))
        if include_read and len(rows) < limit:
            since = (now or utcnow()) - timedelta(hours=read_hours)
            rows += repo.recently_read_studies(session, since, limit - len(rows))
        items = tuple(_item(s, d, p, store) for s, d, p in rows)
        _audit_listing(session, actor, "worklist", items)
        return items


def review_queue(limit: int = 50, *, actor: Who | None = None) -> tuple[QueueItem, ...]:
    """Unreviewed studies (status 'new'), least certain first, for doctors to label where it teaches most.
    A film with a saved (or signed) reading is never listed: saving a reading sets its status.

    Rule (margin sampling on the calibrated probabilities): first the studies whose triage is marked
    *uncertain* (a deciding cut within reach, or an image near the out-of-scope limit: the rule itself was
    unsure), then by triage level (urgent first), then by ``margin`` = the smallest
    |logit(p) - logit(threshold)| over the findings (the read
    closest to flipping a finding), then oldest first. At most ``QUEUE_SCAN_LIMIT`` of the oldest
    unreviewed studies are ranked. Shown to ``actor``, the listing is audited (``list``).
    """
    store = storage.FileStore()
    with session_scope() as session:
        rows = repo.new_studies_with_latest_diagnosis(session, QUEUE_SCAN_LIMIT)
        items = [_item(s, d, p, store) for s, d, p in rows]
        # Among equally uncertain films the most pressing triage level first (issue 12), then the margin.
        rank = {level: n for n, level in enumerate(TRIAGE_LEVELS)}
        items.sort(
            key=lambda i: (not i.uncertain, rank.get(i.triage_level, 99), i.margin, i.uploaded_at, i.study_id)
        )
        shown = tuple(items[: max(1, min(limit, 1000))])
        _audit_listing(session, actor, "review_queue", shown)
    return shown


def waiting() -> Waiting:
    """How many films the worklist holds unread (not withdrawn), and how many of them the newest read
    triaged urgent: two numbers, counted in the database (no film is listed, so nothing is audited)."""
    by_level = (
        select(models.Diagnosis.triage_level, func.count())
        .select_from(models.Study)
        # the newest diagnosis of each film, as the worklist joins it (repo.unreviewed_studies)
        .join(models.Diagnosis, models.Diagnosis.id == repo._latest_diagnosis_id())
        .where(models.Study.status == "new", models.Study.withdrawn_at.is_(None))
        .group_by(models.Diagnosis.triage_level)
    )
    with session_scope() as session:
        counts = {str(level): int(n) for level, n in session.execute(by_level)}
    return Waiting(total=sum(counts.values()), urgent=counts.get("urgent", 0))
