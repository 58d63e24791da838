"""Benchmark the film's report: PDF, FHIR and DICOM SR (+ secondary capture) generation time per film.

    .venv/bin/python scripts/bench_report.py [--runs 20] [--image assets/samples/00005869_001.png]

On a fresh temporary SQLite database and data directory: one patient, one visit, one film uploaded through
``diagnose_upload`` and reviewed by a doctor, then ``core.handoff.export.make_report`` (what the result
page's download buttons and ``python -m core report`` call) timed ``--runs`` times per format, after one warm
run. Each timing is gather + format + audit row; ``dicom-sr`` builds both DICOM files (the SR and the
secondary capture of the film with its boxes) and their ZIP. Prints the median and p95 per format and the size.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--image", type=Path, default=ROOT / "assets" / "samples" / "00005869_001.png")
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="cxr-bench-report-"))
    os.environ.update(CXR_VAR_DIR=str(workdir), CXR_DATABASE_URL=f"sqlite:///{workdir / 'cxr.db'}")

    from core.auth import create_user
    from core.handoff.export import make_report
    from core.records import Demographics, VisitInput, add_visit, create_patient
    from core.review import corrections as cx
    from core.xray import diagnosis
    from db.migrate import upgrade

    upgrade()
    doctor = create_user("bench.report", "bench report password 2026!", role="doctor", full_name="Dr Bench")
    create_patient("ED-9001", Demographics("Zoë", "Ångström", "female", date(1958, 3, 9)), doctor)
    visit = add_visit("ED-9001", VisitInput(date.today(), "Dyspnoea", ""), doctor)
    view = diagnosis.diagnose_upload(
        "ED-9001", args.image.read_bytes(), args.image.name, doctor, visit_id=visit.id
    )
    state = cx.get_editor_state(view.study_id, doctor, audit=False)
    cx.save_correction(
        view.study_id, dict(state.labels), (), "Agree.", state.study_version, doctor, sign=True
    )
    for fmt in ("pdf", "fhir", "dicom-sr"):
        make_report(view.study_id, fmt, doctor)  # warm
        times, size = [], 0
        for _ in range(args.runs):
            t0 = time.perf_counter()
            size = len(make_report(view.study_id, fmt, doctor).data)
            times.append((time.perf_counter() - t0) * 1e3)
        times.sort()
        p95 = times[min(len(times) - 1, int(0.95 * len(times)))]
        print(
            f"{fmt}: median {statistics.median(times):.0f} ms, p95 {p95:.0f} ms over {args.runs} runs; {size} bytes"
        )
    print(f"film {args.image.name} ({view.width} x {view.height}); load average {os.getloadavg()[0]:.2f}")
    shutil.rmtree(workdir, ignore_errors=True)  # the throwaway database and films
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
