"""``python -m core storage gc`` as an operator runs it, on both databases: a dry run lists and removes
nothing; a real run removes the unreferenced film file and the interrupted write, keeps every file a study
refers to and files younger than ``--older-than``, prints what it did and writes one ``storage_gc`` audit row.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import select

from core.auth import AuthenticatedUser
from core.config import get_settings
from core.imaging import storage
from core.records import PatientRecord
from core.xray import diagnosis as dx
from db import models
from db import repository as repo
from db.session import session_scope
from tests.support.xray_samples import PNG

ROOT = Path(__file__).resolve().parents[1]


def storage_gc(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "core", "storage", "gc", *args],
        cwd=ROOT,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
        capture_output=True,
        text=True,
        timeout=120,
    )


def gc_audit_rows() -> list[dict[str, object]]:
    with session_scope() as s:
        rows = s.scalars(select(models.AuditLog).where(models.AuditLog.action == "storage_gc")).all()
        return [dict(row.after or {}) for row in rows]


def test_storage_gc_removes_only_old_unreferenced_files_and_is_audited(
    make_patient: Callable[..., PatientRecord], doctor: AuthenticatedUser
) -> None:
    make_patient("ED-GC")
    dx.diagnose_upload("ED-GC", PNG.read_bytes(), PNG.name, doctor)
    store = storage.FileStore(get_settings().data_dir)
    with session_scope() as s:
        referenced = repo.stored_paths(s)
    assert referenced and all(store.exists(p) for p in referenced)

    orphan = store.put(b"a film whose save was killed", storage.ORIGINALS, ".png").relpath
    interrupted = store.root / storage.RENDERS / f"{storage.TMP_PREFIX}0123abcd"
    interrupted.write_bytes(b"half a preview")
    tmp_relpath = interrupted.relative_to(store.root).as_posix()

    young = storage_gc()  # default: older than 60 minutes; everything here is seconds old
    assert young.returncode == 0, young.stderr
    assert "removed 0 unreferenced file(s) and 0 interrupted write(s)" in young.stdout
    assert store.exists(orphan) and interrupted.exists() and gc_audit_rows() == []

    dry = storage_gc("--older-than", "0", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert f"would remove {orphan}" in dry.stdout and f"would remove {tmp_relpath}" in dry.stdout
    assert store.exists(orphan) and interrupted.exists() and gc_audit_rows() == []

    done = storage_gc("--older-than", "0")
    assert done.returncode == 0, done.stderr
    assert f"removed {orphan}" in done.stdout and f"removed {tmp_relpath}" in done.stdout
    assert "removed 1 unreferenced file(s) and 1 interrupted write(s)" in done.stdout
    assert not store.exists(orphan) and not interrupted.exists()
    assert all(store.exists(p) for p in referenced)  # every file a study refers to is still there
    [row] = gc_audit_rows()
    assert row["removed"] == 1 and row["temporary"] == 1 and int(str(row["bytes"])) > 0

    again = storage_gc("--older-than", "0")
    assert "removed 0 unreferenced file(s) and 0 interrupted write(s)" in again.stdout
    assert len(gc_audit_rows()) == 1  # nothing done, nothing audited


def test_storage_gc_refuses_a_negative_age() -> None:
    done = storage_gc("--older-than", "-5")
    assert done.returncode == 2 and "--older-than must be 0 or more minutes" in done.stdout
