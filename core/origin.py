"""Where the actions of this thread come from, for the audit log's ``client`` column: ``web:<address>`` (set
by ``app.py`` on every script run), ``cli:<os user>@<host>`` (set by ``python -m core``).

A context variable, so each Streamlit session's script thread carries its own; a module of its own with no
imports, so the command line can set it without loading the database stack.
"""

from __future__ import annotations

import getpass
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

__all__ = ["cli_origin", "cli_user", "client", "current_client", "set_client"]

_LIMIT = 64  # audit_log.client
_CLIENT: ContextVar[str | None] = ContextVar("audit_client", default=None)


def set_client(value: str | None) -> None:
    """Name where the following actions of this thread come from."""
    _CLIENT.set(value[:_LIMIT] if value else None)


def current_client() -> str | None:
    """What :func:`set_client` set for this thread, if anything."""
    return _CLIENT.get()


@contextmanager
def client(value: str | None) -> Iterator[None]:
    """:func:`set_client` for the duration of a block."""
    token = _CLIENT.set(value[:_LIMIT] if value else None)
    try:
        yield
    finally:
        _CLIENT.reset(token)


def cli_user() -> str:
    """The operating-system account running the command line, as the audit log names it: ``cli:<user>``."""
    try:
        name = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (some containers)
        name = "unknown"
    return f"cli:{name}"[:32]


def cli_origin() -> str:
    """``cli:<os user>@<host>``."""
    return f"{cli_user()}@{socket.gethostname()}"[:_LIMIT]
