"""Engines and the one-transaction-per-action session scope.

``session_scope()`` is the only way services touch the database: it commits when the block ends normally
and rolls back on any exception, so an action (e.g. an edit and its audit row) is saved whole or not at all.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from core.config import get_settings

log = logging.getLogger(__name__)

_engines: dict[str, Engine] = {}
_factories: dict[str, sessionmaker[Session]] = {}
_lock = threading.Lock()


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # SQLite ignores foreign keys unless asked per connection; WAL lets the dashboard read while another
    # user's write is committing instead of failing with "database is locked".
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")  # safe with WAL; FULL fsyncs every commit
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.close()


def _private_sqlite_file(path: Path) -> None:
    """The SQLite file readable by the service's account only (0600, its folder 0700 when created here):
    SQLite creates the -wal and -shm files with the database file's permissions."""
    if not path.parent.is_dir():
        path.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(path.parent, 0o700)
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
        os.chmod(path, 0o600)
    except OSError as exc:  # a read-only or foreign file: SQLite reports what matters when it opens it
        log.warning("could not make %s private: %s", path, exc.strerror or exc)


def create_db_engine(url: str) -> Engine:
    """A new engine for ``url`` with the project's connection settings (uncached; see ``get_engine``)."""
    sa_url = make_url(url)
    if sa_url.get_backend_name() == "sqlite":
        database = sa_url.database
        if database and database != ":memory:" and not database.startswith("file:"):
            _private_sqlite_file(Path(database).expanduser())
        # hide_parameters: an error's text (logged, or caught and shown) never carries the values of the
        # statement, which are often clinical text a doctor typed.
        engine = create_engine(url, connect_args={"timeout": 5}, hide_parameters=True)
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    # pre_ping: a PostgreSQL restart otherwise surfaces as an error on the next user's click.
    return create_engine(url, pool_pre_ping=True, hide_parameters=True)


def get_engine(url: str | None = None) -> Engine:
    """The process-wide engine for ``url`` (default: ``get_settings().sqlalchemy_url``)."""
    url = url or get_settings().sqlalchemy_url
    with _lock:
        engine = _engines.get(url)
        if engine is None:
            engine = _engines[url] = create_db_engine(url)
            _factories[url] = sessionmaker(engine, expire_on_commit=False)
        return engine


@contextmanager
def session_scope(url: str | None = None) -> Iterator[Session]:
    """A session in one transaction: commit on success, rollback on error, always closed."""
    url = url or get_settings().sqlalchemy_url
    get_engine(url)
    session = _factories[url]()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def dispose_engines() -> None:
    """Close every pooled connection and forget the engines (tests switching databases, shutdown)."""
    with _lock:
        for engine in _engines.values():
            engine.dispose()
        _engines.clear()
        _factories.clear()


def check_database(url: str | None = None) -> None:
    """Open a connection and run ``SELECT 1``; raises the driver's error (as a SQLAlchemy error) when the
    database cannot be reached, so a start-up check can say so plainly."""
    with get_engine(url).connect() as conn:
        conn.execute(text("SELECT 1"))
