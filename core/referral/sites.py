"""The deployment's sites: read ``config/sites.toml``, sync it into the ``sites`` table, list the sites, and the
site a user works for (``users.site_id``). Syncing and assigning are admin actions, audited.

The file is ``CXR_SITES_FILE`` or ``config/sites.toml`` of the project. A site missing from the file is
deactivated (referrals keep naming it), a site back in the file is active again.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from core import audit
from core.auth import AuthenticatedUser, require_admin
from core.errors import NotFound, ValidationError
from db import models
from db.session import session_scope

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_FILE = ROOT / "config" / "sites.toml"


@dataclass(frozen=True)
class SiteInfo:
    """A site as the pages and the rule see it."""

    id: int
    code: str
    name: str
    kind: str  # "ed" | "ambulance"
    lat: float
    lon: float
    capabilities: tuple[str, ...]
    fhir_url: str | None
    active: bool


@dataclass(frozen=True)
class SyncResult:
    """What a sync changed, by site code."""

    added: tuple[str, ...]
    updated: tuple[str, ...]
    deactivated: tuple[str, ...]


def sites_file() -> Path:
    """The configured sites file."""
    return Path(os.environ.get("CXR_SITES_FILE") or DEFAULT_FILE)


def _number(entry: dict[str, Any], key: str, low: float, high: float, where: str) -> float:
    value = entry.get(key)
    if not isinstance(value, int | float) or isinstance(value, bool) or not low <= value <= high:
        raise ValidationError({where: f"{key} must be a number between {low} and {high}."})
    return float(value)


def parse(text: str) -> tuple[dict[str, Any], ...]:
    """The ``[[site]]`` entries of a sites file, checked; ``ValidationError`` naming the bad entry."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ValidationError({"sites": f"The sites file is not valid TOML: {exc}"}) from exc
    entries = data.get("site", [])
    if not isinstance(entries, list):
        raise ValidationError({"sites": "The sites file must list its sites as [[site]] tables."})
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    for index, entry in enumerate(entries, 1):
        where = f"site {index}"
        code = str(entry.get("code", "")).strip().upper()
        name = str(entry.get("name", "")).strip()
        if not code or len(code) > 32 or not name or len(name) > 200:
            raise ValidationError({where: "Each site needs a code (at most 32 characters) and a name."})
        if code in seen:
            raise ValidationError({where: f"The site code {code} appears twice."})
        seen.add(code)
        kind = entry.get("kind", "ed")
        if kind not in models.SITE_KINDS:
            raise ValidationError({where: f"kind must be one of {', '.join(models.SITE_KINDS)}."})
        capabilities = entry.get("capabilities", [])
        if not isinstance(capabilities, list) or not all(isinstance(c, str) for c in capabilities):
            raise ValidationError({where: "capabilities must be a list of names."})
        fhir_url = entry.get("fhir_url") or None
        if fhir_url is not None and not str(fhir_url).startswith(("http://", "https://")):
            raise ValidationError({where: "fhir_url must be an http(s) address."})
        out.append(
            {
                "code": code,
                "name": name,
                "kind": kind,
                "lat": _number(entry, "lat", -90, 90, where),
                "lon": _number(entry, "lon", -180, 180, where),
                "capabilities": sorted({c.strip() for c in capabilities if c.strip()}),
                "fhir_url": fhir_url,
            }
        )
    return tuple(out)


def _info(site: models.Site) -> SiteInfo:
    return SiteInfo(
        site.id,
        site.code,
        site.name,
        site.kind,
        site.lat,
        site.lon,
        tuple(site.capabilities or ()),
        site.fhir_url,
        site.active,
    )


def sync_sites(actor: audit.Who, path: Path | None = None) -> SyncResult:
    """Make the ``sites`` table match the file (``actor``: an admin or ``audit.SYSTEM``); audited."""
    if isinstance(actor, AuthenticatedUser):
        require_admin(actor)
    source = path or sites_file()
    try:
        text = source.read_text(encoding="utf-8")
    except OSError as exc:
        raise ValidationError({"sites": f"The sites file {source} cannot be read."}) from exc
    entries = parse(text)
    added: list[str] = []
    updated: list[str] = []
    deactivated: list[str] = []
    with session_scope() as session:
        existing = {s.code: s for s in session.scalars(select(models.Site))}
        for entry in entries:
            site = existing.get(entry["code"])
            if site is None:
                session.add(models.Site(**entry, active=True))
                added.append(entry["code"])
                continue
            before = {k: getattr(site, k) for k in entry} | {"active": site.active}
            for key, value in entry.items():
                setattr(site, key, value)
            site.active = True
            if before != {k: getattr(site, k) for k in entry} | {"active": True}:
                updated.append(site.code)
        listed = {e["code"] for e in entries}
        for code, site in existing.items():
            if code not in listed and site.active:
                site.active = False
                deactivated.append(code)
        result = SyncResult(tuple(added), tuple(updated), tuple(deactivated))
        audit.write(
            session,
            actor,
            "update",
            "sites",
            str(source.name),
            after={"added": added, "updated": updated, "deactivated": deactivated},
            detail="sites synced from the configuration file",
        )
    return result


def list_sites(*, kind: str | None = None, active_only: bool = True) -> tuple[SiteInfo, ...]:
    """The sites, by code."""
    with session_scope() as session:
        query = select(models.Site).order_by(models.Site.code)
        if kind is not None:
            query = query.where(models.Site.kind == kind)
        if active_only:
            query = query.where(models.Site.active.is_(True))
        return tuple(_info(s) for s in session.scalars(query))


def site_by_code(session: Session, code: str) -> models.Site:
    """The site row of ``code``; ``NotFound`` if unknown."""
    site = session.scalars(select(models.Site).where(models.Site.code == code.strip().upper())).first()
    if site is None:
        raise NotFound(f"No site with code {code!r}.")
    return site


def user_site(user_id: int) -> SiteInfo | None:
    """The site a user works for, or ``None``."""
    with session_scope() as session:
        user = session.get(models.User, user_id)
        if user is None or user.site_id is None:
            return None
        site = session.get(models.Site, user.site_id)
        return _info(site) if site is not None else None


def assign_user(username: str, site_code: str | None, actor: audit.Who) -> None:
    """Make ``username`` work for ``site_code`` (``None``: no site); an admin action, audited."""
    if isinstance(actor, AuthenticatedUser):
        require_admin(actor)
    with session_scope() as session:
        user = session.scalars(
            select(models.User).where(models.User.username == username.strip().lower())
        ).first()
        if user is None:
            raise NotFound(f"No user {username!r}.")
        site = site_by_code(session, site_code) if site_code else None
        before = user.site_id
        user.site_id = site.id if site is not None else None
        audit.write(
            session,
            actor,
            "update",
            "user",
            user.id,
            before={"site_id": before},
            after={"site": site.code if site is not None else None},
            detail="site assigned",
        )


def ensure_sites() -> None:
    """Sync the configured file once when the table is still empty (a fresh installation); audited as the
    system. Later changes to the file are synced by an administrator (the Referrals page)."""
    with session_scope() as session:
        if session.scalars(select(models.Site.id).limit(1)).first() is not None:
            return
    sync_sites(audit.SYSTEM)
