"""Load test: N processes x T threads saving films and notes into one database and one data directory.

    .venv/bin/python scripts/load_test.py                              # SQLite and PostgreSQL, 4 x 4 = 16-way
    .venv/bin/python scripts/load_test.py --db sqlite --procs 8 --threads 2 --rounds 6

Each process is what a dashboard replica or a CLI import is: its own engine, models and file store, sharing
the database and ``CXR_DATA_DIR`` with the others. Every thread repeats, ``--rounds`` times: upload a film of
its own (new bytes), upload a film that every other worker uploads too, into a patient of its own (the same
content-addressed files, saved concurrently by everyone: the race of issue 13), add a visit with a note, and
read the patient's history. Then the script checks, from the database and the disk: every upload that
answered "saved" is a study, every visit that answered "saved" is a row (lost writes = answered saved, not
found), and every path any row refers to is a file. It prints throughput, p50/p95 latency per operation and
the errors by kind. Goal: 0 errors and 0 lost writes at 16-way on both databases.

A fresh SQLite file / PostgreSQL schema and data directory are made for each run and removed after it.
"""

from __future__ import annotations

import argparse
import io
import multiprocessing as mp
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SAMPLE = ROOT / "assets" / "samples" / "routine" / "00001996_010.png"
POSTGRES = os.environ.get("CXR_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def film(seed: int) -> bytes:
    """The sample film with its first four corner pixels set from ``seed``: the same picture, new bytes."""
    import numpy as np
    from PIL import Image

    pixels = np.asarray(Image.open(SAMPLE).convert("L")).copy()
    pixels[0, :4] = np.frombuffer(int(seed).to_bytes(4, "little"), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG", compress_level=1)
    return out.getvalue()


def _worker(proc: int, threads: int, rounds: int, shared: bytes, results: mp.Queue) -> None:  # type: ignore[type-arg]
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from core.auth import find_active_user
    from core.records import VisitInput, add_visit
    from core.xray import diagnosis

    actor = find_active_user("load.test")
    diagnosis.warm_up()
    rows: list[tuple[str, str, float, str, str]] = []  # (op, outcome, ms, key, error kind)
    lock = threading.Lock()

    def run(thread: int) -> None:
        patient = f"ED-L{proc:02d}{thread:02d}"
        for r in range(rounds):
            own = film(10_000 * proc + 100 * thread + r)
            for op, data in (("upload_own", own), ("upload_shared", shared)):
                t0 = time.perf_counter()
                try:
                    view = diagnosis.diagnose_upload(patient, data, f"{op}-{r}.png", actor)
                    outcome, key = ("duplicate" if view.duplicate else "saved"), f"{patient}:{view.study_id}"
                    kind = ""
                except Exception as exc:  # counted, never hidden
                    outcome, key, kind = "error", "", type(exc).__name__
                with lock:
                    rows.append((op, outcome, (time.perf_counter() - t0) * 1e3, key, kind))
            t0 = time.perf_counter()
            note = f"load {proc}-{thread}-{r} {uuid.uuid4().hex[:8]}"
            try:
                add_visit(patient, VisitInput(date.today(), note, ""), actor)
                outcome, kind = "saved", ""
            except Exception as exc:
                outcome, kind = "error", type(exc).__name__
            with lock:
                rows.append(("visit", outcome, (time.perf_counter() - t0) * 1e3, f"{patient}:{note}", kind))
            t0 = time.perf_counter()
            try:
                diagnosis.patient_history(patient)
                outcome, kind = "ok", ""
            except Exception as exc:
                outcome, kind = "error", type(exc).__name__
            with lock:
                rows.append(("history", outcome, (time.perf_counter() - t0) * 1e3, patient, kind))

    pool = [threading.Thread(target=run, args=(t,)) for t in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    results.put(rows)


def _prepare(url: str, procs: int, threads: int) -> None:
    from core.auth import create_user
    from core.records import Demographics, create_patient
    from db.migrate import upgrade

    upgrade(url=url)
    actor = create_user("load.test", "load test password 2026!", role="doctor", full_name="Load Test")
    for p in range(procs):
        for t in range(threads):
            create_patient(
                f"ED-L{p:02d}{t:02d}",
                Demographics(
                    given_name=f"T{t}", family_name=f"LOAD{p}", sex="female", date_of_birth=date(1970, 1, 1)
                ),
                actor,
            )


def _verify(rows: list[tuple[str, str, float, str, str]]) -> dict[str, int]:
    from sqlalchemy import select

    from core.imaging import storage
    from db import models
    from db import repository as repo
    from db.session import session_scope

    with session_scope() as s:
        studies = {
            f"{pid}:{sid}"
            for pid, sid in s.execute(
                select(models.Patient.patient_id, models.Study.id).join(
                    models.Patient, models.Patient.id == models.Study.patient_pk
                )
            )
        }
        visits = {
            f"{pid}:{reason}"
            for pid, reason in s.execute(
                select(models.Patient.patient_id, models.Visit.reason).join(
                    models.Patient, models.Patient.id == models.Visit.patient_pk
                )
            )
        }
        paths = repo.stored_paths(s)
    store = storage.FileStore()
    saved_uploads = {k for op, outcome, _, k, _ in rows if op.startswith("upload") and outcome != "error"}
    saved_visits = {k for op, outcome, _, k, _ in rows if op == "visit" and outcome == "saved"}
    return {
        "lost_studies": len(saved_uploads - studies),
        "lost_visits": len(saved_visits - visits),
        "missing_files": sum(not store.exists(p) for p in paths),
        "studies": len(studies),
        "visits": len(visits),
    }


def run_once(backend: str, procs: int, threads: int, rounds: int) -> dict[str, object]:
    workdir = Path(tempfile.mkdtemp(prefix="cxr-load-"))
    schema = None
    if backend == "sqlite":
        url = f"sqlite:///{workdir / 'cxr.db'}"
    else:
        from sqlalchemy import create_engine, text
        from sqlalchemy.engine import make_url

        schema = f"cxr_load_{uuid.uuid4().hex[:10]}"
        engine = create_engine(POSTGRES)
        with engine.begin() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
        engine.dispose()
        url = (
            make_url(POSTGRES)
            .update_query_dict({"options": f"-csearch_path={schema}"})
            .render_as_string(False)
        )
    os.environ.update(CXR_DATABASE_URL=url, CXR_VAR_DIR=str(workdir))
    from core.config import get_settings
    from db.session import dispose_engines

    get_settings.cache_clear()
    dispose_engines()
    try:
        _prepare(url, procs, threads)
        dispose_engines()  # the workers are forked: each opens its own connections
        shared = film(2**31 - 1)  # no worker seed (10000 * proc + 100 * thread + round) reaches it
        ctx = mp.get_context("fork")
        queue: mp.Queue = ctx.Queue()  # type: ignore[type-arg]
        t0 = time.perf_counter()
        workers = [
            ctx.Process(target=_worker, args=(p, threads, rounds, shared, queue)) for p in range(procs)
        ]
        for w in workers:
            w.start()
        rows: list[tuple[str, str, float, str, str]] = []
        for _ in workers:
            rows.extend(queue.get())
        for w in workers:
            w.join()
        wall = time.perf_counter() - t0
        checks = _verify(rows)
    finally:
        dispose_engines()
        if schema is not None:
            from sqlalchemy import create_engine, text

            engine = create_engine(POSTGRES)
            with engine.begin() as conn:
                conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
            engine.dispose()
        shutil.rmtree(workdir, ignore_errors=True)
    latency = {}
    for op in ("upload_own", "upload_shared", "visit", "history"):
        ms = sorted(r[2] for r in rows if r[0] == op and r[1] != "error")
        if ms:
            latency[op] = (statistics.median(ms), ms[min(len(ms) - 1, int(0.95 * len(ms)))])
    return {
        "backend": backend,
        "ways": procs * threads,
        "operations": len(rows),
        "wall_s": wall,
        "ops_per_s": len(rows) / wall,
        "errors": Counter(f"{r[0]}:{r[4]}" for r in rows if r[1] == "error"),
        "outcomes": Counter(f"{r[0]}:{r[1]}" for r in rows),
        "latency_ms": latency,
        **checks,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", choices=("sqlite", "postgresql", "both"), default="both")
    parser.add_argument("--procs", type=int, default=4)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    failed = False
    for backend in ("sqlite", "postgresql") if args.db == "both" else (args.db,):
        r = run_once(backend, args.procs, args.threads, args.rounds)
        print(
            f"{r['backend']}: {r['ways']}-way ({args.procs} processes x {args.threads} threads, {args.rounds} "
            f"rounds): {r['operations']} operations in {r['wall_s']:.1f} s ({r['ops_per_s']:.1f}/s)"
        )
        for op, (p50, p95) in r["latency_ms"].items():  # type: ignore[attr-defined]
            print(f"  {op:<14} p50 {p50:7.0f} ms  p95 {p95:7.0f} ms")
        print(f"  outcomes: {dict(sorted(r['outcomes'].items()))}")  # type: ignore[attr-defined]
        print(f"  errors: {dict(r['errors']) or 0}")
        print(
            f"  lost writes: {r['lost_studies']} studies, {r['lost_visits']} visits; rows pointing at missing "
            f"files: {r['missing_files']} (studies {r['studies']}, visits {r['visits']})"
        )
        failed |= bool(r["errors"]) or bool(r["lost_studies"] or r["lost_visits"] or r["missing_files"])
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
