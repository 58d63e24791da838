"""Peak memory of reading the worst files an upload can hold, one fresh process per file (issue 13, item 1).

    .venv/bin/python scripts/measure_memory.py [--pipeline] [--json]

Each file of ``tests.support.hostile.big_files()`` (a 7000 x 7000 RGB PNG of about 160 KB, the same as a
16-bit PNG and as a JPEG, a 50 MB 16-bit DICOM with a rescale and a window, a 7000 x 7000 JPEG 2000 DICOM, a
PNG whose header claims 7000 x 7000 but holds almost nothing) is written to a temporary folder, then read by
``core.imaging.read_chest_xray`` in a subprocess of its own, which prints its peak resident set size
(``resource.getrusage(RUSAGE_SELF).ru_maxrss``) before and after the read. ``--pipeline`` reads through
``core.ml.inference.analyze`` instead (the classifier and detector loaded first, as in the dashboard), so the
figure is what one upload costs a serving process. The goal: every file under 500 MB.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

LIMIT_MB = 500

WRITE = "import sys; from pathlib import Path; from tests.support.hostile import write_big_files; " + (
    "write_big_files(Path(sys.argv[1]))"
)

# Run in the child: load what a serving process has loaded, note the peak, read the file, note the peak.
CHILD = r"""
import json, resource, sys, time
pipeline = sys.argv[2] == "1"
from core import imaging
if pipeline:
    from core.ml import inference
    classifier = inference.get_classifier()
    detector = inference.get_detector() if inference.detector_configured() else None
def peak_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kilobytes on Linux
data = open(sys.argv[1], "rb").read()
before = peak_mb()
t0 = time.perf_counter()
try:
    if pipeline:
        image = inference.analyze(data, sys.argv[1], classifier=classifier, detector=detector).image
    else:
        image = imaging.read_chest_xray(data, sys.argv[1])
    outcome = f"accepted {image.shape[1]} x {image.shape[0]}"
except imaging.ImageRejected as exc:
    outcome = f"refused: {exc.code}"
print(json.dumps({"baseline_mb": before, "peak_mb": peak_mb(), "outcome": outcome,
                  "seconds": time.perf_counter() - t0}))
"""


def measure(path: Path, pipeline: bool) -> dict:
    """The child's report for one file (peak RSS in MB, outcome, seconds)."""
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(path), "1" if pipeline else "0"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        return {"error": done.stderr.strip().splitlines()[-1:] or [f"exit {done.returncode}"]}
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--pipeline", action="store_true", help="read through inference.analyze (models loaded)"
    )
    parser.add_argument("--json", action="store_true", help="one JSON object per file")
    args = parser.parse_args()

    worst = 0.0
    with tempfile.TemporaryDirectory(prefix="cxr-memory-") as tmp:
        # Written by a child: a process's peak RSS carries over to what it forks, so this one stays small.
        subprocess.run(
            [sys.executable, "-c", WRITE, tmp],
            cwd=ROOT,
            check=True,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        for path in sorted(Path(tmp).iterdir()):
            name, size = path.name, path.stat().st_size
            row = {"file": name, "bytes": size, **measure(path, args.pipeline)}
            worst = max(worst, float(row.get("peak_mb", 0.0)))
            if args.json:
                print(json.dumps(row), flush=True)
            elif "error" in row:
                print(f"{name:<30} {size / 1024:>9.0f} KB  ERROR {row['error']}", flush=True)
            else:
                print(
                    f"{name:<30} {size / 1024:>9.0f} KB  peak {row['peak_mb']:>6.0f} MB "
                    f"(baseline {row['baseline_mb']:.0f} MB)  {row['seconds']:.2f} s  {row['outcome']}",
                    flush=True,
                )
    print(f"worst peak RSS {worst:.0f} MB (goal: under {LIMIT_MB} MB)")
    return 0 if worst < LIMIT_MB else 1


if __name__ == "__main__":
    sys.exit(main())
