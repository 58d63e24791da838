"""A referral inside one installation: propose departments for a film, deliver it, and the departments' answers.

Delivering is rows in the shared database (``referrals`` + one ``referral_targets`` row per department); each
department reads the film, the AI read, the patient block and the crew's note from them. A doctor of a target
site accepts or declines with a reason. Every answer starts with one guarded UPDATE of the referral row
(``WHERE status = 'open'``): it takes the row's write lock on both databases, so answers to one referral are
serialised, and the first acceptance closes the referral for the other departments; a later acceptance finds the
referral closed and is told who took the patient. Everything is audited (entity ``referral``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from core import audit
from core.auth import AuthenticatedUser
from core.errors import ConflictError, NotFound, PermissionDenied, ValidationError
from core.referral import rule
from core.xray.diagnosis import DiagnosisView, get_diagnosis
from db import models
from db.base import utcnow
from db.session import session_scope

SENDERS = ("ambulance", "doctor")  # roles that may refer a film
NOTE_LIMIT = 2000
REASON_LIMIT = 1000
MAX_TARGETS = rule.PROPOSED


@dataclass(frozen=True)
class Proposal:
    """The rule's answer for one film: the findings it used, the crew's position, every department ranked."""

    study_id: int
    findings: tuple[str, ...]  # flagged findings, urgent first
    lat: float
    lon: float
    ranked: tuple[rule.Suggestion, ...]

    @property
    def proposed(self) -> tuple[rule.Suggestion, ...]:
        return self.ranked[:MAX_TARGETS]


@dataclass(frozen=True)
class TargetView:
    """One department's side of a referral."""

    site_code: str
    site_name: str
    rank: int
    distance_km: float
    reasons: str
    status: str  # pending | accepted | declined | closed
    answered_by: str | None
    answered_at: datetime | None
    answer_reason: str


@dataclass(frozen=True)
class ReferralView:
    """A referral with its patient block, the read it carries and every department's answer."""

    id: int
    study_id: int
    status: str  # open | accepted | declined
    created_at: datetime
    closed_at: datetime | None
    sent_by: str
    from_site: str | None
    note: str
    patient_id: str
    patient_name: str
    sex: str
    age: int
    triage_level: str
    likely: tuple[str, ...]
    possible: tuple[str, ...]
    accepted_by_site: str | None
    targets: tuple[TargetView, ...]

    @property
    def first_answer_at(self) -> datetime | None:
        times = [t.answered_at for t in self.targets if t.answered_at is not None]
        return min(times) if times else None

    @property
    def seconds_to_first_answer(self) -> float | None:
        first = self.first_answer_at
        return None if first is None else (first - self.created_at).total_seconds()

    def target(self, site_code: str) -> TargetView | None:
        return next((t for t in self.targets if t.site_code == site_code), None)


def _age(born: date, on: date) -> int:
    return on.year - born.year - ((on.month, on.day) < (born.month, born.day))


def rule_findings(view: DiagnosisView) -> tuple[str, ...]:
    """What the rule serves: the read's urgent findings (the model card's triage findings) that are likely or
    possible, then its other likely findings; urgent first, in the read's order (likely before possible)."""
    urgent = {f.name for f in view.findings if f.urgent}
    flagged = [*view.likely, *(f for f in view.possible if f not in view.likely)]
    chosen = [f for f in flagged if f in urgent or f in view.likely]
    return tuple(sorted(chosen, key=lambda name: (name not in urgent, chosen.index(name))))


def _places(session: Session) -> list[rule.Place]:
    query = select(models.Site).where(models.Site.kind == "ed", models.Site.active.is_(True))
    return [
        rule.Place(s.code, s.name, s.lat, s.lon, tuple(s.capabilities or ())) for s in session.scalars(query)
    ]


def _position(
    session: Session, actor: AuthenticatedUser, lat: float | None, lon: float | None
) -> tuple[float, float]:
    if lat is not None and lon is not None:
        if not (-90 <= lat <= 90 and -180 <= lon <= 180):
            raise ValidationError({"location": "The location must be a latitude and a longitude in degrees."})
        return lat, lon
    user = session.get(models.User, actor.id)
    site = session.get(models.Site, user.site_id) if user is not None and user.site_id else None
    if site is None:
        raise ValidationError({"location": "Give the crew's location: your account belongs to no site."})
    return site.lat, site.lon


def _require_sender(actor: AuthenticatedUser) -> None:
    if actor.role not in SENDERS:
        raise PermissionDenied("Only an ambulance crew or a doctor can refer a film.")


def propose(
    study_id: int, actor: AuthenticatedUser, *, lat: float | None = None, lon: float | None = None
) -> Proposal:
    """The departments for ``study_id``'s read from the crew's position (default: the crew's site), ranked."""
    _require_sender(actor)
    view = get_diagnosis(study_id, actor)
    findings = rule_findings(view)
    with session_scope() as session:
        where = _position(session, actor, lat, lon)
        places = _places(session)
    return Proposal(study_id, findings, *where, rule.rank(places, findings, *where))


def create_referral(
    study_id: int,
    site_codes: Sequence[str],
    note: str,
    actor: AuthenticatedUser,
    *,
    lat: float | None = None,
    lon: float | None = None,
) -> int:
    """Send ``study_id`` to the departments ``site_codes`` (1-3, the crew's confirmed choice) with ``note``;
    returns the referral ID. Each target keeps the rule's reasons for it. Audited."""
    _require_sender(actor)
    codes = list(dict.fromkeys(c.strip().upper() for c in site_codes if c.strip()))
    if not 1 <= len(codes) <= MAX_TARGETS:
        raise ValidationError({"sites": f"Choose between 1 and {MAX_TARGETS} departments."})
    note = note.strip()
    if len(note) > NOTE_LIMIT:
        raise ValidationError({"note": f"The note is longer than {NOTE_LIMIT} characters."})
    view = get_diagnosis(study_id, actor, audit=False)
    findings = rule_findings(view)
    with session_scope() as session:
        where = _position(session, actor, lat, lon)
        places = {p.code: p for p in _places(session)}
        unknown = [c for c in codes if c not in places]
        if unknown:
            raise ValidationError({"sites": f"Not a department that takes referrals: {', '.join(unknown)}."})
        ranked = rule.rank(list(places.values()), findings, *where)
        order = {s.code: i for i, s in enumerate(ranked)}
        chosen = sorted((s for s in ranked if s.code in codes), key=lambda s: order[s.code])
        user = session.get_one(models.User, actor.id)
        referral = models.Referral(
            study_id=study_id,
            created_by=actor.id,
            from_site_id=user.site_id,
            lat=where[0],
            lon=where[1],
            note=note,
            status="open",
        )
        session.add(referral)
        session.flush()
        ids = {s.code: s.id for s in session.scalars(select(models.Site).where(models.Site.code.in_(codes)))}
        for suggestion in chosen:
            session.add(
                models.ReferralTarget(
                    referral_id=referral.id,
                    site_id=ids[suggestion.code],
                    rank=order[suggestion.code] + 1,
                    distance_km=suggestion.distance_km,
                    reasons=suggestion.reasons[:REASON_LIMIT],
                    status="pending",
                    answer_reason="",
                )
            )
        audit.write(
            session,
            actor,
            "create",
            "referral",
            referral.id,
            patient_id=view.patient_id,
            after={
                "study_id": study_id,
                "sites": [s.code for s in chosen],
                "proposed": [s.code for s in ranked[:MAX_TARGETS]],
                "findings": list(findings),
                "note": note,
            },
            detail="referred to " + ", ".join(s.code for s in chosen),
        )
        return referral.id


def answer(referral_id: int, actor: AuthenticatedUser, *, accept: bool, reason: str = "") -> ReferralView:
    """``actor``'s department accepts or declines the referral (a reason is required to decline).

    ``ConflictError`` when the referral is already closed (another department accepted, or it was answered by
    everyone); ``PermissionDenied`` when the actor's site is not one of its departments."""
    reason = reason.strip()
    if not accept and not reason:
        raise ValidationError({"reason": "Say why the department declines."})
    if len(reason) > REASON_LIMIT:
        raise ValidationError({"reason": f"The reason is longer than {REASON_LIMIT} characters."})
    if actor.role not in ("doctor", "admin"):
        raise PermissionDenied("Only a doctor of the receiving department can answer a referral.")
    now = utcnow()
    with session_scope() as session:
        # First statement: the guarded UPDATE takes the referral row's write lock (PostgreSQL) / the database
        # write lock (SQLite) before anything is read, so answers to one referral never interleave.
        result = session.execute(
            update(models.Referral)
            .where(models.Referral.id == referral_id, models.Referral.status == "open")
            .values(version=models.Referral.version + 1)
            .execution_options(synchronize_session=False)
        )
        opened = int(getattr(result, "rowcount", 0) or 0)
        referral = session.get(models.Referral, referral_id, populate_existing=True)
        if referral is None:
            raise NotFound(f"No referral with ID {referral_id}.")
        user = session.get_one(models.User, actor.id)
        target = session.scalars(
            select(models.ReferralTarget).where(
                models.ReferralTarget.referral_id == referral_id,
                models.ReferralTarget.site_id == user.site_id,
            )
        ).first()
        if user.site_id is None or target is None:
            raise PermissionDenied("This referral was not sent to your department.")
        if not opened or target.status != "pending":
            taken = session.get(models.Site, referral.accepted_site_id) if referral.accepted_site_id else None
            if taken is not None:
                raise ConflictError(
                    f"This referral is closed: {taken.name} has already accepted the patient."
                )
            raise ConflictError("This referral has already been answered by your department or closed.")
        target.status = "accepted" if accept else "declined"
        target.answered_by = actor.id
        target.answered_at = now
        target.answer_reason = reason
        patient_id = session.scalars(
            select(models.Patient.patient_id)
            .join(models.Study, models.Study.patient_pk == models.Patient.id)
            .where(models.Study.id == referral.study_id)
        ).one()
        if accept:
            referral.status = "accepted"
            referral.accepted_site_id = user.site_id
            referral.closed_at = now
            others = session.scalars(
                select(models.ReferralTarget).where(
                    models.ReferralTarget.referral_id == referral_id,
                    models.ReferralTarget.id != target.id,
                    models.ReferralTarget.status == "pending",
                )
            )
            for other in others:
                other.status = "closed"
        else:
            session.flush()
            pending = session.scalars(
                select(models.ReferralTarget.id).where(
                    models.ReferralTarget.referral_id == referral_id,
                    models.ReferralTarget.status == "pending",
                )
            ).first()
            if pending is None:
                referral.status = "declined"
                referral.closed_at = now
        audit.write(
            session,
            actor,
            "update",
            "referral",
            referral_id,
            patient_id=patient_id,
            before={"status": "pending"},
            after={"status": target.status, "reason": reason, "referral": referral.status},
            detail="accepted" if accept else "declined",
        )
    return get_referral(referral_id, actor, audit_read=False)


def _views(session: Session, referrals: Sequence[models.Referral]) -> tuple[ReferralView, ...]:
    if not referrals:
        return ()
    ids = [r.id for r in referrals]
    targets = session.scalars(
        select(models.ReferralTarget)
        .where(models.ReferralTarget.referral_id.in_(ids))
        .order_by(models.ReferralTarget.referral_id, models.ReferralTarget.rank)
    ).all()
    sites = {s.id: s for s in session.scalars(select(models.Site))}
    user_ids = {r.created_by for r in referrals} | {t.answered_by for t in targets if t.answered_by}
    users = {u.id: u for u in session.scalars(select(models.User).where(models.User.id.in_(user_ids)))}
    today = datetime.now(UTC).date()
    out = []
    for r in referrals:
        study = session.get_one(models.Study, r.study_id)
        patient = session.get_one(models.Patient, study.patient_pk)
        diagnosis = session.scalars(
            select(models.Diagnosis)
            .where(models.Diagnosis.study_id == study.id)
            .order_by(models.Diagnosis.id.desc())
        ).first()
        tiers = (diagnosis.triage_rule or {}) if diagnosis is not None else {}
        likely = tuple(tiers.get("likely", ()))
        possible = tuple(f for f in tiers.get("possible", ()) if f not in likely)
        mine = [t for t in targets if t.referral_id == r.id]
        out.append(
            ReferralView(
                id=r.id,
                study_id=r.study_id,
                status=r.status,
                created_at=r.created_at,
                closed_at=r.closed_at,
                sent_by=users[r.created_by].full_name or users[r.created_by].username,
                from_site=sites[r.from_site_id].name if r.from_site_id in sites else None,
                note=r.note,
                patient_id=patient.patient_id,
                patient_name=f"{patient.given_name} {patient.family_name}".strip(),
                sex=patient.sex,
                age=_age(patient.date_of_birth, today),
                triage_level=diagnosis.triage_level if diagnosis is not None else "",
                likely=likely,
                possible=possible,
                accepted_by_site=sites[r.accepted_site_id].name if r.accepted_site_id in sites else None,
                targets=tuple(
                    TargetView(
                        site_code=sites[t.site_id].code,
                        site_name=sites[t.site_id].name,
                        rank=t.rank,
                        distance_km=t.distance_km,
                        reasons=t.reasons,
                        status=t.status,
                        answered_by=(users[t.answered_by].full_name or users[t.answered_by].username)
                        if t.answered_by in users
                        else None,
                        answered_at=t.answered_at,
                        answer_reason=t.answer_reason,
                    )
                    for t in mine
                ),
            )
        )
    return tuple(out)


def get_referral(referral_id: int, actor: AuthenticatedUser, *, audit_read: bool = True) -> ReferralView:
    """One referral (its sender, a doctor of one of its departments, or an admin may read it)."""
    with session_scope() as session:
        referral = session.get(models.Referral, referral_id)
        if referral is None:
            raise NotFound(f"No referral with ID {referral_id}.")
        user = session.get_one(models.User, actor.id)
        site_ids = set(
            session.scalars(
                select(models.ReferralTarget.site_id).where(models.ReferralTarget.referral_id == referral_id)
            )
        )
        if not (actor.is_admin or referral.created_by == actor.id or user.site_id in site_ids):
            raise PermissionDenied("This referral was neither sent by you nor to your department.")
        (view,) = _views(session, [referral])
        if audit_read:
            audit.write(session, actor, "view", "referral", referral_id, patient_id=view.patient_id)
        return view


def sent_by(actor: AuthenticatedUser, *, limit: int = 20) -> tuple[ReferralView, ...]:
    """The crew's referrals, newest first (what the crew's screen polls). Not audited per poll: the crew
    reads its own referrals, whose creation is audited."""
    with session_scope() as session:
        rows = session.scalars(
            select(models.Referral)
            .where(models.Referral.created_by == actor.id)
            .order_by(models.Referral.id.desc())
            .limit(limit)
        ).all()
        return _views(session, rows)


def incoming(actor: AuthenticatedUser, *, limit: int = 20) -> tuple[ReferralView, ...]:
    """Referrals sent to the actor's department: those waiting for its answer first (oldest first), then the
    rest, newest first. Audited as a listing when there is something to show."""
    with session_scope() as session:
        user = session.get_one(models.User, actor.id)
        if user.site_id is None:
            return ()
        rows = session.execute(
            select(models.Referral, models.ReferralTarget.status)
            .join(models.ReferralTarget, models.ReferralTarget.referral_id == models.Referral.id)
            .where(models.ReferralTarget.site_id == user.site_id)
            .order_by(models.Referral.id.desc())
            .limit(limit)
        ).all()
        waiting = sorted((r for r, status in rows if status == "pending"), key=lambda r: r.id)
        rest = [r for r, status in rows if status != "pending"]
        views = _views(session, [*waiting, *rest])
        if views:
            audit.write(session, actor, "list", "referral", None, detail=f"{len(views)} incoming referrals")
        return views


def waiting_count(actor: AuthenticatedUser) -> int:
    """How many referrals wait for the answer of the actor's department (0 without a site): the alert."""
    with session_scope() as session:
        user = session.get(models.User, actor.id)
        if user is None or user.site_id is None:
            return 0
        return len(
            session.scalars(
                select(models.ReferralTarget.id).where(
                    models.ReferralTarget.site_id == user.site_id, models.ReferralTarget.status == "pending"
                )
            ).all()
        )


@dataclass(frozen=True)
class RecentFilm:
    """A film the crew uploaded lately, to refer from the Referrals page."""

    study_id: int
    patient_id: str
    patient_name: str
    uploaded_at: datetime
    triage_level: str
    referred: bool


def recent_films(actor: AuthenticatedUser, *, limit: int = 5) -> tuple[RecentFilm, ...]:
    """The films ``actor`` uploaded, newest first, and whether each has been referred already."""
    with session_scope() as session:
        studies = session.scalars(
            select(models.Study)
            .where(models.Study.uploaded_by == actor.id)
            .order_by(models.Study.id.desc())
            .limit(limit)
        ).all()
        out = []
        for study in studies:
            patient = session.get_one(models.Patient, study.patient_pk)
            level = session.scalars(
                select(models.Diagnosis.triage_level)
                .where(models.Diagnosis.study_id == study.id)
                .order_by(models.Diagnosis.id.desc())
            ).first()
            referred = (
                session.scalars(
                    select(models.Referral.id).where(models.Referral.study_id == study.id)
                ).first()
                is not None
            )
            out.append(
                RecentFilm(
                    study.id,
                    patient.patient_id,
                    f"{patient.given_name} {patient.family_name}".strip(),
                    study.uploaded_at,
                    level or "",
                    referred,
                )
            )
        return tuple(out)
