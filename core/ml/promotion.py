"""Promotion: an admin changes the active model version of a kind, by the rules, with an audit row.

:func:`promote` refuses a candidate that measures worse than the active version on its card's headline
test metric, that was measured on another test split, that serves the very same network under a new name, or
that lacks a safeguard the active classifier serves with (film check, triage fit), unless the admin writes a
reason. Diagnoses record
the version that made them, so a promotion never changes a saved result; the next diagnosis uses the new
version (``core.ml.inference`` resolves the active folder on every call).

The files are ``core.ml.registry`` (which never touches the database); this module adds the use case on top
of it: the rules, the audit rows of a promotion or a refusal, and writing the two together.
"""

from __future__ import annotations

import enum
import logging
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from core import audit
from core.auth import AuthenticatedUser, require_admin
from core.config import get_settings
from core.errors import AppError, ConflictError, ValidationError
from core.ml import registry
from core.ml.registry import Comparison, ModelVersion
from db.session import session_scope

log = logging.getLogger(__name__)

#: An override needs a written reason at least this long (after trimming), and not one character repeated.
MIN_REASON_CHARS = 10
MAX_REASON_CHARS = 500
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")  # a reason may have tabs and line breaks, nothing else


class PromotionRefused(AppError):
    """A promotion the rules do not allow; ``str()`` says why, for an admin or IT reader.

    ``overridable`` is True when a written reason (``override_reason``) would let the same promotion through:
    the candidate measures worse, cannot be measured, was measured on another test split, is the active
    version's network byte for byte, or lacks the active version's film check or triage fit.
    """

    def __init__(self, message: str, comparison: Comparison | None = None, *, overridable: bool) -> None:
        super().__init__(message)
        self.comparison = comparison
        self.overridable = overridable


class _Unchecked(enum.Enum):
    UNCHECKED = "unchecked"


#: Default of ``promote(expected_active=...)``: promote whatever is active now.
UNCHECKED = _Unchecked.UNCHECKED


@dataclass(frozen=True)
class Promotion:
    """A promotion that happened: ``kind``'s active version is now ``version`` (it was ``previous``)."""

    kind: str
    version: str
    previous: str | None
    comparison: Comparison
    override_reason: str | None  # the admin's reason, when the rules needed one (or one was given)

    @property
    def overridden(self) -> bool:
        """True when the promotion went through only because of ``override_reason``."""
        return self.comparison.needs_override

    def message(self) -> str:
        """What happened, for the person who asked."""
        was = f" (was {self.previous})" if self.previous else ""
        text = f"{self.version} is now the active {self.kind}{was}; new diagnoses use it."
        return f"{text} Promoted over the rules with the reason recorded." if self.overridden else text


@dataclass(frozen=True)
class _Attempt:
    """Who asks to make which version active, over which one (``current``), with which reason."""

    actor: AuthenticatedUser
    kind: str
    version: str
    current: str | None
    reason: str | None


def reason_is_sufficient(reason: str | None) -> bool:
    """Whether ``reason`` can justify an override: at least MIN_REASON_CHARS, and not one repeated character."""
    text = (reason or "").strip()
    return len(text) >= MIN_REASON_CHARS and len({ch for ch in text.casefold() if ch.isalnum()}) >= 3


def promote(
    kind: str,
    version: str,
    actor: AuthenticatedUser,
    *,
    override_reason: str | None = None,
    expected_active: str | None | _Unchecked = UNCHECKED,
    models_dir: Path | None = None,
) -> Promotion:
    """Make ``version`` the active ``kind`` model, as ``actor`` (an admin), if the rules allow it.

    Refused with :class:`PromotionRefused` (and the attempt audited as ``promote_refused``) when the candidate
    measures worse than the active version on the card's headline test metric, has no such metric, was
    measured on another test split, serves the active version's network byte for byte, or lacks a safeguard
    the active version has (``registry.lacking``) — unless ``override_reason`` is a real reason (see
    :func:`reason_is_sufficient`) — and always when it is already active or its card names another version.
    ``expected_active`` is the active version the admin's decision was based on: if another admin promoted
    meanwhile, ``ConflictError`` (audited too). A promotion writes its ``promote`` audit row and the registry
    together: the registry is replaced inside the transaction, and put back if the commit fails. Also raises
    ``PermissionDenied`` (not an admin), ``ValidationError`` (bad names, a reason too long) and
    ``ModelNotAvailable`` (no such version).
    """
    require_admin(actor)
    registry.check_names(kind, version)
    reason = _clean_reason(override_reason)
    base = models_dir or get_settings().models_dir
    with registry.registry_lock(base):
        active = registry.read_registry(base)
        attempt = _Attempt(actor, kind, version, active.get(kind), reason)
        _check_not_overtaken(attempt, expected_active)
        candidate = registry.load_version(kind, base / kind / version, attempt.current)
        _check_candidate(attempt, candidate)
        comparison = registry.compare_versions(
            candidate, registry.active_version(kind, base, attempt.current)
        )
        _check_rules(attempt, comparison)
        _save(attempt, comparison, base, active)
    log.info("%s promoted %s %s (was %s)", actor.username, kind, version, attempt.current)
    return Promotion(kind, version, attempt.current, comparison, reason)


# ---------------------------------------------------------------- the steps


def _clean_reason(reason: str | None) -> str | None:
    if reason is None:
        return None
    text = reason.strip()
    if len(text) > MAX_REASON_CHARS:
        raise ValidationError({"override_reason": f"Keep the reason under {MAX_REASON_CHARS} characters."})
    if _CONTROL.search(text):
        raise ValidationError({"override_reason": "The reason contains control characters."})
    return text or None


def _check_not_overtaken(attempt: _Attempt, expected_active: str | None | _Unchecked) -> None:
    """``ConflictError`` (audited) if the active version is no longer the one the admin decided against."""
    if expected_active is UNCHECKED or attempt.current == expected_active:
        return
    message = (
        f"The active {attempt.kind} changed from {expected_active or 'none'} to {attempt.current or 'none'} "
        "since you compared the versions (someone else promoted meanwhile). Reload, compare again and decide."
    )
    _refuse(attempt, message, overridable=False)
    raise ConflictError(message)


def _check_candidate(attempt: _Attempt, candidate: ModelVersion) -> None:
    """Refuse a version that is already active, or whose card names another version."""
    if attempt.version == attempt.current:
        message = f"{attempt.version} is already the active {attempt.kind}."
        raise _refuse(replace(attempt, reason=None), message, overridable=False)
    if candidate.card_version != attempt.version:
        message = (
            f"The model card in {candidate.path} names version {candidate.card_version!r}, not "
            f"{attempt.version!r}: diagnoses would record the wrong version. Fix the card (IT) before promoting."
        )
        raise _refuse(attempt, message, overridable=False)


def _check_rules(attempt: _Attempt, comparison: Comparison) -> None:
    """Refuse a candidate the rules do not let through without a sufficient reason."""
    if comparison.needs_override and not reason_is_sufficient(attempt.reason):
        message = (
            f"{comparison.summary()} Promotion refused: to promote it anyway, give a reason of at least "
            f"{MIN_REASON_CHARS} characters; it is kept in the audit log."
        )
        raise _refuse(attempt, message, comparison=comparison, overridable=True)


def _save(attempt: _Attempt, comparison: Comparison, base: Path, active: dict[str, str]) -> None:
    """Write the ``promote`` audit row and the registry together; the registry is put back if the commit
    fails, so the active version never changes without its audit row."""
    detail = comparison.summary()
    if comparison.needs_override:
        detail = f"Override: {attempt.reason} | {detail}"
    against = comparison.against
    written = False
    try:
        with session_scope() as session:
            audit.write(
                session,
                attempt.actor,
                "promote",
                "model",
                attempt.version,
                before=against.audit_document() if against else {"kind": attempt.kind, "version": None},
                after={**_measured(comparison), "override_reason": attempt.reason},
                detail=detail,
            )
            session.flush()  # a database problem surfaces here, before the registry is touched
            registry.write_registry(base, {**active, attempt.kind: attempt.version})
            written = True
    except BaseException:
        if written:
            registry.write_registry(base, active)
        raise


def _measured(comparison: Comparison) -> dict[str, Any]:
    """What the audit log keeps of a candidate and how it compared."""
    return {
        **comparison.candidate.audit_document(),
        "delta": comparison.delta,
        "verdict": comparison.verdict,
        "fair": comparison.fair,
    }


def _refuse(
    attempt: _Attempt, message: str, *, overridable: bool, comparison: Comparison | None = None
) -> PromotionRefused:
    """Audit a refused attempt (in its own transaction) and return the error for the caller to raise."""
    against = comparison.against if comparison is not None else None
    before = against.audit_document() if against else {"kind": attempt.kind, "version": attempt.current}
    after = _measured(comparison) if comparison else {"kind": attempt.kind, "version": attempt.version}
    with session_scope() as session:
        audit.write(
            session,
            attempt.actor,
            "promote_refused",
            "model",
            attempt.version,
            before=before,
            after={**after, "override_reason": attempt.reason},
            detail=message,
        )
    return PromotionRefused(message, comparison, overridable=overridable)
