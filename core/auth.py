"""Users, password hashing, login with lockout, and session idle expiry.

Hashing: passlib's ``CryptContext`` with the argon2 scheme (argon2id via the argon2-cffi backend). Why:
passlib is the product's named stack and its argon2 scheme works cleanly on the pinned versions, whereas
passlib 1.7.4 breaks with bcrypt 5 and bcrypt silently truncates passwords at 72 bytes (argon2 does not);
and ``CryptContext.needs_update`` lets a successful login transparently rehash a password when the cost
parameters are raised later.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache

from passlib.context import CryptContext
from passlib.exc import PasswordSizeError, UnknownHashError
from sqlalchemy.exc import IntegrityError

from core import audit
from core.config import get_settings
from core.errors import AccountLocked, ClientThrottled, InvalidCredentials, NotFound, PermissionDenied
from core.passwords import MAX_PASSWORD_LENGTH, MIN_PASSWORD_LENGTH, password_problem
from core.validation import USERNAME_PATTERN, Checker
from db import repository as repo
from db.base import utcnow
from db.models import ROLES, User
from db.session import session_scope

log = logging.getLogger(__name__)

__all__ = [
    "MIN_PASSWORD_LENGTH",
    "MAX_PASSWORD_LENGTH",
    "THROTTLE",
    "AccountLocked",
    "AuthenticatedUser",
    "ClientThrottled",
    "InvalidCredentials",
    "UserSummary",
    "authenticate",
    "create_user",
    "find_active_user",
    "hash_password",
    "list_users",
    "load_user",
    "logout",
    "require_admin",
    "session_expired",
    "verify_password",
]

# passlib's argon2 defaults are argon2id, t=3, m=64 MiB, p=4 (~0.1-0.3 s per hash on this 2-core machine).
pwd_context = CryptContext(schemes=["argon2"], deprecated="auto")


@dataclass(frozen=True)
class AuthenticatedUser:
    """Who is signed in; safe to keep in ``st.session_state`` (plain values, no ORM object)."""

    id: int
    username: str
    full_name: str
    role: str  # "doctor" | "admin"

    @property
    def is_admin(self) -> bool:
        """True for the admin role."""
        return self.role == "admin"


@dataclass(frozen=True)
class UserSummary:
    """A row of the admin's user list."""

    id: int
    username: str
    full_name: str
    role: str
    active: bool
    locked_until: datetime | None
    created_at: datetime
    last_login_at: datetime | None
    failed_attempts: int = 0


@cache
def _dummy_hash() -> str:
    # Verified against for unknown usernames so that a miss costs as much time as a wrong password.
    return pwd_context.hash("not a password: equalises login timing")


def _to_user(user: User) -> AuthenticatedUser:
    return AuthenticatedUser(id=user.id, username=user.username, full_name=user.full_name, role=user.role)


def hash_password(password: str) -> str:
    """Hash ``password`` with the current argon2 parameters."""
    return pwd_context.hash(password)


def verify_password(password: str, password_hash: str) -> bool:
    """True when ``password`` matches ``password_hash``; never raises on a malformed hash or huge input."""
    try:
        return bool(pwd_context.verify(password, password_hash))
    except (ValueError, TypeError, UnknownHashError, PasswordSizeError):
        return False


def authenticate(
    username: str, password: str, *, now: datetime | None = None, client: str | None = None
) -> AuthenticatedUser:
    """Check a login and return the user.

    Every refusal raises ``InvalidCredentials`` with the same message and after the same argon2 work, whether
    the user is unknown, deactivated, locked or the password wrong (``AccountLocked``, a subclass, marks the
    locked case for callers and tests; its message is the same). ``Settings.lockout_attempts`` consecutive
    failures lock the account for ``Settings.lockout_minutes``; the count is taken atomically before the
    password is checked, so parallel attempts get exactly that many password checks per lock. ``client``
    (default: :func:`core.audit.current_client`) also gets ``Settings.client_lockout_attempts`` failures,
    over any accounts, within ``lockout_minutes`` before ``ClientThrottled``. Every attempt is audited, with
    the client; a success resets the account's count.
    """
    now = now or utcnow()
    where = client or audit.current_client()
    name = (username or "").strip().lower()
    password = password or ""
    if where is not None and THROTTLE.blocked(where, now):
        _audit_attempt(None, name, "login_failed", "client throttled: too many failed logins", now, where)
        raise ClientThrottled(get_settings().lockout_minutes)
    try:
        return _authenticate(name, password, now, where)
    except InvalidCredentials:
        if where is not None:
            THROTTLE.failed(where, now)
        raise


def _audit_attempt(
    user: User | None, name: str, action: str, detail: str, now: datetime, client: str | None
) -> None:
    who = _to_user(user) if user is not None else audit.Actor(None, name or "?")
    with session_scope() as session:
        audit.write(session, who, action, "user", who.id, detail=detail, at=now, client=client)


def _authenticate(name: str, password: str, now: datetime, client: str | None) -> AuthenticatedUser:
    settings = get_settings()
    limit = settings.lockout_attempts
    with session_scope() as session:
        user = repo.get_user_by_username(session, name) if USERNAME_PATTERN.fullmatch(name) else None
        attempt = None
        if user is not None and user.active:
            # Step 1: take one of the account's tries (atomically, committed) before the slow check.
            attempt = repo.claim_login_attempt(session, user.id, limit, now)
        session.expunge_all()
    if user is None or not user.active or attempt is None:
        # Refused without looking at the password, but after the same work as a wrong one: equal time.
        verify_password(password, _dummy_hash())
        reason = (
            "unknown user" if user is None else "deactivated account" if not user.active else "account locked"
        )
        _audit_attempt(user, name, "login_failed", reason, now, client)
        if user is not None and user.active and user.locked_until is not None and user.locked_until > now:
            raise AccountLocked(user.locked_until)
        raise InvalidCredentials()
    # Step 2: the password check, outside any transaction (it is the slow part).
    if password and verify_password(password, user.password_hash):
        return _succeeded(user, password, now, client)
    # Step 3: lock when this failure completes the count; every failure gets its row.
    until = now + timedelta(minutes=settings.lockout_minutes)
    with session_scope() as session:
        locked = repo.lock_if_exhausted(session, user.id, limit, now, until)
        action, detail = (
            ("account_locked", f"{limit} failed attempts")
            if locked
            else ("login_failed", f"wrong password ({attempt} of {limit})")
        )
        audit.write(session, _to_user(user), action, "user", user.id, detail=detail, at=now, client=client)
    if locked:
        raise AccountLocked(until)
    raise InvalidCredentials()


def _succeeded(user: User, password: str, now: datetime, client: str | None) -> AuthenticatedUser:
    values: dict[str, object] = {"failed_attempts": 0, "locked_until": None, "last_login_at": now}
    if pwd_context.needs_update(user.password_hash):
        values["password_hash"] = hash_password(password)
    with session_scope() as session:
        repo.update_user_fields(session, user.id, **values)
        audit.write(session, _to_user(user), "login", "user", user.id, at=now, client=client)
    return _to_user(user)


class ClientThrottle:
    """Failed logins per client (an address), in this process: ``blocked`` once a client has
    ``Settings.client_lockout_attempts`` failures, over any accounts, within ``Settings.lockout_minutes``.

    In-process on purpose: a throttle that needs the database for every refused attempt is itself a load an
    attacker controls, and the per-account count (in the database) is what bounds guessing of one password.
    Each dashboard process counts on its own, so N replicas allow N times the attempts; a restart forgets.
    """

    def __init__(self) -> None:
        self._failures: dict[str, deque[datetime]] = {}
        self._lock = threading.Lock()

    def _recent(self, client: str, now: datetime) -> deque[datetime]:
        window = timedelta(minutes=get_settings().lockout_minutes)
        times = self._failures.get(client, deque())
        while times and now - times[0] >= window:
            times.popleft()
        return times

    def blocked(self, client: str, now: datetime) -> bool:
        """True while ``client`` has too many recent failures."""
        with self._lock:
            return len(self._recent(client, now)) >= get_settings().client_lockout_attempts

    def failed(self, client: str, now: datetime) -> None:
        """Count a failed login of ``client``."""
        with self._lock:
            times = self._recent(client, now)
            times.append(now)
            self._failures[client] = times
            if len(self._failures) > _THROTTLE_MAX_CLIENTS:  # forget clients with nothing recent
                for key in [k for k, v in self._failures.items() if not self._recent(k, now)]:
                    del self._failures[key]

    def clear(self, client: str | None = None) -> None:
        """Forget one client's failures (an admin's unblock), or everyone's."""
        with self._lock:
            if client is None:
                self._failures.clear()
            else:
                self._failures.pop(client, None)

    def blocked_clients(self, now: datetime) -> list[str]:
        """The clients refused right now."""
        limit = get_settings().client_lockout_attempts
        with self._lock:
            return sorted(k for k in list(self._failures) if len(self._recent(k, now)) >= limit)


_THROTTLE_MAX_CLIENTS = 10_000
THROTTLE = ClientThrottle()


def logout(user: AuthenticatedUser, *, reason: str = "logout") -> None:
    """Record a logout (``reason`` e.g. "logout" or "session expired") in the audit log."""
    with session_scope() as session:
        audit.write(session, user, "logout", "user", user.id, detail=reason)


def session_expired(last_activity: datetime, now: datetime, idle_minutes: int | None = None) -> bool:
    """True when more than ``idle_minutes`` (default ``Settings.session_idle_minutes``) passed since
    ``last_activity``. Pure: both datetimes must be timezone-aware."""
    if last_activity.tzinfo is None or now.tzinfo is None:
        raise ValueError("session_expired needs timezone-aware datetimes")
    minutes = get_settings().session_idle_minutes if idle_minutes is None else idle_minutes
    return now - last_activity > timedelta(minutes=minutes)


def load_user(user_id: int) -> AuthenticatedUser:
    """The current state of a signed-in user (role may have changed); ``NotFound`` if gone or deactivated."""
    with session_scope() as session:
        user = repo.get_user(session, user_id)
        if user is None or not user.active:
            raise NotFound("This account no longer exists or has been deactivated.")
        return _to_user(user)


def find_active_user(username: str) -> AuthenticatedUser:
    """The active account named ``username`` (command-line actions are done, and audited, as a named user);
    ``NotFound`` if there is none."""
    with session_scope() as session:
        user = repo.get_user_by_username(session, (username or "").strip().lower())
        if user is None or not user.active:
            raise NotFound(f"No active user named {username!r}.")
        return _to_user(user)


def require_admin(actor: AuthenticatedUser) -> None:
    """Raise ``PermissionDenied`` unless ``actor`` is an admin."""
    if not actor.is_admin:
        raise PermissionDenied()


def create_user(
    username: str,
    password: str,
    *,
    role: str = "doctor",
    full_name: str = "",
    actor: AuthenticatedUser | None = None,
) -> AuthenticatedUser:
    """Create a user after validating the username (3-32 of a-z 0-9 . _ -, starting with a letter or digit,
    stored lower case), the password (:func:`core.passwords.password_problem`) and the role.

    ``actor`` is the admin doing it from the dashboard (``PermissionDenied`` for a non-admin);
    ``None`` means the trusted command line (``python -m core create-user``, the demo seed).
    """
    if actor is not None:
        require_admin(actor)
    check = Checker()
    name = (username or "").strip().lower()
    if not USERNAME_PATTERN.fullmatch(name):
        check.errors["username"] = (
            "Username must be 3-32 characters (letters, digits, '.', '_', '-'), "
            "starting with a letter or digit."
        )
    check.choice("role", role, ROLES, label="Role")
    full = check.text("full_name", full_name, "full_name", label="Full name") or name
    problem = password_problem(password or "", name)
    if problem:
        check.errors["password"] = problem
    check.done()
    password_hash = hash_password(password)  # outside the transaction: hashing is the slow part
    try:
        with session_scope() as session:
            if repo.get_user_by_username(session, name) is not None:
                check.errors["username"] = f"Username {name!r} is already taken."
                check.done()
            user = repo.add_user(
                session,
                username=name,
                full_name=full,
                role=role,
                password_hash=password_hash,
                failed_attempts=0,
                active=True,
            )
            audit.write(
                session,
                actor or audit.SYSTEM,
                "user_created",
                "user",
                user.id,
                after={"username": name, "full_name": full, "role": role},
            )
            created = _to_user(user)
    except IntegrityError:
        # Lost a race with another creation of the same username between the check and the insert?
        with session_scope() as session:
            if repo.get_user_by_username(session, name) is not None:
                check.errors["username"] = f"Username {name!r} is already taken."
                check.done()
        raise
    log.info("user %r created with role %s", name, role)
    return created


def list_users(actor: AuthenticatedUser | audit.Actor) -> list[UserSummary]:
    """All users, for admins (``PermissionDenied`` otherwise) and the command line (an ``audit.Actor``)."""
    if isinstance(actor, AuthenticatedUser):
        require_admin(actor)
    with session_scope() as session:
        return [
            UserSummary(
                id=u.id,
                username=u.username,
                full_name=u.full_name,
                role=u.role,
                active=u.active,
                locked_until=u.locked_until,
                created_at=u.created_at,
                last_login_at=u.last_login_at,
                failed_attempts=u.failed_attempts,
            )
            for u in repo.list_users(session)
        ]
