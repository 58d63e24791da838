"""Typed errors raised by the services in ``core/``.

Every message is written for the person at the keyboard: pages show ``str(error)`` as is, so
messages never contain stack details, SQL or whether a username exists.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime


class AppError(Exception):
    """Base class of every error a page is expected to catch and show."""


class ValidationError(AppError):
    """Input that cannot be saved; ``errors`` maps a field name to a message about that field."""

    def __init__(self, errors: Mapping[str, str]) -> None:
        self.errors: dict[str, str] = dict(errors)
        super().__init__("; ".join(f"{field}: {message}" for field, message in self.errors.items()))


class NotFound(AppError):
    """The patient, visit, allergy, condition or user asked for does not exist."""


class ConflictError(AppError):
    """The row was changed by someone else since it was loaded; the caller must reload and redo the edit."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(
            message or "This record was changed by someone else since you opened it — reload and try again."
        )


class PermissionDenied(AppError):
    """The signed-in user's role does not allow this action."""

    def __init__(self, message: str = "Only an administrator can do this.") -> None:
        super().__init__(message)


class AuthError(AppError):
    """Base class of login failures."""


class InvalidCredentials(AuthError):
    """Wrong username or password; deliberately does not say which."""

    def __init__(self) -> None:
        super().__init__("Invalid username or password.")


class AccountLocked(InvalidCredentials):
    """Too many failed logins; the account accepts no password until ``until`` (UTC).

    Says exactly what :class:`InvalidCredentials` says: telling a locked account apart from a wrong password
    would tell anyone trying names which ones exist. The type and ``until`` are for the audit and tests.
    """

    def __init__(self, until: datetime) -> None:
        super().__init__()
        self.until = until


class ClientThrottled(AuthError):
    """Too many failed logins from this client (any accounts): it must wait before trying again."""

    def __init__(self, minutes: int) -> None:
        super().__init__(
            f"Too many failed logins from this computer: wait {minutes} minutes before trying again, "
            "or ask an administrator."
        )
