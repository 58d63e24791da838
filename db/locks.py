"""PostgreSQL advisory locks on stored file paths, so that hosts sharing one data directory agree on who may
remove a film's file (the database-side half of ``core.imaging.storage.FileLocks``).

``flock`` on the data directory's lock files covers processes on one host, and hosts whose shared file system
passes ``flock`` on to its server (NFSv4). It does not cover a share mounted with local-only locks (NFS
``local_lock=flock|all``, ``nolock``, many SMB/FUSE mounts), where each host would see only its own locks. With
PostgreSQL every host talks to the same server, so each file's lock is also taken there: a save holds a
*shared* advisory lock on each file's key from before it looks at the file until its transaction has ended;
a removal needs the *exclusive* one, tried without waiting. The keys are the first 8 bytes of the sha256 of
``cxr-file:`` + the connection's schema + the stored path, as a signed 64-bit integer (a collision only keeps a
file for the garbage collector). Advisory locks belong to the database, not to a schema, hence the schema in the
key: installations in two schemas of one database (parallel test workers, a staging copy) keep two data
directories and must never wait on, or keep, each other's files. The locks live on a connection of their own (session-level locks, so they span the save's
transaction and its cleanup after a rollback) and are released by ``pg_advisory_unlock_all()`` before the
connection goes back to the pool, or by the server when the process dies (kill -9 included). Session-level
locks need a direct connection or session pooling: behind PgBouncer in transaction mode they would not hold.

SQLite needs nothing here: its database file cannot be shared safely between hosts, so every writer is on one
host and ``flock`` covers it.
"""

from __future__ import annotations

import hashlib
import logging

from sqlalchemy import Connection, text

from db.session import get_engine

log = logging.getLogger(__name__)


def lock_key(relpath: str, schema: str = "public") -> int:
    """The advisory lock key of a stored path in the installation whose tables are in ``schema`` (signed 64-bit)."""
    digest = hashlib.sha256(f"cxr-file:{schema}:{relpath}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


class AdvisoryLocks:
    """Shared and exclusive advisory locks on stored paths, on one PostgreSQL connection of their own
    (opened at the first lock). Same interface as the ``remote`` of ``core.imaging.storage.FileLocks``."""

    def __init__(self, url: str | None = None) -> None:
        self._url = url
        self._conn: Connection | None = None
        self._schema = "public"

    def _connection(self) -> Connection:
        if self._conn is None:
            conn = get_engine(self._url).connect()
            self._schema = str(conn.execute(text("SELECT current_schema()")).scalar() or "public")
            self._conn = conn
        return self._conn

    def _call(self, function: str, relpath: str) -> object:
        conn = self._connection()
        key = lock_key(relpath, self._schema)
        value = conn.execute(text(f"SELECT {function}(:key)"), {"key": key}).scalar()
        conn.commit()  # end the implicit transaction; session-level advisory locks outlive it
        return value

    def share(self, relpath: str) -> None:
        """Wait for, then hold, the shared lock of ``relpath``."""
        self._call("pg_advisory_lock_shared", relpath)

    def try_exclusive(self, relpath: str) -> bool:
        """Take the exclusive lock of ``relpath`` if no other session holds it now; never waits."""
        return bool(self._call("pg_try_advisory_lock", relpath))

    def release(self) -> None:
        """Drop every lock held and give the connection back."""
        conn, self._conn = self._conn, None
        if conn is None:
            return
        try:
            conn.execute(text("SELECT pg_advisory_unlock_all()"))
            conn.commit()
        except Exception:  # a broken connection: discard it; the server dropped its locks with it
            log.warning("could not release advisory locks; discarding the connection", exc_info=True)
            conn.invalidate()
        finally:
            conn.close()


def host_locks(url: str | None = None) -> AdvisoryLocks | None:
    """Advisory locks for the configured database when it is PostgreSQL; ``None`` for SQLite."""
    engine = get_engine(url)
    return AdvisoryLocks(url) if engine.dialect.name == "postgresql" else None


__all__ = ["AdvisoryLocks", "host_locks", "lock_key"]
