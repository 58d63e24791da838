"""Account management: an admin unlocks, deactivates, re-activates or resets the password of an account; a
user changes their own password. Every action is audited (never with a password in it).

``actor`` is the admin doing it from the dashboard (``PermissionDenied`` for anyone else), or a
:class:`core.audit.Actor` for the trusted command line (``python -m core users ...``, audited as
``cli:<os user>``: whoever can run it can already read the database's credentials, see ``core/cli/accounts.py``).
"""

from __future__ import annotations

import logging
from typing import Any

from core import audit
from core.auth import THROTTLE, AuthenticatedUser, hash_password, require_admin, verify_password
from core.errors import NotFound, PermissionDenied, ValidationError
from core.passwords import password_problem
from db import repository as repo
from db.base import utcnow
from db.models import User
from db.session import session_scope

log = logging.getLogger(__name__)

__all__ = [
    "activate",
    "change_own_password",
    "deactivate",
    "reset_password",
    "unblock_client",
    "unlock",
]

Manager = AuthenticatedUser | audit.Actor


def _check_actor(actor: Manager) -> None:
    if isinstance(actor, AuthenticatedUser):
        require_admin(actor)


def _target(session: Any, username: str) -> User:
    user = repo.get_user_by_username(session, (username or "").strip().lower())
    if user is None:
        raise NotFound(f"No user named {username!r}.")
    return user


def _checked_password(password: str, username: str, field: str = "password") -> str:
    problem = password_problem(password or "", username)
    if problem:
        raise ValidationError({field: problem})
    return hash_password(password)  # before the transaction: hashing is the slow part


def unlock(username: str, actor: Manager) -> None:
    """End a lock and clear the failed-attempt count of ``username``."""
    _check_actor(actor)
    with session_scope() as session:
        user = _target(session, username)
        before = {"locked_until": user.locked_until, "failed_attempts": user.failed_attempts}
        repo.update_user_fields(session, user.id, failed_attempts=0, locked_until=None)
        audit.write(session, actor, "account_unlocked", "user", user.id, before=before)
    log.info("account %r unlocked by %s", username, actor.username)


def _set_active(username: str, actor: Manager, active: bool) -> None:
    _check_actor(actor)
    with session_scope() as session:
        user = _target(session, username)
        if not active and isinstance(actor, AuthenticatedUser) and user.id == actor.id:
            raise PermissionDenied("You cannot deactivate your own account.")
        if not active and user.role == "admin" and user.active and repo.count_active_admins(session) <= 1:
            raise PermissionDenied("This is the last active administrator: make another one first.")
        if user.active == active:
            return
        repo.update_user_fields(session, user.id, active=active, failed_attempts=0, locked_until=None)
        action = "account_activated" if active else "account_deactivated"
        audit.write(
            session, actor, action, "user", user.id, before={"active": not active}, after={"active": active}
        )


def deactivate(username: str, actor: Manager) -> None:
    """Stop ``username`` from logging in; a signed-in session of theirs ends on its next click."""
    _set_active(username, actor, False)


def activate(username: str, actor: Manager) -> None:
    """Let a deactivated ``username`` log in again."""
    _set_active(username, actor, True)


def reset_password(username: str, new_password: str, actor: Manager) -> None:
    """Give ``username`` a new password (checked by the policy); also ends a lock."""
    _check_actor(actor)
    name = (username or "").strip().lower()
    password_hash = _checked_password(new_password, name)
    with session_scope() as session:
        user = _target(session, name)
        repo.update_user_fields(
            session, user.id, password_hash=password_hash, failed_attempts=0, locked_until=None
        )
        audit.write(
            session, actor, "password_reset", "user", user.id, detail="password set by an administrator"
        )


def change_own_password(user: AuthenticatedUser, current_password: str, new_password: str) -> None:
    """A signed-in user replaces their password: the current one must be right (``ValidationError`` on
    ``current_password`` otherwise, audited as a failed login), the new one pass the policy."""
    with session_scope() as session:
        row = repo.get_user(session, user.id)
        if row is None or not row.active:
            raise NotFound("This account no longer exists or has been deactivated.")
        stored_hash = row.password_hash
    if not verify_password(current_password or "", stored_hash):
        with session_scope() as session:
            audit.write(
                session,
                user,
                "login_failed",
                "user",
                user.id,
                detail="wrong current password (password change)",
            )
        raise ValidationError({"current_password": "The current password is not right."})
    if new_password == current_password:
        raise ValidationError({"new_password": "The new password must differ from the current one."})
    password_hash = _checked_password(new_password, user.username, field="new_password")
    with session_scope() as session:
        repo.update_user_fields(session, user.id, password_hash=password_hash, failed_attempts=0)
        audit.write(session, user, "password_changed", "user", user.id, at=utcnow())


def unblock_client(client: str, actor: Manager) -> None:
    """Forget the failed logins of ``client`` (this process's throttle, see ``core.auth.ClientThrottle``)."""
    _check_actor(actor)
    THROTTLE.clear(client)
    with session_scope() as session:
        audit.write(session, actor, "account_unlocked", "client", client, detail=f"client {client} unblocked")
