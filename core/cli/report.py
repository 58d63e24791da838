"""``python -m core report STUDY_ID --format pdf|fhir --out FILE --user NAME``: a film's report, audited.

``pdf``: the one-page report (``core.handoff.pdf``); ``fhir``: the FHIR R4 Bundle as JSON
(``core.handoff.fhir``). The file is written atomically; an existing ``--out`` is refused unless ``--force``.
Exit status 0 when written, 2 for an unknown study or user, or a file that exists.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

FORMATS = ("pdf", "fhir")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``report`` command."""
    parser = subparsers.add_parser("report", help="a film's report as PDF or FHIR R4 JSON")
    parser.add_argument("study_id", type=int, metavar="STUDY_ID")
    parser.add_argument("--format", choices=FORMATS, default="pdf")
    parser.add_argument("--out", type=Path, required=True, metavar="FILE")
    parser.add_argument("--user", required=True, help="who makes the report (an active account; audited)")
    parser.add_argument("--force", action="store_true", help="replace an existing file")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from core.auth import find_active_user
    from core.errors import NotFound
    from core.handoff.export import make_report

    if args.out.exists() and not args.force:
        print(f"error: {args.out} exists (use --force to replace it)", file=sys.stderr)
        return 2
    try:
        actor = find_active_user(args.user)
        report = make_report(args.study_id, args.format, actor)
    except NotFound as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from core.imaging.storage import write_atomic

    write_atomic(args.out, report.data)
    print(f"wrote {args.out} ({report.media_type}, {len(report.data)} bytes) in {report.ms:.0f} ms")
    return 0


__all__ = ["FORMATS", "register", "run"]
