"""Faults, injected for real where the machine allows: another process holding a film's files, kill -9 in the
middle of a save, a full disk and a read-only data folder (tiny tmpfs mounts), a database that is down or
locked; in the browser's page code and in the command line. Each case checks that nothing half-saved remains,
that what was saved before is intact, and that the person sees one plain sentence and no traceback.
"""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from datetime import date
from pathlib import Path

import pytest
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.exc import OperationalError
from streamlit.testing.v1 import AppTest

from core import failures
from core.auth import AuthenticatedUser
from core.config import get_settings
from core.imaging import storage
from core.records import PatientRecord, VisitInput, add_visit
from core.xray import diagnosis as dx
from db import models
from db import repository as repo
from db.locks import AdvisoryLocks, host_locks
from db.session import dispose_engines, get_engine, session_scope
from tests.support.apptest import APP, TIMEOUT, login, texts
from tests.support.db import (
    TestAccount,
    TestDatabase,
    create_postgres_schema,
    drop_postgres_schema,
)
from tests.support.xray_samples import PNG, PNGS, png_variant
from ui.session import RECORD_KEYS

ROOT = Path(__file__).resolve().parents[1]
CLOSED_PORT_URL = "postgresql+psycopg://postgres@127.0.0.1:1/test"


class Boom(RuntimeError):
    """The injected failure."""


def counts() -> tuple[int, int]:
    with session_scope() as s:
        return (
            s.scalar(select(func.count()).select_from(models.Study)) or 0,
            s.scalar(select(func.count()).select_from(models.Diagnosis)) or 0,
        )


def film_files(root: Path) -> list[str]:
    """Stored films and renders (not the store's lock files)."""
    if not root.exists():
        return []
    return sorted(
        p.relative_to(root).as_posix()
        for p in root.rglob("*")
        if p.is_file() and p.relative_to(root).parts[0] != storage.LOCKS
    )


def references_resolve() -> None:
    """Every path a saved row refers to is a file on disk."""
    store = storage.FileStore()
    with session_scope() as s:
        missing = [p for p in repo.stored_paths(s) if not store.exists(p)]
    assert missing == []


def gc(older_than: float = 0.0) -> storage.Collected:
    def referenced() -> set[str]:
        with session_scope() as s:
            return repo.stored_paths(s)

    def is_referenced(relpath: str) -> bool:
        with session_scope() as s:
            return repo.stored_path_in_use(s, relpath)

    return storage.collect_garbage(storage.FileStore(), referenced, is_referenced, older_than)


# ------------------------------------------------------------------ two processes, one film

HOLDER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from core.imaging import storage

    store = storage.FileStore(Path(sys.argv[1]))
    with storage.staged(store) as files:
        relpath = files.put(Path(sys.argv[2]).read_bytes(), storage.ORIGINALS, ".png")
        print("holding", relpath, flush=True)
        sys.stdin.readline()  # the test says when this save "commits"
        print("exists" if store.exists(relpath) else "missing", flush=True)
    """
)


def test_a_failed_save_never_removes_a_file_that_another_process_is_saving(tmp_path: Path) -> None:
    """Process A writes a film's file; process B reuses it for its own save; A's insert fails and A cleans up:
    the file must still be there when B commits (before the cross-process locks it was deleted)."""
    store = storage.FileStore(tmp_path / "data")
    sample = PNGS[0]
    holder: subprocess.Popen[str] | None = None
    with pytest.raises(Boom), storage.staged(store, still_needed=lambda _relpath: False) as files:
        relpath = files.put(sample.read_bytes(), storage.ORIGINALS, ".png")
        assert files.created == [relpath]
        holder = subprocess.Popen(
            [sys.executable, "-c", HOLDER, str(store.root), str(sample)],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert holder.stdout is not None and holder.stdout.readline().split() == ["holding", relpath]
        raise Boom  # A's transaction fails after B took the file
    assert holder is not None and holder.stdin is not None and holder.stdout is not None
    assert store.exists(relpath)
    holder.stdin.write("\n")
    holder.stdin.flush()
    assert holder.stdout.readline().strip() == "exists"
    assert holder.wait(timeout=60) == 0

    # Nobody references it now: the collector removes it (with nobody holding it, A's cleanup would have).
    done = storage.collect_garbage(store, set, lambda _relpath: False, older_than_minutes=0)
    assert done.removed == (relpath,) and not store.exists(relpath)


def test_the_collector_keeps_referenced_young_and_busy_files(tmp_path: Path) -> None:
    store = storage.FileStore(tmp_path / "data")
    keep = store.put(b"referenced", storage.RENDERS, ".jpg").relpath
    orphan = store.put(b"orphan", storage.RENDERS, ".jpg").relpath
    busy = store.put(b"busy", storage.RENDERS, ".jpg").relpath
    tmp = store.root / storage.RENDERS / f"{storage.TMP_PREFIX}deadbeef"
    tmp.write_bytes(b"half a file")
    with storage.FileLocks(store) as other:  # another save holds `busy`
        other.share(busy)
        young = storage.collect_garbage(store, lambda: {keep}, lambda r: r == keep, older_than_minutes=60)
        assert young.removed == () and young.kept_young == 4
        dry = storage.collect_garbage(store, lambda: {keep}, lambda r: r == keep, 0, dry_run=True)
        assert set(dry.removed) == {orphan} and dry.kept_busy in (0, 1) and store.exists(orphan)
        done = storage.collect_garbage(store, lambda: {keep}, lambda r: r == keep, older_than_minutes=0)
    assert done.removed == (orphan,) and done.temporary == (f"{storage.RENDERS}/{tmp.name}",)
    assert store.exists(keep) and store.exists(busy) and not tmp.exists()


def test_a_save_on_another_host_keeps_its_files_through_the_database_lock(
    tmp_path: Path, database: TestDatabase
) -> None:
    """A second host shares the database but not this host's ``flock``s (a share with local-only locks):
    with PostgreSQL its advisory lock alone must stop a failed save and the collector from removing a file
    it is about to reference. SQLite has no second host (its file cannot be shared), so no such lock."""
    if database.backend == "sqlite":
        assert host_locks() is None
        pytest.skip("SQLite: every writer is on one host; flock covers it (tested above)")
    store = storage.FileStore(tmp_path / "data")
    other_host = AdvisoryLocks()
    try:
        with pytest.raises(Boom), storage.staged(store, lambda _r: False, remote=host_locks) as files:
            relpath = files.put(PNGS[0].read_bytes(), storage.ORIGINALS, ".png")
            other_host.share(relpath)  # the other host's save reuses the file
            raise Boom
        assert store.exists(relpath)
        busy = storage.collect_garbage(store, set, lambda _r: False, 0, remote=host_locks)
        assert busy.removed == () and busy.kept_busy == 1 and store.exists(relpath)
    finally:
        other_host.release()
    done = storage.collect_garbage(store, set, lambda _r: False, 0, remote=host_locks)
    assert done.removed == (relpath,) and not store.exists(relpath)


def test_installations_in_two_schemas_of_one_database_never_share_a_file_lock(
    tmp_path: Path, database: TestDatabase
) -> None:
    """Advisory locks are per database, not per schema: two installations in two schemas of one PostgreSQL
    database (parallel test workers, a staging copy) have two data directories, so a save in the other schema
    holding the same stored path must not keep this installation's failed save from removing its file."""
    if database.backend == "sqlite":
        pytest.skip("SQLite: no advisory locks")
    schema, other_url = create_postgres_schema("cxr_other")
    store = storage.FileStore(tmp_path / "data")
    other_installation = AdvisoryLocks(other_url)
    try:
        with pytest.raises(Boom), storage.staged(store, lambda _r: False, remote=host_locks) as files:
            relpath = files.put(PNGS[0].read_bytes(), storage.ORIGINALS, ".png")
            other_installation.share(relpath)  # same path, other schema: another installation's file
            raise Boom
        assert not store.exists(relpath)
        holder, prober = AdvisoryLocks(), AdvisoryLocks()  # the same schema still contends (the test above)
        try:
            holder.share(relpath)
            assert not prober.try_exclusive(relpath)
        finally:
            holder.release()
            prober.release()
    finally:
        other_installation.release()
        get_engine(other_url).dispose()
        drop_postgres_schema(schema)


# ------------------------------------------------------------------ kill -9 in the middle of a save

KILLED_MID_SAVE = textwrap.dedent(
    """
    import sys, time
    from core.auth import find_active_user
    from core.xray import diagnosis
    from db import repository as repo

    def stuck(*args, **kwargs):  # the files are written, the rows not yet
        print("files written", flush=True)
        time.sleep(600)

    repo.add_study = stuck
    actor = find_active_user(sys.argv[3])
    diagnosis.diagnose_upload(sys.argv[1], open(sys.argv[2], "rb").read(), "film.png", actor)
    """
)


def test_kill_9_between_files_and_rows_leaves_nothing_referenced_and_gc_cleans_up(
    make_patient: Callable[..., PatientRecord],
    make_user: Callable[..., TestAccount],
    doctor: AuthenticatedUser,
) -> None:
    make_patient("ED-KILL")
    account = make_user("crash.test")
    proc = subprocess.Popen(
        [sys.executable, "-c", KILLED_MID_SAVE, "ED-KILL", str(PNG), account.username],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
        env=os.environ.copy(),
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "files written"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)

    root = get_settings().data_dir
    assert counts() == (0, 0)
    orphans = film_files(root)
    assert orphans, "the killed save had written its files"
    references_resolve()
    done = gc()
    assert sorted(done.removed) == orphans and film_files(root) == []

    view = dx.diagnose_upload("ED-KILL", PNG.read_bytes(), PNG.name, doctor)  # the film can be saved again
    assert counts() == (1, 1) and not view.duplicate
    references_resolve()


# ------------------------------------------------------------------ full disk, read-only disk


@pytest.mark.parametrize(
    ("code", "expected"),
    [(errno.ENOSPC, "the server's disk is full"), (errno.EROFS, "the server's data folder is read-only")],
    ids=["ENOSPC", "EROFS"],
)
def test_a_write_failing_midway_through_a_save_removes_what_it_wrote_and_keeps_what_was_there(
    code: int,
    expected: str,
    monkeypatch: pytest.MonkeyPatch,
    make_patient: Callable[..., PatientRecord],
    doctor: AuthenticatedUser,
) -> None:
    """The disk fills up (or turns read-only) after the film and its preview were written: the save fails
    with that error, writes no row, removes the files it wrote, and leaves an earlier study intact."""
    make_patient("ED-EARLIER")
    make_patient("ED-FULL")
    earlier, film = [p for p in PNGS if p != PNG][:2]
    dx.diagnose_upload("ED-EARLIER", earlier.read_bytes(), earlier.name, doctor)
    root = get_settings().data_dir
    before = film_files(root)
    written: list[Path] = []
    real_write = storage.write_atomic

    def write_until_the_disk_fails(path: Path, data: bytes) -> None:
        if len(written) == 2:
            raise OSError(code, os.strerror(code), str(path))
        real_write(path, data)
        written.append(path)

    monkeypatch.setattr(storage, "write_atomic", write_until_the_disk_fails)
    with pytest.raises(OSError) as caught:
        dx.diagnose_upload("ED-FULL", film.read_bytes(), film.name, doctor)
    assert len(written) == 2 and failures.reason(caught.value) == expected
    assert counts() == (1, 1)
    assert film_files(root) == before  # the two new files are gone, the earlier study's are all there
    references_resolve()


@pytest.fixture
def mount_tmpfs(tmp_path: Path) -> Iterator[Callable[[str], Path]]:
    """``mount("size=64k")``: a fresh tmpfs under tmp_path (needs root; skips with the reason otherwise)."""
    mounted: list[Path] = []

    def mount(options: str) -> Path:
        point = tmp_path / f"disk{len(mounted)}"
        point.mkdir()
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(point)], capture_output=True, text=True
        )
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip() or 'mount failed'}): needs root")
        mounted.append(point)
        return point

    yield mount
    for point in mounted:
        subprocess.run(["umount", "-l", str(point)], check=False)


@pytest.mark.parametrize(
    ("options", "expected"),
    [("size=96k", "the server's disk is full"), ("size=1m,ro", "the server's data folder is read-only")],
    ids=["disk-full", "read-only"],
)
def test_a_save_on_a_full_or_read_only_disk_saves_nothing_and_says_why(
    options: str,
    expected: str,
    mount_tmpfs: Callable[[str], Path],
    configure: Callable[..., None],
    make_patient: Callable[..., PatientRecord],
    doctor: AuthenticatedUser,
) -> None:
    make_patient("ED-DISK")
    disk = mount_tmpfs(options)
    configure(data_dir=disk)
    with pytest.raises(OSError) as caught:
        dx.diagnose_upload("ED-DISK", PNG.read_bytes(), PNG.name, doctor)
    assert failures.reason(caught.value) == expected
    message = failures.describe(caught.value, "The X-ray could not be saved")
    assert message is not None and "Nothing was saved" in message and str(disk) not in message
    assert counts() == (0, 0)
    assert [p for p in film_files(disk) if not Path(p).name.startswith(storage.TMP_PREFIX)] == []


def test_the_cli_reports_a_full_disk_per_file_and_goes_on(
    mount_tmpfs: Callable[[str], Path],
    make_patient: Callable[..., PatientRecord],
    make_user: Callable[..., TestAccount],
) -> None:
    make_patient("ED-CLI")
    account = make_user("import.test")
    disk = mount_tmpfs("size=96k")
    env = {**os.environ, "CXR_DATA_DIR": str(disk), "TF_CPP_MIN_LOG_LEVEL": "3"}
    args = [sys.executable, "-m", "core", "diagnose", str(PNGS[0]), str(PNGS[1]), "--patient", "ED-CLI"]
    done = subprocess.run(
        [*args, "--user", account.username], cwd=ROOT, env=env, capture_output=True, text=True
    )
    lines = done.stdout.strip().splitlines()
    assert done.returncode == 1, done.stderr
    assert len(lines) == 2 and all(
        "refused (storage): Not saved: the server's disk is full" in x for x in lines
    )
    assert "Traceback" not in done.stderr + done.stdout
    assert counts() == (0, 0)


# ------------------------------------------------------------------ the database down or locked


def test_the_cli_says_the_database_is_down_and_exits_2(tmp_path: Path) -> None:
    env = {**os.environ, "CXR_DATABASE_URL": CLOSED_PORT_URL, "CXR_VAR_DIR": str(tmp_path)}
    args = [sys.executable, "-m", "core", "diagnose", str(PNG), "--patient", "ED-1", "--user", "nobody"]
    done = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1].startswith("error: the database cannot be reached.")
    assert "Traceback" not in done.stderr and "127.0.0.1" not in done.stderr and "SELECT" not in done.stderr


def test_a_locked_sqlite_database_fails_plainly_and_leaks_no_typed_text(
    make_patient: Callable[..., PatientRecord],
    doctor: AuthenticatedUser,
    caplog: pytest.LogCaptureFixture,
) -> None:
    url = get_settings().sqlalchemy_url
    if not url.startswith("sqlite"):
        pytest.skip("PostgreSQL has row locks, not a whole-database lock; its down case is tested above")
    make_patient("ED-LOCK")
    secret = "Confidential: patient disclosed HIV status"
    other = create_engine(url)
    with other.connect() as conn:
        conn.exec_driver_sql("BEGIN EXCLUSIVE")
        with pytest.raises(OperationalError) as caught:
            add_visit("ED-LOCK", VisitInput(date.today(), secret, ""), doctor)
        conn.exec_driver_sql("ROLLBACK")
    other.dispose()
    assert failures.reason(caught.value) == "the database is busy (another program holds a lock on it)"
    assert secret not in str(caught.value) and secret not in caplog.text
    add_visit("ED-LOCK", VisitInput(date.today(), "Cough", ""), doctor)  # once the lock is gone, it saves


# ------------------------------------------------------------------ the dashboard


def test_the_dashboard_says_the_database_is_down_without_a_traceback(configure: Callable[..., None]) -> None:
    configure(database_url=CLOSED_PORT_URL)
    dispose_engines()
    at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    assert not at.exception
    [error] = [e.value for e in at.error]
    assert error.startswith("The patient database cannot be reached (the database cannot be reached)")
    assert "127.0.0.1" not in error and "psycopg" not in error


def test_a_bug_in_a_page_is_a_sentence_with_a_reference_not_a_traceback(
    monkeypatch: pytest.MonkeyPatch, make_user: Callable[..., TestAccount]
) -> None:
    account = make_user("bug.test")
    at = login(account)
    monkeypatch.setenv("CXR_RERAISE_ERRORS", "0")

    def broken(_query: str) -> list[object]:
        raise KeyError("/srv/cxr/secret/path.py line 12")

    monkeypatch.setattr("ui.session.search_patients", broken)
    at.text_input(key="search_query").set_value("ED-1")
    at.button(key="FormSubmitter:patient_search-Search").click().run()
    assert not at.exception
    [error] = [e.value for e in at.error]
    assert error.startswith("Something went wrong on the server (reference ")
    assert "/srv/cxr" not in error


def test_a_full_disk_while_saving_from_a_page_is_a_plain_sentence(
    monkeypatch: pytest.MonkeyPatch, make_user: Callable[..., TestAccount]
) -> None:
    account = make_user("disk.test")
    at = login(account)

    def full(_query: str) -> list[object]:
        raise OSError(28, "No space left on device", "/var/lib/cxr/data/originals/ab/cd.png")

    monkeypatch.setattr("ui.session.search_patients", full)
    at.text_input(key="search_query").set_value("ED-1")
    at.button(key="FormSubmitter:patient_search-Search").click().run()
    assert not at.exception
    [error] = [e.value for e in at.error]
    assert "the server's disk is full. Nothing was saved." in error and "/var/lib" not in error


@pytest.mark.usefixtures("database")
def test_sqlalchemy_errors_carry_no_parameters() -> None:
    from db.session import get_engine

    engine = get_engine()
    with pytest.raises(Exception) as caught, engine.connect() as conn:
        conn.execute(text("SELECT * FROM no_such_table WHERE x = :secret"), {"secret": "Top secret note"})
    assert "Top secret note" not in str(caught.value)


# ------------------------------------------------------------------ two processes, one film, the whole save path

RACER = textwrap.dedent(
    """
    import sys
    from sqlalchemy.exc import OperationalError
    from core.auth import find_active_user
    from core.xray import diagnosis
    from db import repository as repo

    patient, film, user, role, mode = sys.argv[1:6]
    add_study = repo.add_study

    def insert(*args, **kwargs):  # the film's files are written or reused; the rows come now
        if mode == "steered":
            print("in insert", flush=True)
            sys.stdin.readline()  # the test says when to go on
        if role == "fail":
            raise OperationalError("INSERT INTO studies", {}, Exception("database is locked"))
        return add_study(*args, **kwargs)

    repo.add_study = insert
    actor = find_active_user(user)
    try:
        view = diagnosis.diagnose_upload(patient, open(film, "rb").read(), "film.png", actor)
    except OperationalError:
        print("failed", flush=True)
        sys.exit(3)
    print("saved", view.study_id, flush=True)
    """
)


def _racer(role: str, patient: str, film: Path, user: str, mode: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", RACER, patient, str(film), user, role, mode],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )


def _said(proc: subprocess.Popen[str]) -> str:
    assert proc.stdout is not None
    return proc.stdout.readline().strip()


def _go(proc: subprocess.Popen[str]) -> None:
    assert proc.stdin is not None
    proc.stdin.write("\n")
    proc.stdin.flush()


@pytest.mark.slow
def test_two_processes_saving_one_film_while_one_insert_fails_never_lose_its_files(
    tmp_path: Path, make_patient: Callable[..., PatientRecord], make_user: Callable[..., TestAccount]
) -> None:
    """The reproduction of issue 13 item 2 through the real save path: process F writes a film's files and
    its insert fails; process S uploads the same film (another patient: the same content-addressed files) and
    commits. Round 1 is steered into the bad order (S reuses F's files, F fails and cleans up, then S
    commits); rounds 2-4 run both at once, unsteered. After each: S's study is saved, every path a row refers
    to is a file, and the garbage collector then finds nothing of S's to remove."""
    account = make_user("race.test")
    for n in range(1, 5):
        make_patient(f"ED-F{n}")
        make_patient(f"ED-S{n}")
        film = tmp_path / f"film{n}.png"
        film.write_bytes(png_variant(1000 + n))  # a new film each round: nothing to reuse from before
        if n == 1:
            failing = _racer("fail", "ED-F1", film, account.username, "steered")
            assert _said(failing) == "in insert"  # F's files are written
            saving = _racer("save", "ED-S1", film, account.username, "steered")
            assert _said(saving) == "in insert"  # S reused them (same sha256, same paths)
            _go(failing)
            assert _said(failing) == "failed" and failing.wait(timeout=120) == 3
            _go(saving)
        else:
            failing = _racer("fail", f"ED-F{n}", film, account.username, "free")
            saving = _racer("save", f"ED-S{n}", film, account.username, "free")
            assert _said(failing) == "failed" and failing.wait(timeout=120) == 3
        said = _said(saving).split()
        assert said[0] == "saved" and saving.wait(timeout=120) == 0
        references_resolve()
        with session_scope() as s:
            study = s.get(models.Study, int(said[1]))
            assert study is not None and study.file_path
            mine = {study.file_path, study.preview_path, study.thumbnail_path}
        assert not mine & set(gc().removed)
        references_resolve()
    assert counts() == (4, 4)


# ------------------------------------------------------------------ a full disk, injected (any machine)


def test_an_injected_full_disk_on_the_second_file_removes_the_first_and_the_temporary_one(
    monkeypatch: pytest.MonkeyPatch,
    make_patient: Callable[..., PatientRecord],
    doctor: AuthenticatedUser,
) -> None:
    """ENOSPC raised by fsync (where network and quota file systems report it) while the preview is being
    written, after the original was stored: both are gone, no ``.tmp-`` file stays, no row was written, and
    the person is told the disk is full. Runs where a tmpfs cannot be mounted, too."""
    make_patient("ED-ENOSPC")
    real_fsync = os.fsync
    written: list[int] = []

    def fsync(fd: int) -> None:
        if os.path.isdir(f"/proc/self/fd/{fd}") or not written:  # the folder, or the first (original) file
            written.append(fd)
            return real_fsync(fd)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(storage.os, "fsync", fsync)
    with pytest.raises(OSError) as caught:
        dx.diagnose_upload("ED-ENOSPC", PNG.read_bytes(), PNG.name, doctor)
    monkeypatch.undo()
    assert failures.reason(caught.value) == "the server's disk is full"
    assert written, "the original was written before the disk filled up"
    assert counts() == (0, 0) and film_files(get_settings().data_dir) == []


# ------------------------------------------------------------------ the page keeps what was typed


def test_a_locked_database_on_the_record_page_is_a_sentence_and_keeps_the_typed_visit(
    make_patient: Callable[..., PatientRecord], make_user: Callable[..., TestAccount]
) -> None:
    url = get_settings().sqlalchemy_url
    if not url.startswith("sqlite"):
        pytest.skip("PostgreSQL has row locks, not a whole-database lock")
    make_patient("ED-TYPED")
    at = login(make_user("typed.test"))
    at.text_input(key="search_query").set_value("ED-TYPED")
    at.button(key="FormSubmitter:patient_search-Search").click().run()
    at.button(key="open.ED-TYPED").click().run()
    assert not at.exception, at.exception
    form = f"{RECORD_KEYS}visit.add"
    reason_key, notes_key = f"{form}.reason", f"{form}.notes"
    secret = "Patient disclosed HIV status; partner not informed"
    at.text_input(key=reason_key).set_value("Chest pain")
    at.text_area(key=notes_key).set_value(secret)
    other = create_engine(url)
    with other.connect() as conn:
        conn.exec_driver_sql("BEGIN EXCLUSIVE")
        at.button(key=f"FormSubmitter:{form}.form-Add visit").click().run()
        conn.exec_driver_sql("ROLLBACK")
    other.dispose()
    assert not at.exception, at.exception
    shown = " ".join(e.value for e in at.error)
    assert "the database is busy" in shown and "Nothing was saved" in shown, shown
    assert secret not in shown and "INSERT" not in shown and "Traceback" not in shown
    assert at.text_input(key=reason_key).value == "Chest pain"  # what the doctor typed is still there
    assert at.text_area(key=notes_key).value == secret


VISIT_FORM = f"{RECORD_KEYS}visit.add"
VISIT_REASON = f"{VISIT_FORM}.reason"


def _open_record(at: AppTest, patient_id: str) -> AppTest:
    at.text_input(key="search_query").set_value(patient_id)
    at.button(key="FormSubmitter:patient_search-Search").click().run()
    at.button(key=f"open.{patient_id}").click().run()
    assert not at.exception, at.exception
    return at


def _add_visit(at: AppTest, reason: str) -> AppTest:
    at.text_input(key=VISIT_REASON).set_value(reason)
    at.button(key=f"FormSubmitter:{VISIT_FORM}.form-Add visit").click().run()
    return at


def test_the_database_going_down_at_submit_shows_a_sentence_and_keeps_the_typed_text(
    make_patient: Callable[..., PatientRecord],
    make_user: Callable[..., TestAccount],
    configure: Callable[..., None],
) -> None:
    make_patient("ED-PAGE-DOWN")
    at = _open_record(login(make_user("down.page")), "ED-PAGE-DOWN")
    working = get_settings().database_url
    typed = "Chest pain at rest, 20 minutes"
    configure(database_url=CLOSED_PORT_URL)
    dispose_engines()
    _add_visit(at, typed)
    assert not at.exception
    [error] = [e.value for e in at.error]
    assert error.startswith("The patient database cannot be reached") and "127.0.0.1" not in error

    configure(database_url=working)  # back up: the form is drawn again with the text in it
    dispose_engines()
    at.run()
    assert not at.exception, at.exception
    assert at.text_input(key=VISIT_REASON).value == typed
    at.button(key=f"FormSubmitter:{VISIT_FORM}.form-Add visit").click().run()
    assert not at.exception and "Visit added." in texts(at)


def test_a_visit_typed_while_the_database_was_down_never_reaches_another_patient(
    make_patient: Callable[..., PatientRecord],
    make_user: Callable[..., TestAccount],
    configure: Callable[..., None],
) -> None:
    """The kept values belong to the patient they were typed for: opening another record starts empty."""
    make_patient("ED-PAGE-ONE")
    make_patient("ED-PAGE-TWO")
    at = _open_record(login(make_user("two.patients")), "ED-PAGE-ONE")
    working = get_settings().database_url
    configure(database_url=CLOSED_PORT_URL)
    dispose_engines()
    _add_visit(at, "Typed for patient one")
    assert [e.value for e in at.error][0].startswith("The patient database cannot be reached")
    configure(database_url=working)
    dispose_engines()
    at.run()
    assert at.text_input(key=VISIT_REASON).value == "Typed for patient one"
    at.query_params["patient"] = "ED-PAGE-TWO"  # the doctor opens the next patient (a link to the record)
    at.run()
    assert not at.exception, at.exception
    assert "ED-PAGE-TWO" in texts(at)
    assert at.text_input(key=VISIT_REASON).value == ""
