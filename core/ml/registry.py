"""Which model version of each kind is active, where its files are, and promotion of another version.

``models/registry.json`` names the active version per kind (``classifier``, ``detector``); each version is a
folder ``models/<kind>/<version>/`` holding its weights and ``card.json``. Promotion (changing the active
version) is an explicit, audited act: :func:`promote` refuses a candidate that measures worse than the active
version on its card's headline test metric, or that was measured on another test split, unless an admin
writes a reason. Diagnoses record the version that made them, so promotion never changes a saved result;
``core.ml.inference`` resolves the active folder on every call, so the next diagnosis uses the new version.

Reading the registry needs nothing but the files (``python -m core diagnose`` stays free of the database
stack); :func:`promote` imports the database layer when it is called.
"""

from __future__ import annotations

import enum
import fcntl
import json
import logging
import math
import os
import re
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from core.config import get_settings
from core.errors import AppError, ConflictError, ValidationError

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from core.auth import AuthenticatedUser

log = logging.getLogger(__name__)

KINDS: tuple[str, ...] = ("classifier", "detector")
#: An override needs a written reason at least this long (after trimming), and not one character repeated.
MIN_REASON_CHARS = 10
MAX_REASON_CHARS = 500
# Same bound as db.models.LIMITS["model_version"] (a test keeps them equal): every diagnosis stores the
# version name, so a longer one could never be saved. No "/" or "..": the name becomes a folder path.
MAX_VERSION_CHARS = 64
_VERSION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")  # a reason may have tabs and line breaks, nothing else
# Headlines are compared exactly; this only absorbs float noise from re-serialising the same number.
_EQUAL = 1e-9

Verdict = Literal["better", "worse", "equal", "unmeasured", "no active version"]


class ModelNotAvailable(AppError):
    """The active model of a kind is missing or incomplete on disk."""


class PromotionRefused(AppError):
    """A promotion the rules do not allow; ``str()`` says why, for an admin or IT reader.

    ``overridable`` is True when a written reason (``override_reason``) would let the same promotion through:
    the candidate measures worse, cannot be measured, or was measured on another test split.
    """

    def __init__(self, message: str, comparison: Comparison | None = None, *, overridable: bool) -> None:
        super().__init__(message)
        self.comparison = comparison
        self.overridable = overridable


class _Unchecked(enum.Enum):
    UNCHECKED = "unchecked"


#: Default of ``promote(expected_active=...)``: promote whatever is active now.
UNCHECKED = _Unchecked.UNCHECKED


# ---------------------------------------------------------------- the registry file


def registry_path(models_dir: Path | None = None) -> Path:
    return (models_dir or get_settings().models_dir) / "registry.json"


def read_registry(models_dir: Path | None = None) -> dict[str, str]:
    path = registry_path(models_dir)
    if not path.exists():
        return {}
    return {k: str(v) for k, v in json.loads(path.read_text()).items()}


def active_model_dir(kind: str, models_dir: Path | None = None) -> Path:
    """Folder of the active version of ``kind``; raises ModelNotAvailable with a message for IT staff."""
    base = models_dir or get_settings().models_dir
    version = read_registry(base).get(kind)
    if not version:
        raise ModelNotAvailable(f"No active {kind} model is configured in {registry_path(base)}.")
    folder = base / kind / version
    if not (folder / "card.json").exists():
        raise ModelNotAvailable(f"The active {kind} model {version!r} is missing from {folder}.")
    return folder


def set_active(kind: str, version: str, models_dir: Path | None = None) -> None:
    """Make ``version`` the active model of ``kind`` (the folder must exist), without checks or audit.

    For publishing a first version from a training job; people change the active version with :func:`promote`.
    """
    base = models_dir or get_settings().models_dir
    if not (base / kind / version / "card.json").exists():
        raise ModelNotAvailable(f"There is no {kind} model {version!r} in {base / kind}.")
    with _registry_lock(base):
        registry = read_registry(base)
        registry[kind] = version
        _write_registry(base, registry)


@contextmanager
def _registry_lock(base: Path) -> Iterator[None]:
    """Serialize registry writers across threads and processes (dashboard, command line, training jobs).

    The lock is taken on the models folder itself: flock works on a directory descriptor, and no lock file
    is left in a folder that is committed. Each call opens its own descriptor, so threads exclude each other.
    """
    fd = os.open(base, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _write_registry(base: Path, registry: Mapping[str, str]) -> None:
    """Replace registry.json atomically: readers see the old file or the new one, never half of one."""
    target = registry_path(base)
    mode = target.stat().st_mode & 0o777 if target.exists() else 0o644
    fd, tmp = tempfile.mkstemp(prefix=".registry-", suffix=".tmp", dir=base)
    try:
        with os.fdopen(fd, "w") as out:
            out.write(json.dumps(dict(registry), indent=2, sort_keys=True) + "\n")
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, mode)  # mkstemp makes 0600; the dashboard may run as another user than the CLI
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# ---------------------------------------------------------------- versions and their metrics


@dataclass(frozen=True)
class _MetricSpec:
    """Where a kind's card keeps its headline metric (higher is better)."""

    name: str
    value: tuple[str, ...]
    ci95: tuple[str, ...]
    val_name: str
    val_value: tuple[str, ...]
    part_name: str  # the per-finding (per-class) metric
    parts: tuple[str, ...]
    part_key: str


_METRICS: dict[str, _MetricSpec] = {
    "classifier": _MetricSpec(
        name="test mean AUC",
        value=("metrics", "test", "mean_auc"),
        ci95=("metrics", "test", "mean_auc_ci95"),
        val_name="val mean AUC",
        val_value=("metrics", "val_mean_auc"),
        part_name="AUC",
        parts=("metrics", "test", "per_finding"),
        part_key="auc",
    ),
    "detector": _MetricSpec(
        name="test mAP50",
        value=("metrics", "test", "ultralytics", "map50"),
        ci95=("metrics", "test", "ultralytics", "map50_ci95"),
        val_name="val mAP50",
        val_value=("metrics", "val", "ultralytics", "map50"),
        part_name="AP50",
        parts=("metrics", "test", "ultralytics", "per_class"),
        part_key="ap50",
    ),
}
# Where cards record the size and identity of the test split they were measured on (classifier, detector).
_TEST_IMAGES = (("metrics", "test_images"), ("data", "images", "test"), ("metrics", "test", "images"))
_TEST_SPLIT_HASH = (("test_split_sha256",), ("metrics", "test_split_sha256"), ("data", "test_split_sha256"))


@dataclass(frozen=True)
class ModelVersion:
    """One version folder as its card describes it; ``value`` is the headline test metric (None if absent)."""

    kind: str
    version: str  # the folder name, which the registry names
    active: bool
    path: Path
    metric: str  # e.g. "test mean AUC"
    value: float | None
    ci95: tuple[float, float] | None
    val_metric: str
    val_value: float | None
    part_metric: str  # e.g. "AUC": the metric of ``per_finding``
    per_finding: tuple[tuple[str, float], ...] = ()
    created: date | None = None
    parent: str | None = None
    test_images: int | None = None
    test_split_sha256: str | None = None
    card_version: str | None = field(default=None, repr=False)  # what diagnoses made by it will record

    def finding_values(self) -> dict[str, float]:
        """Per-finding (per-class) test metric, in card order."""
        return dict(self.per_finding)

    def audit_document(self) -> dict[str, Any]:
        """What the audit log keeps of this version."""
        return {
            "kind": self.kind,
            "version": self.version,
            "metric": self.metric,
            "value": self.value,
            "ci95": list(self.ci95) if self.ci95 else None,
            "test_images": self.test_images,
            "test_split_sha256": self.test_split_sha256,
        }


def _dig(card: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    value: Any = card
    for key in path:
        if not isinstance(value, Mapping):
            return None
        value = value.get(key)
    return value


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def _first(card: Mapping[str, Any], paths: tuple[tuple[str, ...], ...]) -> Any:
    return next((v for v in (_dig(card, p) for p in paths) if v is not None), None)


def _created(card: Mapping[str, Any]) -> date | None:
    raw = card.get("created")
    if not isinstance(raw, str):
        return None
    try:
        return datetime.fromisoformat(raw).date()
    except ValueError:
        return None


def _check_kind(kind: str) -> _MetricSpec:
    if kind not in _METRICS:
        raise ValidationError({"kind": f"Unknown model kind {kind!r}; expected one of {', '.join(KINDS)}."})
    return _METRICS[kind]


def _check_version(version: str) -> None:
    if not _VERSION.fullmatch(version) or len(version) > MAX_VERSION_CHARS:
        raise ValidationError(
            {
                "version": f"{version!r} is not a model version name: up to {MAX_VERSION_CHARS} letters, "
                "digits, '.', '_' or '-', starting with a letter or digit."
            }
        )


def _load_version(kind: str, folder: Path, active: str | None) -> ModelVersion:
    spec = _METRICS[kind]
    try:
        card = json.loads((folder / "card.json").read_text())
    except FileNotFoundError:
        raise ModelNotAvailable(f"There is no {kind} model {folder.name!r} in {folder.parent}.") from None
    except (OSError, ValueError) as exc:
        raise ModelNotAvailable(f"The model card {folder / 'card.json'} cannot be read ({exc}).") from exc
    if not isinstance(card, Mapping):
        raise ModelNotAvailable(f"The model card {folder / 'card.json'} is not a JSON object.")
    ci = _dig(card, spec.ci95)
    ci95 = None
    if isinstance(ci, list | tuple) and len(ci) == 2 and all(_number(c) is not None for c in ci):
        ci95 = (float(ci[0]), float(ci[1]))
    parts = _dig(card, spec.parts)
    per_finding = tuple(
        (str(name), value)
        for name, part in (parts.items() if isinstance(parts, Mapping) else ())
        if (value := _number(_dig(part, (spec.part_key,)))) is not None
    )
    images = _first(card, _TEST_IMAGES)
    split_hash = _first(card, _TEST_SPLIT_HASH)
    parent = card.get("parent")
    return ModelVersion(
        kind=kind,
        version=folder.name,
        active=folder.name == active,
        path=folder,
        metric=spec.name,
        value=_number(_dig(card, spec.value)),
        ci95=ci95,
        val_metric=spec.val_name,
        val_value=_number(_dig(card, spec.val_value)),
        part_metric=spec.part_name,
        per_finding=per_finding,
        created=_created(card),
        parent=str(parent) if parent else None,
        test_images=images if isinstance(images, int) and not isinstance(images, bool) else None,
        test_split_sha256=str(split_hash) if split_hash else None,
        card_version=str(card["version"]) if card.get("version") else None,
    )


def get_version(kind: str, version: str, models_dir: Path | None = None) -> ModelVersion:
    """One version of ``kind``; raises ``ValidationError`` (bad name) or ``ModelNotAvailable`` (no such folder)."""
    _check_kind(kind)
    _check_version(version)
    base = models_dir or get_settings().models_dir
    return _load_version(kind, base / kind / version, read_registry(base).get(kind))


def list_versions(kind: str, models_dir: Path | None = None) -> list[ModelVersion]:
    """Every version of ``kind`` on disk: the active one first, then the newest (by card date, then name).

    A folder whose card cannot be read is left out (and logged): it could not be promoted either.
    """
    _check_kind(kind)
    base = models_dir or get_settings().models_dir
    active = read_registry(base).get(kind)
    found: list[ModelVersion] = []
    folder = base / kind
    for child in sorted(folder.iterdir()) if folder.is_dir() else ():
        if not (child / "card.json").is_file():
            continue
        try:
            found.append(_load_version(kind, child, active))
        except ModelNotAvailable as exc:
            log.warning("skipping %s: %s", child, exc)
    found.sort(key=lambda v: v.version, reverse=True)
    found.sort(key=lambda v: (not v.active, -(v.created.toordinal() if v.created else 0)))
    return found


# ---------------------------------------------------------------- comparison


@dataclass(frozen=True)
class Comparison:
    """A candidate version measured against another (normally the active one) on the headline metric.

    ``fair`` is False when the cards show the two were measured on different test splits (``unfair``
    says how); ``notes`` says what could not be checked.
    """

    kind: str
    candidate: ModelVersion
    against: ModelVersion | None  # None: no version of this kind is active
    delta: float | None  # candidate minus against
    verdict: Verdict
    fair: bool = True
    unfair: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()

    @property
    def metric(self) -> str:
        """The headline metric's name, e.g. 'test mean AUC'."""
        return self.candidate.metric

    @property
    def needs_override(self) -> bool:
        """Whether promoting the candidate over ``against`` needs a written reason."""
        if self.against is None or self.against.version == self.candidate.version:
            return False
        return self.verdict in ("worse", "unmeasured") or not self.fair

    def per_finding(self) -> list[tuple[str, float | None, float | None]]:
        """(finding, against's value, candidate's value) for every finding either card measured."""
        mine = self.candidate.finding_values()
        theirs = self.against.finding_values() if self.against else {}
        names = list(theirs) + [n for n in mine if n not in theirs]
        return [(n, theirs.get(n), mine.get(n)) for n in names]

    def summary(self) -> str:
        """The comparison in a sentence or two, for an admin deciding on a promotion."""
        c, a, m = self.candidate, self.against, self.metric
        if a is None:
            return f"No {self.kind} version is active yet; {c.version} would be the first."
        if a.version == c.version:
            return f"{c.version} is the active {self.kind}."
        if self.verdict == "unmeasured":
            missing = " and ".join(v.version for v in (c, a) if v.value is None)
            text = (
                f"The model card of {missing} has no {m}, so {c.version} cannot be compared with {a.version}."
            )
        else:
            assert c.value is not None and a.value is not None and self.delta is not None
            words = {"better": "better than", "worse": "worse than", "equal": "the same as"}[self.verdict]
            text = (
                f"{c.version} measures {words} the active {self.kind} {a.version}: {m} "
                f"{c.value:.3f} vs {a.value:.3f} ({self.delta:+.3f})."
            )
        if not self.fair:
            text += f" The comparison is not fair: {'; '.join(self.unfair)}."
        return text


def _fairness(candidate: ModelVersion, against: ModelVersion) -> tuple[tuple[str, ...], tuple[str, ...]]:
    unfair: list[str] = []
    notes: list[str] = []
    c_hash, a_hash = candidate.test_split_sha256, against.test_split_sha256
    if c_hash and a_hash and c_hash != a_hash:
        unfair.append("they were measured on different test splits (the test-split hashes differ)")
    c_n, a_n = candidate.test_images, against.test_images
    if c_n is not None and a_n is not None and c_n != a_n:
        unfair.append(f"their test splits differ in size ({c_n} vs {a_n} images)")
    if not (c_hash and a_hash):
        if c_n is not None and a_n is not None:
            notes.append(
                "Same test split checked by image count only: not both cards record a test-split hash."
            )
        else:
            notes.append(
                "Whether both were measured on the same test split cannot be checked from their cards."
            )
    return tuple(unfair), tuple(notes)


def _compare(candidate: ModelVersion, against: ModelVersion | None) -> Comparison:
    kind = candidate.kind
    if against is None:
        return Comparison(kind, candidate, None, None, "no active version")
    unfair, notes = _fairness(candidate, against) if against.version != candidate.version else ((), ())
    if candidate.value is None or against.value is None:
        return Comparison(kind, candidate, against, None, "unmeasured", not unfair, unfair, notes)
    delta = candidate.value - against.value
    verdict: Verdict = "equal" if abs(delta) <= _EQUAL else "better" if delta > 0 else "worse"
    return Comparison(kind, candidate, against, delta, verdict, not unfair, unfair, notes)


def compare(
    kind: str, candidate: str, against: str | None = None, models_dir: Path | None = None
) -> Comparison:
    """Measure ``candidate`` against ``against`` (default: the active version of ``kind``).

    Raises ``ValidationError`` for a bad kind or version name and ``ModelNotAvailable`` for a missing folder.
    """
    base = models_dir or get_settings().models_dir
    cand = get_version(kind, candidate, base)
    if against is not None:
        return _compare(cand, get_version(kind, against, base))
    return _compare(cand, _active_version(kind, base, read_registry(base).get(kind)))


def _active_version(kind: str, base: Path, current: str | None) -> ModelVersion | None:
    """The active version, or None when none is configured or its folder is gone (nothing then serves, so
    any readable candidate is better than the status quo)."""
    if not current:
        return None
    try:
        return _load_version(kind, base / kind / current, current)
    except ModelNotAvailable as exc:
        log.warning("the active %s cannot be read: %s", kind, exc)
        return None


# ---------------------------------------------------------------- promotion


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


def _clean_reason(reason: str | None) -> str | None:
    if reason is None:
        return None
    text = reason.strip()
    if len(text) > MAX_REASON_CHARS:
        raise ValidationError({"override_reason": f"Keep the reason under {MAX_REASON_CHARS} characters."})
    if _CONTROL.search(text):
        raise ValidationError({"override_reason": "The reason contains control characters."})
    return text or None


def reason_is_sufficient(reason: str | None) -> bool:
    """Whether ``reason`` can justify an override: at least MIN_REASON_CHARS, and not one repeated character."""
    text = (reason or "").strip()
    return len(text) >= MIN_REASON_CHARS and len({ch for ch in text.casefold() if ch.isalnum()}) >= 3


def _audit(
    actor: AuthenticatedUser,
    action: str,
    version: str,
    *,
    before: Mapping[str, Any] | None,
    after: Mapping[str, Any] | None,
    detail: str,
    session: Session | None = None,
) -> None:
    from db import repository as repo
    from db.session import session_scope

    def write(s: Session) -> None:
        repo.add_audit(
            s,
            user_id=actor.id,
            username=actor.username,
            action=action,
            entity_type="model",
            entity_id=version,
            before=before,
            after=after,
            detail=detail[:1000],  # db.models.LIMITS["audit_detail"]
        )

    if session is not None:
        write(session)
        return
    with session_scope() as own:
        write(own)


def _refuse(
    actor: AuthenticatedUser,
    kind: str,
    version: str,
    message: str,
    *,
    current: str | None,
    comparison: Comparison | None = None,
    reason: str | None = None,
    overridable: bool,
) -> PromotionRefused:
    """Audit a refused attempt (in its own transaction) and return the error for the caller to raise."""
    before = comparison.against.audit_document() if comparison and comparison.against else None
    after: dict[str, Any] = {"kind": kind, "version": version}
    if comparison is not None:
        after = {
            **comparison.candidate.audit_document(),
            "delta": comparison.delta,
            "verdict": comparison.verdict,
            "fair": comparison.fair,
        }
    _audit(
        actor,
        "promote_refused",
        version,
        before=before or {"kind": kind, "version": current},
        after={**after, "override_reason": reason},
        detail=message,
    )
    return PromotionRefused(message, comparison, overridable=overridable)


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
    measures worse than the active version on the card's headline test metric, has no such metric, or was
    measured on another test split — unless ``override_reason`` is a real reason (see
    :func:`reason_is_sufficient`) — and always when it is already active or its card names another version.
    ``expected_active`` is the active version the admin's decision was based on: if another admin promoted
    meanwhile, ``ConflictError`` (audited too). A promotion writes its ``promote`` audit row and the registry
    together: the registry is replaced inside the transaction, and put back if the commit fails. Also raises
    ``PermissionDenied`` (not an admin), ``ValidationError`` (bad names, a reason too long) and
    ``ModelNotAvailable`` (no such version).
    """
    from core.auth import require_admin
    from db.session import session_scope

    require_admin(actor)
    _check_kind(kind)
    _check_version(version)
    reason = _clean_reason(override_reason)
    base = models_dir or get_settings().models_dir
    with _registry_lock(base):
        registry = read_registry(base)
        current = registry.get(kind)
        if expected_active is not UNCHECKED and current != expected_active:
            message = (
                f"The active {kind} changed from {expected_active or 'none'} to {current or 'none'} since you "
                "compared the versions (someone else promoted meanwhile). Reload, compare again and decide."
            )
            _refuse(actor, kind, version, message, current=current, reason=reason, overridable=False)
            raise ConflictError(message)
        candidate = _load_version(kind, base / kind / version, current)
        if version == current:
            raise _refuse(
                actor,
                kind,
                version,
                f"{version} is already the active {kind}.",
                current=current,
                overridable=False,
            )
        if candidate.card_version != version:
            message = (
                f"The model card in {candidate.path} names version {candidate.card_version!r}, not {version!r}: "
                "diagnoses would record the wrong version. Fix the card (IT) before promoting."
            )
            raise _refuse(actor, kind, version, message, current=current, reason=reason, overridable=False)
        against = _active_version(kind, base, current)
        comparison = _compare(candidate, against)
        if comparison.needs_override and not reason_is_sufficient(reason):
            message = (
                f"{comparison.summary()} Promotion refused: to promote it anyway, give a reason of at least "
                f"{MIN_REASON_CHARS} characters; it is kept in the audit log."
            )
            raise _refuse(
                actor,
                kind,
                version,
                message,
                current=current,
                comparison=comparison,
                reason=reason,
                overridable=True,
            )

        after = {
            **candidate.audit_document(),
            "delta": comparison.delta,
            "verdict": comparison.verdict,
            "fair": comparison.fair,
            "override_reason": reason,
        }
        detail = comparison.summary()
        if comparison.needs_override:
            detail = f"Override: {reason} | {detail}"
        written = False
        try:
            with session_scope() as session:
                _audit(
                    actor,
                    "promote",
                    version,
                    before=against.audit_document() if against else {"kind": kind, "version": None},
                    after=after,
                    detail=detail,
                    session=session,
                )
                session.flush()  # a database problem surfaces here, before the registry is touched
                _write_registry(base, {**registry, kind: version})
                written = True
        except BaseException:
            if written:  # the commit failed: the active version must not change without its audit row
                _write_registry(base, registry)
            raise
    log.info("%s promoted %s %s (was %s)", actor.username, kind, version, current)
    return Promotion(kind, version, current, comparison, reason)
