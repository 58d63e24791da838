"""Benchmark one diagnosis, upload bytes to saved record, and the diagnose CLI's batch throughput.

    .venv/bin/python scripts/bench_diagnose.py [--runs 40] [--batch 60] [--image assets/samples/00005869_001.png]
                                               [--database-url postgresql+psycopg://postgres@127.0.0.1:5432/test]

Single diagnosis: ``core.xray.diagnosis.diagnose_upload`` — the function the upload page calls — warm (models
loaded, three uploads done first), on a fresh migrated database (a temporary SQLite file, or a temporary
schema in the PostgreSQL database given, dropped afterwards) and a temporary data directory. Every run
uploads different bytes (the sample re-encoded with one pixel changed, prepared beforehand), so no run is
answered as a duplicate: each one reads, classifies, detects (when a detector is active), triages, renders,
writes the files with fsync and commits the rows. Prints median, p95 and the median of each stage.

Batch: ``python -m core diagnose FOLDER --json`` over ``--batch`` distinct 1024-px PNGs in a subprocess:
images/s over the whole command (process start and model loading included) and in steady state (between
the first and the last result line); then the same with ``--patient --user`` (each image saved).

Targets (issue 5): p50 <= 0.2 s, p95 <= 0.4 s, >= 20 images/s in batch, on 2 cores.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import date
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def variants(path: Path, count: int, start: int = 0) -> list[bytes]:
    """``count`` PNGs of the same film, each with one pixel changed (distinct sha256 for distinct ``i``)."""
    pixels = np.asarray(Image.open(path).convert("L"))
    out = []
    for i in range(start, start + count):
        copy = pixels.copy()
        copy[i // copy.shape[1] % copy.shape[0], i % copy.shape[1]] ^= 1
        buffer = io.BytesIO()
        Image.fromarray(copy).save(buffer, format="PNG")
        out.append(buffer.getvalue())
    return out


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.2f} (1 min) {five:.2f} (5 min) on {os.cpu_count()} CPUs"


def single(runs: int, image: Path) -> None:
    from core.auth import create_user
    from core.records import Demographics, create_patient
    from core.xray import diagnosis

    user = create_user("bench.doctor", "a long benchmark password", role="doctor", full_name="Benchmark")
    create_patient("BENCH-1", Demographics("Bench", "Mark", "unknown", date(1970, 1, 1)), user)
    uploads = variants(image, runs + 3)
    print(f"models: {diagnosis.warm_up()}")
    for data in uploads[:3]:  # warm-up
        diagnosis.diagnose_upload("BENCH-1", data, image.name, user)
    totals, stages = [], {}
    for data in uploads[3:]:
        t0 = time.perf_counter()
        view = diagnosis.diagnose_upload("BENCH-1", data, image.name, user)
        totals.append(time.perf_counter() - t0)
        assert not view.duplicate
        for stage, ms in view.timing_ms.items():
            stages.setdefault(stage, []).append(ms)
    print(f"single diagnosis, {Image.open(image).size[0]} px PNG, {runs} runs, upload bytes -> saved record:")
    print(f"  median {statistics.median(totals):.3f} s   p95 {pct(totals, 95):.3f} s   "
          f"mean {statistics.fmean(totals):.3f} s   max {max(totals):.3f} s")  # fmt: skip
    print(
        "  median per stage (ms): " + ", ".join(f"{k} {statistics.median(v):.1f}" for k, v in stages.items())
    )


def batch(count: int, image: Path, env: dict[str, str], save: bool, workers: int) -> None:
    with tempfile.TemporaryDirectory() as folder:
        # numbered after the single runs' images: every saved one is new, none answered as a duplicate
        for i, data in enumerate(variants(image, count, start=10_000 + 10_000 * save)):
            (Path(folder) / f"{i:04d}.png").write_bytes(data)
        command = [sys.executable, "-m", "core", "diagnose", folder, "--json", "--workers", str(workers)]
        if save:
            command += ["--patient", "BENCH-1", "--user", "bench.doctor"]
        t0 = time.perf_counter()
        stamps = []
        with subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True) as process:
            assert process.stdout is not None
            for line in process.stdout:
                if line.startswith("{"):
                    stamps.append(time.perf_counter())
        wall = time.perf_counter() - t0
    if len(stamps) != count or process.returncode != 0:
        raise SystemExit(f"the CLI returned {process.returncode} with {len(stamps)} of {count} results")
    steady = (len(stamps) - 1) / (stamps[-1] - stamps[0])
    what = "diagnose --patient (each saved)" if save else "diagnose FOLDER --json"
    what += f", {workers} worker{'s' if workers > 1 else ''}"
    print(f"batch {what}, {count} images: {count / wall:.1f} images/s whole command ({wall:.1f} s, start and "
          f"model load included), {steady:.1f} images/s steady state")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=40, help="timed single diagnoses (>= 30)")
    parser.add_argument("--batch", type=int, default=60, help="images in the CLI batch (0: skip)")
    parser.add_argument("--image", type=Path, default=ROOT / "assets" / "samples" / "00005869_001.png")
    parser.add_argument("--database-url", help="PostgreSQL URL (a temporary schema is used); default SQLite")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench_diagnose_") as var:
        schema = None
        url = f"sqlite:///{Path(var) / 'bench.db'}"
        if args.database_url:
            from sqlalchemy import create_engine, text
            from sqlalchemy.engine import make_url

            schema = f"bench_{uuid.uuid4().hex[:10]}"
            engine = create_engine(args.database_url)
            with engine.begin() as conn:
                conn.execute(text(f'CREATE SCHEMA "{schema}"'))
            engine.dispose()
            url = make_url(args.database_url).update_query_dict({"options": f"-csearch_path={schema}"})
            url = url.render_as_string(hide_password=False)
        os.environ.pop("DATABASE_URL", None)
        os.environ.update(CXR_DATABASE_URL=url, CXR_VAR_DIR=var)
        try:
            from db.migrate import upgrade

            upgrade(url=url)
            print(f"{load()}; database {url.split('://', 1)[0]}")
            single(max(1, args.runs), args.image)
            if args.batch:
                for workers in (1, 2):
                    batch(args.batch, args.image, dict(os.environ), save=False, workers=workers)
                batch(args.batch, args.image, dict(os.environ), save=True, workers=2)
            print(load())
        finally:
            from db.session import dispose_engines

            dispose_engines()
            if schema is not None:
                from sqlalchemy import create_engine, text

                engine = create_engine(args.database_url)
                with engine.begin() as conn:
                    conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
                engine.dispose()


if __name__ == "__main__":
    main()
