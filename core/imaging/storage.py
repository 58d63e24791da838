"""Files of the X-ray studies under ``Settings.data_dir``: content addressed, written atomically.

Layout (paths stored in the database are relative to the data directory, so it can move)::

    originals/ab/cdef...0123.dcm    the uploaded bytes, named by their sha256
    renders/ab/cdef...0123.jpg      previews, thumbnails, box overlays, heat-map grids (named by their own sha256)
    cache/...                       renderings made on demand (heat-map overlays); safe to delete

A file is written to a temporary name in its final folder, flushed and fsynced, then renamed over the final
name, and the folder is fsynced: a reader sees the whole file or none, even after a power cut. The same
content always lands at the same name, so an existing file is never rewritten, only reused.

:class:`StagedFiles` is the file half of an atomic save: it remembers which files *this* action created
and removes exactly those if the action fails (never a file that was already there for another study).

Across processes and hosts sharing the data directory, a file is never removed while another save may be
about to reference it. Each stored path hashes to one of 256 lock files (``locks/xx.lock``, made once and
never removed). A save holds a *shared* ``flock`` on the lock of every file it writes or reuses, from just
before it looks at the file until its transaction has committed or rolled back. Removing a file (a failed
save's cleanup, ``python -m core storage gc``) needs the *exclusive* lock, taken without waiting: when
another save holds the file's lock, the file is left where it is and the garbage collector removes it later
if nothing references it by then. A save that finds a file gone (removed under the exclusive lock just
before) writes it again. Processes killed mid-save (kill -9, power cut) release their locks with the process;
their files stay unreferenced and ``storage gc`` removes them once older than its age limit.
On a shared network file system Linux maps ``flock`` onto the server's byte-range locks (NFSv4, or v3 with
lockd); there two threads of one process do not exclude each other, which ``save_lock`` covers.

Hosts whose share keeps locks local (NFS ``local_lock``/``nolock``, many SMB or FUSE mounts) would not see each
other's ``flock``s; with PostgreSQL the same locks are also taken on the database server (``remote``, see
``db.locks``: advisory locks keyed by the path's sha256), which every host shares. A removal needs both
exclusive locks; a save holds both shared ones. (SQLite's file cannot be shared between hosts, so there every
writer is on one host and ``flock`` suffices.) This module never imports ``db``: the services pass ``remote``.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from core.config import get_settings

log = logging.getLogger(__name__)

ORIGINALS = "originals"
RENDERS = "renders"
CACHE = "cache"
LOCKS = "locks"
TMP_PREFIX = ".tmp-"

#: Serializes the "write files, then commit rows" window of saves within this process, so that one save
#: cannot remove, on failure, a file that a concurrent save of the same content has just reused.
save_lock = threading.Lock()


class StorageError(RuntimeError):
    """A stored path that is not inside the data directory (a corrupted or forged database value)."""


def sha256_hex(data: bytes) -> str:
    """The sha256 of ``data`` as 64 hex digits."""
    return hashlib.sha256(data).hexdigest()


#: Patient data at rest is readable by the service's own account only: files 0600, folders 0700.
FILE_MODE = 0o600
DIR_MODE = 0o700


def make_private_dir(folder: Path) -> None:
    """Create ``folder`` and any missing parents with DIR_MODE (existing folders are left as they are)."""
    missing = []
    for level in (folder, *folder.parents):
        if level.is_dir():
            break
        missing.append(level)
    for level in reversed(missing):
        try:
            level.mkdir(mode=DIR_MODE)
        except FileExistsError:  # made meanwhile by a concurrent save
            continue
        os.chmod(level, DIR_MODE)  # mkdir's mode is filtered by the umask


def open_private(path: Path) -> int:
    """A new file at ``path`` (which must not exist), opened for writing with FILE_MODE; its descriptor."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    os.fchmod(fd, FILE_MODE)  # os.open's mode is filtered by the umask; never wider than FILE_MODE
    return fd


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see all of it or nothing (temp file, fsync, rename);
    the file is created FILE_MODE and missing folders DIR_MODE."""
    make_private_dir(path.parent)
    tmp = path.parent / f"{TMP_PREFIX}{uuid.uuid4().hex}"
    try:
        with open(open_private(tmp), "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    # The rename is durable only once the folder's entry is on disk.
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # platforms without directory handles
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@dataclass(frozen=True)
class StoredFile:
    """A file in the store: its path relative to the root, and whether this call wrote it."""

    relpath: str
    created: bool


class FileStore:
    """The data directory (default ``get_settings().data_dir``)."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = Path(root) if root is not None else get_settings().data_dir

    @staticmethod
    def content_path(kind: str, digest: str, suffix: str) -> str:
        """``kind/ab/cdef...suffix`` for a sha256 ``digest`` (two-character fan-out keeps folders small)."""
        return f"{kind}/{digest[:2]}/{digest[2:]}{suffix}"

    def absolute(self, relpath: str) -> Path:
        """The absolute path of a stored relative path; refuses anything that leaves the data directory."""
        root = self.root.resolve()
        path = (root / relpath).resolve()
        if not path.is_relative_to(root) or path == root:
            raise StorageError(f"stored path {relpath!r} is outside the data directory")
        return path

    def exists(self, relpath: str) -> bool:
        return self.absolute(relpath).is_file()

    def put(self, data: bytes, kind: str, suffix: str, digest: str | None = None) -> StoredFile:
        """Store ``data`` at its content address under ``kind``; an existing identical file is reused."""
        relpath = self.content_path(kind, digest or sha256_hex(data), suffix)
        path = self.absolute(relpath)
        if path.is_file():
            return StoredFile(relpath, created=False)
        write_atomic(path, data)
        return StoredFile(relpath, created=True)

    def remove(self, relpath: str) -> None:
        """Delete a stored file if it is there."""
        self.absolute(relpath).unlink(missing_ok=True)

    def cached(self, relpath: str, render: Callable[[], bytes]) -> Path:
        """The file at ``relpath`` (under ``cache/``), rendered by ``render()`` and written the first time."""
        if not relpath.startswith(f"{CACHE}/"):
            raise StorageError(f"cache entries live under {CACHE}/, not {relpath!r}")
        path = self.absolute(relpath)
        if not path.is_file():
            write_atomic(path, render())
        return path


class HostLocks(Protocol):
    """Locks on stored paths that every host sharing the data directory sees (``db.locks.AdvisoryLocks``)."""

    def share(self, relpath: str) -> None: ...

    def try_exclusive(self, relpath: str) -> bool: ...

    def release(self) -> None: ...


class FileLocks:
    """Shared and exclusive ``flock``s on the 256 lock files of a store (see the module docstring), and the
    same locks through ``remote`` (made at the first lock) when the services give one.

    One object belongs to one action (one thread); :meth:`release` (or leaving a ``with``) drops them all.
    """

    def __init__(self, store: FileStore, remote: Callable[[], HostLocks | None] | None = None) -> None:
        self.store = store
        self._held: dict[str, tuple[int, int]] = {}  # lock file name -> (descriptor, LOCK_SH or LOCK_EX)
        self._remote_factory = remote
        self._remote: HostLocks | None = None
        self._remote_shared: set[str] = set()
        self._remote_exclusive: set[str] = set()

    def _host(self) -> HostLocks | None:
        if self._remote is None and self._remote_factory is not None:
            self._remote = self._remote_factory()
            if self._remote is None:  # no host-wide locks for this database (SQLite)
                self._remote_factory = None
        return self._remote

    def _name(self, relpath: str) -> str:
        return f"{sha256_hex(relpath.encode())[:2]}.lock"

    def _fd(self, name: str) -> int:
        held = self._held.get(name)
        if held is not None:
            return held[0]
        folder = self.store.root / LOCKS
        make_private_dir(folder)
        return os.open(folder / name, os.O_RDWR | os.O_CREAT, FILE_MODE)

    def share(self, relpath: str) -> None:
        """Wait for, then hold, the shared lock of ``relpath`` (no-op when this object holds it already)."""
        name = self._name(relpath)
        if name not in self._held:
            fd = self._fd(name)
            fcntl.flock(fd, fcntl.LOCK_SH)
            self._held[name] = (fd, fcntl.LOCK_SH)
        host = self._host()
        if host is not None and relpath not in self._remote_shared:
            host.share(relpath)
            self._remote_shared.add(relpath)

    def try_exclusive(self, relpath: str) -> bool:
        """Take the exclusive lock of ``relpath`` (here and on ``remote``) if nobody else holds it now;
        never waits."""
        if not self._try_local_exclusive(relpath):
            return False
        host = self._host()
        if host is None or relpath in self._remote_exclusive:
            return True
        if not host.try_exclusive(relpath):  # a save on another host holds it: hold nothing here either
            fd, _ = self._held.pop(self._name(relpath))
            os.close(fd)
            return False
        self._remote_exclusive.add(relpath)
        return True

    def _try_local_exclusive(self, relpath: str) -> bool:
        name = self._name(relpath)
        held = self._held.get(name)
        if held is not None and held[1] == fcntl.LOCK_EX:
            return True
        fd = self._fd(name)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            if held is None:
                os.close(fd)
            else:  # a failed conversion may have dropped the shared lock: forget it (nothing is kept)
                self._held.pop(name)
                os.close(fd)
            return False
        self._held[name] = (fd, fcntl.LOCK_EX)
        return True

    def release(self) -> None:
        """Drop every lock (the remote ones first: a local waiter then finds the remote ones free too)."""
        host, self._remote = self._remote, None
        self._remote_shared.clear()
        self._remote_exclusive.clear()
        try:
            if host is not None:
                host.release()
        finally:
            for fd, _ in self._held.values():
                os.close(fd)  # closing the descriptor drops its flock
            self._held.clear()

    def __enter__(self) -> FileLocks:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


@dataclass
class StagedFiles:
    """Files written for one action; :meth:`discard` removes the ones it created.

    ``still_needed(relpath)`` is asked before each removal (after the action's transaction has rolled
    back): a file that a committed row references meanwhile, e.g. written by a concurrent save in another
    process, is kept.
    """

    store: FileStore
    still_needed: Callable[[str], bool] | None = None
    created: list[str] = field(default_factory=list)
    used: list[str] = field(default_factory=list)
    locks: FileLocks | None = None
    remote: Callable[[], HostLocks | None] | None = None

    def __post_init__(self) -> None:
        if self.locks is None:
            self.locks = FileLocks(self.store, self.remote)

    def put(self, data: bytes, kind: str, suffix: str, digest: str | None = None) -> str:
        """Store ``data`` (see :meth:`FileStore.put`) under its shared lock and return its relative path."""
        assert self.locks is not None
        digest = digest or sha256_hex(data)
        self.locks.share(self.store.content_path(kind, digest, suffix))
        stored = self.store.put(data, kind, suffix, digest)
        (self.created if stored.created else self.used).append(stored.relpath)
        return stored.relpath

    def discard(self) -> list[str]:
        """Remove every file this action created that no other save holds or references; return them.

        A file whose lock another save holds is kept (that save may be about to commit a reference to it);
        ``python -m core storage gc`` removes it later if nothing references it by then.
        """
        assert self.locks is not None
        removed = []
        for relpath in reversed(self.created):
            try:
                if not self.locks.try_exclusive(relpath):
                    log.info("kept %s: another save is using it (storage gc removes it if unused)", relpath)
                    continue
                if self.still_needed is not None and self.still_needed(relpath):
                    log.info("kept %s: referenced by another saved study", relpath)
                    continue
                self.store.remove(relpath)
                removed.append(relpath)
            except Exception:  # cleanup must not hide the error that caused it
                log.exception("could not remove %s after a failed save", relpath)
        self.created.clear()
        return removed

    def release(self) -> None:
        """Drop the file locks (after the transaction that references the files has ended)."""
        if self.locks is not None:
            self.locks.release()


@contextmanager
def staged(
    store: FileStore,
    still_needed: Callable[[str], bool] | None = None,
    remote: Callable[[], HostLocks | None] | None = None,
) -> Iterator[StagedFiles]:
    """``with staged(store) as files:`` — files created in the block are removed if the block raises (only
    those no other save holds, here or, through ``remote``, on another host)."""
    files = StagedFiles(store, still_needed, remote=remote)
    try:
        yield files
    except BaseException:
        files.discard()
        raise
    finally:
        files.release()


@dataclass(frozen=True)
class Collected:
    """What :func:`collect_garbage` found: removed (or, dry run, removable) files and what it kept."""

    removed: tuple[str, ...]
    temporary: tuple[str, ...]
    kept_busy: int
    kept_young: int
    bytes_freed: int


def _age_minutes(path: Path, now: float) -> float:
    try:
        return (now - path.stat().st_mtime) / 60.0
    except FileNotFoundError:
        return -1.0


def collect_garbage(
    store: FileStore,
    referenced: Callable[[], set[str]],
    is_referenced: Callable[[str], bool],
    older_than_minutes: float = 60.0,
    dry_run: bool = False,
    remote: Callable[[], HostLocks | None] | None = None,
) -> Collected:
    """Remove files under ``originals/`` and ``renders/`` that no row references, and ``.tmp-`` files left
    by interrupted writes, once older than ``older_than_minutes``.

    Each removal takes the file's exclusive lock without waiting and asks ``is_referenced`` again under it,
    (and, through ``remote``, the database's), so a file that a save in another process or on another host
    is about to reference is never removed (it is kept and counted as busy). ``referenced()`` gives every path the database refers to (read once, for the first pass). ``cache/`` is left alone (renderings made on demand; delete it freely).
    """
    now = time.time()
    removed: list[str] = []
    temporary: list[str] = []
    busy = young = freed = 0
    known = referenced()
    with FileLocks(store, remote) as locks:
        for kind in (ORIGINALS, RENDERS):
            top = store.root / kind
            if not top.is_dir():
                continue
            for path in sorted(top.rglob("*")):
                if not path.is_file():
                    continue
                age = _age_minutes(path, now)
                if age < older_than_minutes:
                    young += 1
                    continue
                relpath = path.relative_to(store.root).as_posix()
                if path.name.startswith(TMP_PREFIX):
                    size = path.stat().st_size
                    if not dry_run:
                        path.unlink(missing_ok=True)
                    temporary.append(relpath)
                    freed += size
                    continue
                if relpath in known:
                    continue
                if not locks.try_exclusive(relpath):
                    busy += 1
                    continue
                try:
                    if is_referenced(relpath):  # committed meanwhile
                        continue
                    size = path.stat().st_size
                    if not dry_run:
                        path.unlink(missing_ok=True)
                    removed.append(relpath)
                    freed += size
                finally:
                    locks.release()
    return Collected(tuple(removed), tuple(temporary), busy, young, freed)


__all__ = [
    "CACHE",
    "DIR_MODE",
    "LOCKS",
    "Collected",
    "FileLocks",
    "HostLocks",
    "collect_garbage",
    "FILE_MODE",
    "ORIGINALS",
    "RENDERS",
    "FileStore",
    "StagedFiles",
    "StorageError",
    "StoredFile",
    "save_lock",
    "sha256_hex",
    "make_private_dir",
    "open_private",
    "staged",
    "write_atomic",
]
