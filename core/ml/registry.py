"""The model catalogue: which version of each kind is active, where its files are, what its card measures.

``models/registry.json`` names the active version per kind (``classifier``, ``detector``); each version is a
folder ``models/<kind>/<version>/`` holding its weights and ``card.json``. :func:`compare` measures one
version against another on the card's headline test metric. ``core.ml.inference`` resolves the active folder
on every call, so the next diagnosis uses whatever is active now.

This module reads and writes files only and never imports the database (``python -m core diagnose`` stays
free of the database stack). Changing the active version as a person, with its rules and audit row, is
``core.ml.promotion``; :func:`set_active` is for a training job publishing a first version.
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
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
from typing import Any, Literal

from core.config import get_settings
from core.errors import AppError, ValidationError
from core.ml import film_check, triage

log = logging.getLogger(__name__)

#: The kinds of model the dashboard serves (also the command line's choices).
KINDS: tuple[str, ...] = ("classifier", "detector")
# Same bound as db.models.LIMITS["model_version"] (a test keeps them equal): every diagnosis stores the
# version name, so a longer one could never be saved. No "/" or "..": the name becomes a folder path.
MAX_VERSION_CHARS = 64
_VERSION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
# Headlines are compared exactly; this only absorbs float noise from re-serialising the same number.
_EQUAL = 1e-9

Verdict = Literal["better", "worse", "equal", "unmeasured", "no active version"]
#: The file each kind serves (LiteRT, ONNX Runtime): two versions whose served files are byte-identical run the
#: same network, whatever their cards say.
SERVED_FILES: dict[str, str] = {"classifier": "model.tflite", "detector": "model.onnx"}


class ModelNotAvailable(AppError):
    """The active model of a kind is missing or incomplete on disk."""


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

        For publishing a first version from a training job; people change the active version with
    ``core.ml.promotion.promote``.
    """
    base = models_dir or get_settings().models_dir
    if not (base / kind / version / "card.json").exists():
        raise ModelNotAvailable(f"There is no {kind} model {version!r} in {base / kind}.")
    with registry_lock(base):
        registry = read_registry(base)
        registry[kind] = version
        write_registry(base, registry)


@contextmanager
def registry_lock(base: Path) -> Iterator[None]:
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


def write_registry(base: Path, registry: Mapping[str, str]) -> None:
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
    # the worklist it makes on the test split with its own triage fit (card ``triage_evaluation``): figure -> share
    worklist: tuple[tuple[str, float], ...] = ()
    # classifiers: the safeguards its folder and card provide (a retrain's card has neither until they are fitted)
    film_check: bool = False  # film_check.npz: pictures that are no chest X-ray refused, turned films righted
    triage_rule: str | None = None  # the triage rule its card runs (core.ml.triage.RULES)

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


def check_names(kind: str, version: str) -> None:
    """``ValidationError`` unless ``kind`` is one of :data:`KINDS` and ``version`` a valid folder name."""
    _check_kind(kind)
    _check_version(version)


def load_version(kind: str, folder: Path, active: str | None) -> ModelVersion:
    """The version in ``folder`` as its card describes it (``active``: the active version's name)."""
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
        worklist=_worklist(card),
        film_check=kind == "classifier" and (folder / film_check.FILE).exists(),
        triage_rule=_triage_rule(card) if kind == "classifier" else None,
    )


def _triage_rule(card: Mapping[str, Any]) -> str | None:
    try:
        return triage.policy_from_card(card).version
    except (TypeError, ValueError, KeyError):  # a malformed triage section: serving would fail on it as well
        return None


#: The worklist figures an admin weighs beside the headline metric (a better reader of findings can still
#: send fewer normal films to routine, because each version's routine cut is refitted for it).
WORKLIST_FIGURES = ("No Finding films that are routine", "urgent-finding films not routine")


def _worklist(card: Mapping[str, Any]) -> tuple[tuple[str, float], ...]:
    rows = _dig(card, ("triage_evaluation", "triage"))
    found: dict[str, float] = {}
    for row in rows if isinstance(rows, list) else ():
        if isinstance(row, Mapping) and row.get("name") in WORKLIST_FIGURES:
            value = _number(_dig(row, ("overall", "value")))
            if value is not None:
                found[str(row["name"])] = value
    return tuple((name, found[name]) for name in WORKLIST_FIGURES if name in found)


def worklist_note(candidate: ModelVersion, against: ModelVersion) -> str | None:
    """One line comparing the two versions' worklists on the test split, when both cards measure them."""
    a, c = dict(against.worklist), dict(candidate.worklist)
    shared = [name for name in WORKLIST_FIGURES if name in a and name in c]
    if not shared:
        return None
    parts = "; ".join(f"{name} {a[name]:.0%} -> {c[name]:.0%}" for name in shared)
    return f"Worklist on the test split, each with its own triage fit ({against.version} -> {candidate.version}): {parts}."


def get_version(kind: str, version: str, models_dir: Path | None = None) -> ModelVersion:
    """One version of ``kind``; raises ``ValidationError`` (bad name) or ``ModelNotAvailable`` (no such folder)."""
    check_names(kind, version)
    base = models_dir or get_settings().models_dir
    return load_version(kind, base / kind / version, read_registry(base).get(kind))


def read_card(kind: str, version: str, models_dir: Path | None = None) -> dict[str, Any]:
    """The ``card.json`` of one version (``{}`` when the folder or the card is gone: an old diagnosis's
    version may have been removed from disk; callers treat a missing card as "nothing known")."""
    check_names(kind, version)
    path = (models_dir or get_settings().models_dir) / kind / version / "card.json"
    try:
        card = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return card if isinstance(card, dict) else {}


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
            found.append(load_version(kind, child, active))
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
    same_network: bool = False  # the served files are byte-identical: only the card and the name differ
    lacks: tuple[str, ...] = ()  # safeguards ``against`` has and the candidate does not (see :func:`lacking`)

    @property
    def metric(self) -> str:
        """The headline metric's name, e.g. 'test mean AUC'."""
        return self.candidate.metric

    @property
    def needs_override(self) -> bool:
        """Whether promoting the candidate over ``against`` needs a written reason."""
        if self.against is None or self.against.version == self.candidate.version:
            return False
        return (
            self.verdict in ("worse", "unmeasured") or not self.fair or self.same_network or bool(self.lacks)
        )

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
        if self.lacks:
            text += (
                f" It lacks what {a.version} has: {'; '.join(self.lacks)}. Fit them for it first (the steps of "
                "scripts/publish_classifier.sh after the evaluation) or give a reason."
            )
        if self.same_network:
            text += (
                f" Its network is the very same as {a.version}'s ({SERVED_FILES[self.kind]} byte for byte): "
                "promoting it changes the version name diagnoses record and what its card sets (thresholds, "
                "calibration), not the reads."
            )
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


def compare_versions(candidate: ModelVersion, against: ModelVersion | None) -> Comparison:
    """``candidate`` measured against ``against`` (``None``: no version of its kind is active)."""
    kind = candidate.kind
    if against is None:
        return Comparison(kind, candidate, None, None, "no active version")
    other = against.version != candidate.version
    unfair, notes = _fairness(candidate, against) if other else ((), ())
    worklist = worklist_note(candidate, against) if other else None
    notes = (*notes, worklist) if worklist else notes
    same = other and same_network(candidate, against)
    lacks = lacking(candidate, against) if other else ()
    if candidate.value is None or against.value is None:
        return Comparison(
            kind, candidate, against, None, "unmeasured", not unfair, unfair, notes, same, lacks
        )
    delta = candidate.value - against.value
    verdict: Verdict = "equal" if abs(delta) <= _EQUAL else "better" if delta > 0 else "worse"
    return Comparison(kind, candidate, against, delta, verdict, not unfair, unfair, notes, same, lacks)


def lacking(candidate: ModelVersion, against: ModelVersion) -> tuple[str, ...]:
    """The safeguards ``against`` serves with and ``candidate`` would drop: the film check, a newer triage rule's
    fit. A retrained classifier is published with its evaluation only, so promoting it as it is would accept
    pictures of anything again and send most films to priority (triage-v2)."""
    lacks = []
    if against.film_check and not candidate.film_check:
        lacks.append(f"the film check that refuses pictures that are no chest X-ray ({film_check.FILE})")
    rules = triage.RULES
    if (
        against.triage_rule in rules
        and candidate.triage_rule in rules
        and rules.index(candidate.triage_rule) < rules.index(against.triage_rule)
    ):
        lacks.append(f"the fitted {against.triage_rule} triage (its card runs {candidate.triage_rule})")
    return tuple(lacks)


def same_network(a: ModelVersion, b: ModelVersion) -> bool:
    """Whether two versions of a kind serve byte-identical files (a retrain that kept its parent's weights,
    or a copy under a new name); False when either file is missing."""
    name = SERVED_FILES.get(a.kind)
    if name is None or a.kind != b.kind:
        return False
    digests = [_digest(v.path / name) for v in (a, b)]
    return digests[0] is not None and digests[0] == digests[1]


def _digest(path: Path) -> str | None:
    try:
        real = path.resolve(strict=True)
        info = real.stat()
    except OSError:
        return None
    return _file_sha256(str(real), info.st_size, info.st_mtime_ns)


@functools.lru_cache(maxsize=64)
def _file_sha256(path: str, size: int, mtime_ns: int) -> str | None:  # noqa: ARG001 (size, mtime: the cache key)
    """The file's SHA-256, once per content on disk (the Models page compares on every rerun)."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    except OSError:
        return None
    return digest.hexdigest()


def compare(
    kind: str, candidate: str, against: str | None = None, models_dir: Path | None = None
) -> Comparison:
    """Measure ``candidate`` against ``against`` (default: the active version of ``kind``).

    Raises ``ValidationError`` for a bad kind or version name and ``ModelNotAvailable`` for a missing folder.
    """
    base = models_dir or get_settings().models_dir
    cand = get_version(kind, candidate, base)
    if against is not None:
        return compare_versions(cand, get_version(kind, against, base))
    return compare_versions(cand, active_version(kind, base, read_registry(base).get(kind)))


def active_version(kind: str, base: Path, current: str | None) -> ModelVersion | None:
    """The active version, or None when none is configured or its folder is gone (nothing then serves, so
    any readable candidate is better than the status quo)."""
    if not current:
        return None
    try:
        return load_version(kind, base / kind / current, current)
    except ModelNotAvailable as exc:
        log.warning("the active %s cannot be read: %s", kind, exc)
        return None
