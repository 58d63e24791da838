"""``python -m core storage gc``: remove stored files that no study references, and interrupted writes.

A save that failed or was killed (kill -9, power cut) between writing a film's files and committing its rows
leaves files nothing refers to; so can a failed save whose files another save was using at that moment
(``core.imaging.storage`` keeps them rather than risk removing a file about to be referenced). This command
removes such files, and ``.tmp-`` files of interrupted writes, once older than ``--older-than`` minutes, each
under its exclusive lock (with PostgreSQL also the database's advisory lock, ``db.locks``, so saves on other
hosts are respected) with the database asked again, so it is safe while the dashboard runs.
"""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``storage`` command."""
    parser = subparsers.add_parser("storage", help="stored files: garbage collection")
    sub = parser.add_subparsers(dest="storage_command", required=True, metavar="ACTION")
    gc = sub.add_parser("gc", help="remove unreferenced files and interrupted writes")
    gc.add_argument(
        "--older-than",
        type=float,
        default=60.0,
        metavar="MINUTES",
        help="only files older than this (default 60)",
    )
    gc.add_argument("--dry-run", action="store_true", help="list what would be removed; remove nothing")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from core.audit import SYSTEM
    from core.audit import write as write_audit
    from core.imaging import storage
    from db import repository as repo
    from db.locks import host_locks
    from db.session import session_scope

    if args.older_than < 0:
        print("error: --older-than must be 0 or more minutes", flush=True)
        return 2

    def referenced() -> set[str]:
        with session_scope() as session:
            return repo.stored_paths(session)

    def is_referenced(relpath: str) -> bool:
        with session_scope() as session:
            return repo.stored_path_in_use(session, relpath)

    store = storage.FileStore()
    done = storage.collect_garbage(
        store, referenced, is_referenced, args.older_than, args.dry_run, remote=host_locks
    )
    verb = "would remove" if args.dry_run else "removed"
    for relpath in (*done.removed, *done.temporary):
        print(f"{verb} {relpath}")
    print(
        f"{verb} {len(done.removed)} unreferenced file(s) and {len(done.temporary)} interrupted write(s), "
        f"{done.bytes_freed / 1e6:.1f} MB; kept {done.kept_busy} in use by a save, "
        f"{done.kept_young} younger than {args.older_than:g} min"
    )
    if not args.dry_run and (done.removed or done.temporary):
        with session_scope() as session:
            write_audit(
                session,
                SYSTEM,
                "storage_gc",
                "storage",
                None,
                after={
                    "removed": len(done.removed),
                    "temporary": len(done.temporary),
                    "bytes": done.bytes_freed,
                },
                detail=f"older than {args.older_than:g} min",
            )
    return 0
