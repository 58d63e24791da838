"""scripts/load_test.py itself, at a small size: it runs on each database, finds no errors and no lost writes,
and prints the figures the README quotes (the 16-way figures are measured by running the script by hand)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_the_load_script_runs_and_finds_no_lost_writes(backend: str) -> None:
    if backend == "postgresql" and os.environ.get("CXR_TEST_POSTGRES") == "0":
        pytest.skip("CXR_TEST_POSTGRES=0")
    args = ["--db", backend, "--procs", "2", "--threads", "2", "--rounds", "1"]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run(
        [sys.executable, "scripts/load_test.py", *args], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert f"{backend}: 4-way (2 processes x 2 threads, 1 rounds): 16 operations" in out, out
    assert "errors: 0" in out and "lost writes: 0 studies, 0 visits" in out and "missing files: 0" in out
    for op in ("upload_own", "upload_shared", "visit", "history"):
        assert f"  {op}" in out and "p95" in out
