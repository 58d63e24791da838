"""Benchmark the PACS import: time from a film stored to the PACS (STOW-RS) to its read saved in the record.

    .venv/bin/python scripts/bench_pacs.py [--runs 10]

Starts a throwaway Orthanc (Debian's, as the tests do), a temporary SQLite database and data directory, one
patient; then ``--runs`` times: STOW one new film of that patient (the DICOM sample with fresh UIDs), run
``core.pacs.sync.sync`` (what ``python -m core pacs sync`` does: QIDO list, WADO retrieve, analyse and save,
SR + secondary capture back by STOW). Prints the median and p95 of STOW -> read saved and sent back.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _film(patient_id: str) -> bytes:
    import pydicom
    from pydicom.uid import generate_uid

    ds = pydicom.dcmread(ROOT / "assets" / "samples" / "nih_dx_chest_nofinding_1024.dcm")
    ds.PatientID = patient_id
    ds.PatientName, ds.PatientSex, ds.PatientBirthDate = "LOVELACE^ADA", "F", "19600517"  # ED-1 as registered
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="cxr-bench-pacs-"))
    os.environ.update(CXR_VAR_DIR=str(workdir), CXR_DATABASE_URL=f"sqlite:///{workdir / 'cxr.db'}")

    from tests.support.orthanc import start_orthanc

    orthanc = start_orthanc(workdir / "orthanc")
    os.environ["CXR_PACS_URL"] = orthanc.dicomweb
    try:
        from core.auth import create_user
        from core.pacs.client import DicomWebClient
        from core.pacs.sync import sync
        from core.records import Demographics, create_patient
        from db.migrate import upgrade

        upgrade()
        user = create_user("bench", "orthanc timing run 7 z", role="doctor", full_name="Bench")
        create_patient("ED-1", Demographics("Ada", "Lovelace", "female", date(1960, 5, 17)), user)
        client = DicomWebClient(orthanc.dicomweb)
        client.store([_film("ED-1")])
        sync(user)  # warm: models loaded, first import
        whole, send = [], []
        for _ in range(args.runs):
            t0 = time.perf_counter()
            client.store([_film("ED-1")])
            report = sync(user)
            assert len(report.imported) == 1 and not report.error, report
            whole.append(time.perf_counter() - t0)
            send.append(report.send_seconds)
        for name, values in (("STOW -> read saved and sent back", whole), ("of which the send back", send)):
            values.sort()
            p95 = values[min(len(values) - 1, int(0.95 * len(values)))]
            print(f"{name}: median {statistics.median(values):.3f} s, p95 {p95:.3f} s (N={len(values)})")
    finally:
        orthanc.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
