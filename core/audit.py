"""The audit log: the actions it records, writing a row, and the admin's listing.

Every service that changes or shows patient data writes its row with :func:`write` on the session of the
action itself, so the row commits or rolls back with the change. :func:`write` is the one place that
shapes a row: strings are cut to their column lengths (``db.models.LIMITS``) and dates in ``before`` /
``after`` become ISO strings, so callers pass values as they have them.

This module sits below ``core.auth`` (which writes login rows): it needs only the actor's ``id`` and
``username`` to write, and ``is_admin`` to list, so it does not import ``core.auth``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Protocol

from sqlalchemy.orm import Session

from core.errors import PermissionDenied, ValidationError
from core.origin import client, current_client, set_client
from core.validation import normalize_patient_id
from db import repository as repo
from db.models import LIMITS
from db.session import session_scope

__all__ = [
    "ACTIONS",
    "SYSTEM",
    "Actor",
    "AuditEntry",
    "AuditPage",
    "client",
    "current_client",
    "list_audit",
    "set_client",
    "write",
]

#: Actions written to the audit log (for the admin page's filter).
ACTIONS: tuple[str, ...] = (
    "login",
    "login_failed",
    "account_locked",
    "logout",
    "user_created",
    "view",
    "create",
    "update",
    "delete",
    "seed",
    "diagnose",
    "correct",
    "sign",
    "amend",
    "export",
    "promote",
    "promote_refused",
    "account_unlocked",
    "account_deactivated",
    "account_activated",
    "password_reset",
    "password_changed",
    "search",
    "list",
    "upload_refused",
    "audit_read",
    "storage_gc",
    "report",
)

_MAX_LIMIT = 1000


class Who(Protocol):
    """Whoever acts: a signed-in ``core.auth.AuthenticatedUser`` or an :class:`Actor`."""

    @property
    def id(self) -> int | None: ...

    @property
    def username(self) -> str: ...


class Admin(Who, Protocol):
    """An actor that may or may not be an administrator."""

    @property
    def is_admin(self) -> bool: ...


@dataclass(frozen=True)
class Actor:
    """An actor without an account row: the command line, or a login attempt for an unknown name."""

    id: int | None
    username: str


#: The command line and jobs (seeding, creating the first admin): no user row.
SYSTEM = Actor(None, "system")


@dataclass(frozen=True)
class AuditEntry:
    """One audit row; ``before``/``after`` hold the changed fields (``None`` for views and logins)."""

    id: int
    at: datetime
    user_id: int | None
    username: str
    action: str
    entity_type: str
    entity_id: str | None
    patient_id: str | None
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    detail: str
    client: str | None = None  # where it came from (revision 0005): "web:<address>", "cli:<os user>@<host>"


@dataclass(frozen=True)
class AuditPage:
    """A page of audit rows (newest first) and the number of rows matching the filters."""

    entries: tuple[AuditEntry, ...]
    total: int
    limit: int
    offset: int


# ---------------------------------------------------------------- writing


def _cut(value: str, column: str) -> str:
    return value[: LIMITS[column]]


def _document(values: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if values is None:
        return None
    return {k: v.isoformat() if isinstance(v, date | datetime) else v for k, v in values.items()}


def write(
    session: Session,
    actor: Who,
    action: str,
    entity_type: str,
    entity_id: object = None,
    *,
    patient_id: str | None = None,
    before: Mapping[str, Any] | None = None,
    after: Mapping[str, Any] | None = None,
    detail: str = "",
    at: datetime | None = None,
    client: str | None = None,
) -> None:
    """Append an audit row in ``session`` (the caller's transaction): ``actor`` did ``action`` (one of
    :data:`ACTIONS`) to ``entity_type`` ``entity_id`` of ``patient_id``; ``at`` defaults to now, ``client``
    to this thread's :func:`current_client`."""
    where = client or current_client()
    repo.add_audit(
        session,
        user_id=actor.id,
        username=_cut(actor.username, "username"),
        action=_cut(action, "audit_action"),
        entity_type=_cut(entity_type, "audit_entity_type"),
        entity_id=_cut(str(entity_id), "audit_entity_id") if entity_id is not None else None,
        patient_id=_cut(patient_id, "patient_id") if patient_id is not None else None,
        before=_document(before),
        after=_document(after),
        detail=_cut(detail, "audit_detail"),
        at=at,
        client=_cut(where, "audit_client") if where else None,
    )


# ---------------------------------------------------------------- listing


def _start_of(value: date | datetime) -> datetime:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    return datetime.combine(value, time.min, tzinfo=UTC)


def _period(
    date_from: date | datetime | None, date_to: date | datetime | None
) -> tuple[datetime | None, ...]:
    """``[since, until)`` in UTC from inclusive bounds (a ``date`` is that whole UTC day)."""
    since = _start_of(date_from) if date_from is not None else None
    until: datetime | None = None
    if isinstance(date_to, datetime):
        until = _start_of(date_to) + timedelta(microseconds=1)
    elif date_to is not None:
        until = _start_of(date_to) + timedelta(days=1)
    if since is not None and until is not None and since >= until:
        raise ValidationError({"date_to": "The end date must not be before the start date."})
    return since, until


def list_audit(
    actor: Admin,
    *,
    username: str | None = None,
    patient_id: str | None = None,
    action: str | None = None,
    date_from: date | datetime | None = None,
    date_to: date | datetime | None = None,
    limit: int = 100,
    offset: int = 0,
) -> AuditPage:
    """Audit rows, newest first, for admins only (``PermissionDenied`` otherwise).

    Filters combine with AND; ``date_from``/``date_to`` are inclusive (a ``date`` means that whole UTC day;
    a naive datetime is taken as UTC). ``limit`` is capped at 1000. The reading itself is audited
    (``audit_read``, with the filters and how many rows were shown), after the rows are read.
    """
    if not actor.is_admin:
        raise PermissionDenied()
    limit = max(1, min(limit, _MAX_LIMIT))
    offset = max(0, offset)
    since, until = _period(date_from, date_to)
    with session_scope() as session:
        rows, total = repo.query_audit(
            session,
            username=(username or "").strip().lower() or None,
            patient_id=normalize_patient_id(patient_id or "") or None,
            action=(action or "").strip() or None,
            since=since,
            until=until,
            limit=limit,
            offset=offset,
        )
        entries = tuple(
            AuditEntry(
                id=r.id,
                at=r.at,
                user_id=r.user_id,
                username=r.username,
                action=r.action,
                entity_type=r.entity_type,
                entity_id=r.entity_id,
                patient_id=r.patient_id,
                before=r.before,
                after=r.after,
                detail=r.detail,
                client=r.client,
            )
            for r in rows
        )
        filters = {
            "username": username,
            "patient_id": patient_id,
            "action": action,
            "date_from": date_from,
            "date_to": date_to,
            "offset": offset,
        }
        shown = {k: v for k, v in filters.items() if v}
        write(
            session, actor, "audit_read", "audit_log", after=shown, detail=f"{len(entries)} of {total} rows"
        )
    return AuditPage(entries=entries, total=total, limit=limit, offset=offset)
