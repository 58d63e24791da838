"""Users, password hashing, login with lockout, and session idle expiry.

Hashing: passlib's ``CryptContext`` with the argon2 scheme (argon2id via the argon2-cffi backend). Why:
passlib is the product's named stack and its argon2 scheme works cleanly on the pinned versions, whereas
passlib 1.7.4 breaks with bcrypt 5 and bcrypt silently truncates passwords at 72 bytes (argon2 does not);
and ``CryptContext.needs_update`` lets a successful login transparently rehash a password when the cost
parameters are raised later.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache

from passlib.context import CryptContext
from passlib.exc import PasswordSizeError, UnknownHashError
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm.exc import StaleDataError

from core import audit
from core.config import get_settings
from core.errors import AccountLocked, AppError, InvalidCredentials, NotFound, PermissionDenied
from core.validation import USERNAME_PATTERN, Checker
from db import repository as repo
from db.base import utcnow
from db.models import ROLES, User
from db.session import session_scope

log = logging.getLogger(__name__)

__all__ = [
    "MIN_PASSWORD_LENGTH",
    "AccountLocked",
    "AuthenticatedUser",
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

MIN_PASSWORD_LENGTH = 12
# argon2 has no length limit of its own; this only stops someone from making every login hash megabytes.
MAX_PASSWORD_LENGTH = 1024

# passlib's argon2 defaults are argon2id, t=3, m=64 MiB, p=4 (~0.1-0.3 s per hash on this 2-core machine).
pwd_context = CryptContext(schemes=["argon2"], deprecated="auto")


_LOGIN_RETRIES = 3  # concurrent logins of one account collide on its version column; rerun on StaleDataError


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


def authenticate(username: str, password: str, *, now: datetime | None = None) -> AuthenticatedUser:
    """Check a login and return the user.

    Raises ``InvalidCredentials`` (same message whether or not the user exists, and an equal-cost hash
    check for unknown users) or ``AccountLocked`` after ``Settings.lockout_attempts`` consecutive failures,
    for ``Settings.lockout_minutes``; a locked account accepts no password until then. Successes and
    failures are audited; a success resets the counter.
    """
    for attempt in range(_LOGIN_RETRIES):
        try:
            return _authenticate_once(username, password, now or utcnow())
        except StaleDataError:
            log.info("login of %r collided with a concurrent update (try %d)", username, attempt + 1)
    raise InvalidCredentials()


def _authenticate_once(username: str, password: str, now: datetime) -> AuthenticatedUser:
    settings = get_settings()
    name = (username or "").strip().lower()
    password = password or ""
    failure: AppError | None = None
    result: AuthenticatedUser | None = None
    # The failure is raised only after the scope commits: the failed-attempt counter and audit row must
    # be saved even though the caller gets an exception.
    with session_scope() as session:
        user = repo.get_user_by_username(session, name) if USERNAME_PATTERN.fullmatch(name) else None

        def record(action: str, detail: str) -> None:
            who = user if user is not None else audit.Actor(None, name or "?")
            entity = user.id if user is not None else None
            audit.write(session, who, action, "user", entity, detail=detail, at=now)

        if user is None or not user.active:
            verify_password(password, _dummy_hash())
            record("login_failed", "unknown user" if user is None else "deactivated account")
            failure = InvalidCredentials()
        elif user.locked_until is not None and user.locked_until > now:
            record("login_failed", "account locked")
            failure = AccountLocked(user.locked_until)
        elif not password or not verify_password(password, user.password_hash):
            user.failed_attempts += 1
            if user.failed_attempts >= settings.lockout_attempts:
                user.locked_until = now + timedelta(minutes=settings.lockout_minutes)
                user.failed_attempts = 0
                record("account_locked", f"{settings.lockout_attempts} failed attempts")
                failure = AccountLocked(user.locked_until)
            else:
                record(
                    "login_failed", f"wrong password ({user.failed_attempts} of {settings.lockout_attempts})"
                )
                failure = InvalidCredentials()
        else:
            user.failed_attempts = 0
            user.locked_until = None
            user.last_login_at = now
            if pwd_context.needs_update(user.password_hash):
                user.password_hash = hash_password(password)
            record("login", "")
            result = _to_user(user)
        session.flush()
    if failure is not None:
        raise failure
    assert result is not None
    return result


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
    stored lower case), the password (12 to 1024 characters, not the username) and the role.

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
    password = password or ""
    if len(password) < MIN_PASSWORD_LENGTH:
        check.errors["password"] = f"Password must be at least {MIN_PASSWORD_LENGTH} characters."
    elif len(password) > MAX_PASSWORD_LENGTH:
        check.errors["password"] = f"Password must be at most {MAX_PASSWORD_LENGTH} characters."
    elif password.strip().lower() == name:
        check.errors["password"] = "Password must not be the username."
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


def list_users(actor: AuthenticatedUser) -> list[UserSummary]:
    """All users, for admins (``PermissionDenied`` otherwise)."""
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
            )
            for u in repo.list_users(session)
        ]
