"""``python -m core pacs sync|send``: import the films sent to the hospital's PACS, send a film's read back.

``sync --user NAME``: every new instance on the PACS (``CXR_PACS_URL``) is matched to its patient by PatientID,
analysed and saved like an upload, or listed as unmatched / refused; then the reads not yet sent go back
(``core.pacs.sync``). ``send STUDY_ID --user NAME``: store the film's SR and secondary capture to the PACS again
(e.g. after sign-off). A PACS that does not answer gives one line and exit status 1 (the next sync retries);
no PACS configured, or an unknown user or study, exit status 2.
"""

from __future__ import annotations

import argparse
import sys


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``pacs`` command."""
    parser = subparsers.add_parser("pacs", help="import films from the PACS, send reads back to it")
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="sync|send")
    sync = verbs.add_parser("sync", help="import new films from the PACS and send back their reads")
    sync.add_argument("--user", required=True, help="the account the import is done (and audited) as")
    sync.set_defaults(func=run_sync)
    send = verbs.add_parser("send", help="store a film's SR and secondary capture to the PACS")
    send.add_argument("study_id", type=int, metavar="STUDY_ID")
    send.add_argument("--user", required=True, help="who sends (an active account; audited)")
    send.set_defaults(func=run_send)


def run_sync(args: argparse.Namespace) -> int:
    from core.auth import find_active_user
    from core.errors import NotFound
    from core.pacs.sync import PacsNotConfigured, sync

    try:
        report = sync(find_active_user(args.user))
    except (NotFound, PacsNotConfigured) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(report.summary())
    if report.error:
        print(f"error: {report.error} The next sync retries.", file=sys.stderr)
        return 1
    return 0


def run_send(args: argparse.Namespace) -> int:
    from core.auth import find_active_user
    from core.errors import NotFound
    from core.pacs.client import PacsUnavailable
    from core.pacs.sync import PacsNotConfigured, ReadNotExportable, send_reading

    try:
        stored = send_reading(args.study_id, find_active_user(args.user), reason="manual")
    except (NotFound, PacsNotConfigured) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (PacsUnavailable, ReadNotExportable) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"stored {len(stored)} instance(s) of study {args.study_id} to the PACS")
    return 0


__all__ = ["register", "run_send", "run_sync"]
