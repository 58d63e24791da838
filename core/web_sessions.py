"""Server-side web sessions: create, validate (and touch), end and revoke the sign-in of a browser.

The browser holds one thing: a random token (``secrets.token_urlsafe(32)``) in an HttpOnly cookie. The
``web_sessions`` table keeps only its SHA-256, so a copy of the database or the logs opens nothing. A session
is valid while it is not revoked, its last use is within the idle timeout (``Settings.session_idle_minutes``)
and it is younger than :data:`MAX_AGE`. Logout, idle expiry and an administrator's "sign out everywhere" set
``revoked_at``; each is audited (action ``logout``, the reason in ``detail``), as is the login that made it.

The cookie itself is set by an HTTP route (``serve.py``), which cannot see the Streamlit session that
authenticated the user: :func:`issue_code` hands it a one-time code (single use, :data:`CODE_TTL`) that
:func:`redeem_code` exchanges for the token. No Streamlit here.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from datetime import datetime, timedelta

from sqlalchemy import select, update

from core import audit
from core.auth import AuthenticatedUser, require_admin
from core.config import get_settings
from core.errors import NotFound
from db import repository as repo
from db.base import utcnow
from db.models import User, WebSession
from db.session import session_scope

COOKIE_NAME = "cxr_session"
MAX_AGE = timedelta(hours=14)  # an ED shift and its handover; after that the doctor logs in again
TOUCH_EVERY = timedelta(
    seconds=30
)  # last_seen_at is written at most this often (one UPDATE per click is waste)
CODE_TTL = 60.0  # seconds a one-time cookie code is valid


def _user(user: User) -> AuthenticatedUser:
    return AuthenticatedUser(id=user.id, username=user.username, full_name=user.full_name, role=user.role)


def token_hash(token: str) -> str:
    """The SHA-256 (hex) of a token: what the table stores and looks up."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def create(user: AuthenticatedUser, *, client: str | None = None, now: datetime | None = None) -> str:
    """Open a session for ``user`` (who just authenticated) and return its token (shown to nobody but the
    cookie route)."""
    now = now or utcnow()
    token = secrets.token_urlsafe(32)
    with session_scope() as session:
        session.add(
            WebSession(
                token_hash=token_hash(token),
                user_id=user.id,
                created_at=now,
                last_seen_at=now,
                expires_at=now + MAX_AGE,
                client=(client or audit.current_client() or "")[:64] or None,
            )
        )
    return token


def _expired(row: WebSession, now: datetime) -> str | None:
    """Why ``row`` is no longer valid at ``now`` (idle or too old), or None."""
    if now >= row.expires_at:
        return "session expired (maximum age)"
    if now - row.last_seen_at > timedelta(minutes=get_settings().session_idle_minutes):
        return "session expired"
    return None


def validate(
    token: str | None, *, now: datetime | None = None, touch: bool = True
) -> AuthenticatedUser | None:
    """The user whose valid session ``token`` is, or None (unknown, tampered, revoked, idle, too old, or the
    account deactivated). A session found expired is revoked and its end audited once. ``touch`` counts this
    as activity (a click); the idle watcher passes False."""
    if not token or len(token) > 200:
        return None
    now = now or utcnow()
    with session_scope() as session:
        row = session.scalars(
            select(WebSession).where(WebSession.token_hash == token_hash(token))
        ).one_or_none()
        if row is None or row.revoked_at is not None:
            return None
        user = session.get(User, row.user_id)
        why = _expired(row, now) or (None if user is not None and user.active else "account inactive")
        if why is not None:
            row.revoked_at = now
            if user is not None:
                audit.write(session, _user(user), "logout", "user", user.id, detail=why)
            return None
        assert user is not None
        if touch and now - row.last_seen_at >= TOUCH_EVERY:
            row.last_seen_at = now
        return _user(user)


def end(token: str | None, *, reason: str = "logout", now: datetime | None = None) -> bool:
    """Revoke the session of ``token`` (logout) and audit it; False when there was no live session."""
    if not token:
        return False
    now = now or utcnow()
    with session_scope() as session:
        row = session.scalars(
            select(WebSession).where(WebSession.token_hash == token_hash(token))
        ).one_or_none()
        if row is None or row.revoked_at is not None:
            return False
        row.revoked_at = now
        user = session.get(User, row.user_id)
        if user is not None:
            audit.write(session, _user(user), "logout", "user", user.id, detail=reason)
        return True


def revoke_user(username: str, actor: AuthenticatedUser | audit.Actor, *, now: datetime | None = None) -> int:
    """Sign ``username`` out everywhere (an administrator's action, audited): every live session of theirs
    is revoked at once, so each of their browsers shows the login form on its next click. Returns how many
    were live. ``NotFound`` for an unknown user; ``PermissionDenied`` for a non-admin actor."""
    if isinstance(actor, AuthenticatedUser):
        require_admin(actor)
    now = now or utcnow()
    username = username.strip().lower()
    with session_scope() as session:
        user = repo.get_user_by_username(session, username)
        if user is None:
            raise NotFound(f"No account named {username!r}.")
        result = session.execute(
            update(WebSession)
            .where(WebSession.user_id == user.id, WebSession.revoked_at.is_(None))
            .values(revoked_at=now)
        )
        count = int(getattr(result, "rowcount", 0) or 0)
        audit.write(
            session,
            actor,
            "logout",
            "user",
            user.id,
            detail=f"signed out everywhere by an administrator ({count} session(s) of {user.username})",
        )
        return count


def live_count(username: str, *, now: datetime | None = None) -> int:
    """How many sessions of ``username`` are not revoked and not yet idle or too old (the Accounts page)."""
    now = now or utcnow()
    idle = timedelta(minutes=get_settings().session_idle_minutes)
    with session_scope() as session:
        user = repo.get_user_by_username(session, username)
        if user is None:
            return 0
        rows = session.scalars(
            select(WebSession).where(WebSession.user_id == user.id, WebSession.revoked_at.is_(None))
        ).all()
        return sum(1 for r in rows if now < r.expires_at and now - r.last_seen_at <= idle)


# One-time codes: the Streamlit run that authenticated the user hands the cookie route a code, never the token.
_codes: dict[str, tuple[str, float]] = {}
_codes_lock = threading.Lock()


def issue_code(token: str) -> str:
    """A single-use code (valid :data:`CODE_TTL` seconds) that :func:`redeem_code` exchanges for ``token``."""
    code = secrets.token_urlsafe(32)
    deadline = time.monotonic() + CODE_TTL
    with _codes_lock:
        now = time.monotonic()
        for key in [k for k, (_, d) in _codes.items() if d < now]:
            del _codes[key]
        _codes[token_hash(code)] = (token, deadline)
    return code


def redeem_code(code: str | None) -> str | None:
    """The token ``code`` was issued for, once; None for an unknown, used or stale code."""
    if not code or len(code) > 200:
        return None
    with _codes_lock:
        entry = _codes.pop(token_hash(code), None)
    if entry is None or entry[1] < time.monotonic():
        return None
    return entry[0]
