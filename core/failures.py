"""Infrastructure failures (disk, database) told in one plain sentence, for pages and the command line.

A full disk, a read-only data folder, a database that is down or locked reach the services as ``OSError`` or
SQLAlchemy errors whose text holds server paths, SQL and (without ``hide_parameters``) the values typed. None
of that may reach a doctor's screen or a terminal: :func:`describe` gives the sentence to show instead, and
``None`` for an error that is not an infrastructure failure (a bug: the caller logs it with a reference).
Every sentence says that nothing was saved: the services write files and rows atomically, so a failure in
the middle of a save leaves neither.
"""

from __future__ import annotations

import errno
import uuid

from sqlalchemy import exc as sa_exc

ADVICE = "Nothing was saved. Try again in a moment; if it keeps happening, call IT."

_DISK = {
    errno.ENOSPC: "the server's disk is full",
    errno.EDQUOT: "the server's disk quota is used up",
    errno.EROFS: "the server's data folder is read-only",
    errno.EACCES: "the server is not allowed to write to its data folder",
    errno.EPERM: "the server is not allowed to write to its data folder",
    errno.EIO: "the server's disk reported an error",
}


def reason(exc: BaseException) -> str | None:
    """What went wrong, in words (``"the database cannot be reached"``), or ``None`` when ``exc`` is not a
    disk or database failure."""
    if isinstance(exc, sa_exc.SQLAlchemyError):
        text = str(getattr(exc, "orig", "") or "").lower()
        if "locked" in text or "busy" in text or isinstance(exc, sa_exc.TimeoutError):
            return "the database is busy (another program holds a lock on it)"
        if isinstance(exc, (sa_exc.OperationalError, sa_exc.InterfaceError, sa_exc.DisconnectionError)):
            if "read-only" in text or "readonly" in text:
                return "the database is read-only"
            if "disk" in text and "full" in text:
                return "the server's disk is full"
            return "the database cannot be reached"
        return None
    if isinstance(exc, OSError) and exc.errno is not None:
        return _DISK.get(
            exc.errno,
            f"a file could not be written on the server ({errno.errorcode.get(exc.errno, exc.errno)})",
        )
    return None


def describe(exc: BaseException, action: str = "This could not be saved") -> str | None:
    """``"{action}: {reason}. Nothing was saved. ..."``, or ``None`` when ``exc`` is not an infrastructure
    failure."""
    why = reason(exc)
    return None if why is None else f"{action}: {why}. {ADVICE}"


def reference() -> str:
    """A short id to quote to IT for an unexpected error (the server log has the details under it)."""
    return uuid.uuid4().hex[:8]


__all__ = ["ADVICE", "describe", "reason", "reference"]
