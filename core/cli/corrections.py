"""``python -m core corrections export OUT_DIR --user USERNAME``: the reviewed studies as a training set.

Writes the export described in :mod:`core.review.export` (images, ``labels.csv``, a YOLO copy, ``manifest.json``)
into ``OUT_DIR``, which must not exist or be empty, as (and audited as) ``--user``, an active admin.
Prints a summary; exit status 0 when written, 1 when refused (a non-empty folder, no admin), 2 when the
user does not exist or no classifier is installed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``corrections`` command and its ``export`` action."""
    parser = subparsers.add_parser("corrections", help="doctors' corrections: export reviewed studies")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    export = actions.add_parser(
        "export", help="write the reviewed studies as a training set", description=__doc__
    )
    export.add_argument("out_dir", type=Path, metavar="OUT_DIR", help="a new (or empty) folder")
    export.add_argument(
        "--user", required=True, metavar="USERNAME", help="the admin account doing the export"
    )
    export.set_defaults(func=run_export)


def run_export(args: argparse.Namespace) -> int:
    """Export, then print what was written."""
    from core.auth import find_active_user
    from core.errors import AppError, NotFound, PermissionDenied
    from core.ml.registry import ModelNotAvailable
    from core.review.export import ExportError, export_reviewed

    try:
        actor = find_active_user(args.user)
        manifest = export_reviewed(args.out_dir, actor)
    except (NotFound, ModelNotAvailable) as exc:
        print(exc, file=sys.stderr)
        return 2
    except (ExportError, PermissionDenied) as exc:
        print(exc, file=sys.stderr)
        return 1
    except AppError as exc:  # any other refusal a person can act on
        print(exc, file=sys.stderr)
        return 1
    counts = manifest.document["counts"]
    print(f"Exported {counts['studies']} reviewed studies with {counts['boxes']} boxes to {manifest.out_dir}")
    for skipped in manifest.skipped:
        print(f"  left out study {skipped['study_id']}: {skipped['reason']}")
    return 0
