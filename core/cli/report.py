"""``python -m core report STUDY_ID --format pdf|fhir|dicom-sr --out FILE --user NAME``: a film's report,
audited.

``pdf``: the one-page report (``core.handoff.pdf``); ``fhir``: the FHIR R4 Bundle as JSON
(``core.handoff.fhir``); ``dicom-sr``: two DICOM files beside ``FILE`` (its ``.dcm`` suffix dropped):
``FILE.sr.dcm``, the Structured Report, and ``FILE.sc.dcm``, the film with its boxes as a secondary capture
(``core.handoff.dicom_out``). Files are written atomically; an existing file is refused unless ``--force``.
Exit status 0 when written, 2 for an unknown study or user, or a file that exists.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

FORMATS = ("pdf", "fhir", "dicom-sr")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``report`` command."""
    parser = subparsers.add_parser("report", help="a film's report as PDF, FHIR R4 JSON or DICOM SR + image")
    parser.add_argument("study_id", type=int, metavar="STUDY_ID")
    parser.add_argument("--format", choices=FORMATS, default="pdf")
    parser.add_argument("--out", type=Path, required=True, metavar="FILE")
    parser.add_argument("--user", required=True, help="who makes the report (an active account; audited)")
    parser.add_argument("--force", action="store_true", help="replace an existing file")
    parser.set_defaults(func=run)


def targets(out: Path, fmt: str) -> list[tuple[str, Path]]:
    """(suffix, path) of each file ``fmt`` writes for ``--out out``."""
    if fmt != "dicom-sr":
        return [("", out)]
    from core.handoff.export import DICOM_SUFFIXES

    base = out.name[: -len(".dcm")] if out.name.lower().endswith(".dcm") else out.name
    return [(suffix, out.with_name(base + suffix)) for suffix in DICOM_SUFFIXES]


def run(args: argparse.Namespace) -> int:
    from core.auth import find_active_user
    from core.errors import NotFound
    from core.handoff.export import make_report

    paths = targets(args.out, args.format)
    existing = [str(p) for _, p in paths if p.exists()]
    if existing and not args.force:
        print(f"error: {', '.join(existing)} exists (use --force to replace it)", file=sys.stderr)
        return 2
    try:
        actor = find_active_user(args.user)
        report = make_report(args.study_id, args.format, actor)
    except NotFound as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from core.imaging.storage import write_atomic

    for suffix, path in paths:
        data = report.files[suffix] if suffix else report.data
        write_atomic(path, data)
        print(f"wrote {path} ({len(data)} bytes)")
    print(f"{args.format} report of study {args.study_id} made in {report.ms:.0f} ms")
    return 0


__all__ = ["FORMATS", "register", "run", "targets"]
