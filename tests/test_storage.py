"""Content-addressed, atomically written study files (core/imaging/storage.py)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from core.imaging import storage
from core.imaging.storage import FileStore, StorageError, staged


def _files(root: Path) -> list[str]:
    # locks/ holds the lock files of the store (made once, empty, never removed)
    return sorted(
        str(p.relative_to(root))
        for p in root.rglob("*")
        if p.is_file() and p.relative_to(root).parts[0] != "locks"
    )


def test_put_stores_by_content_and_reuses_identical_files(tmp_path: Path) -> None:
    store = FileStore(tmp_path)
    digest = hashlib.sha256(b"x-ray").hexdigest()
    first = store.put(b"x-ray", storage.ORIGINALS, ".png")
    assert first.relpath == f"originals/{digest[:2]}/{digest[2:]}.png" and first.created
    assert store.absolute(first.relpath).read_bytes() == b"x-ray"
    again = store.put(b"x-ray", storage.ORIGINALS, ".png")
    assert again.relpath == first.relpath and not again.created
    assert _files(tmp_path) == [first.relpath]  # no temporary file left behind


def test_failed_write_leaves_no_temporary_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken_fsync(_fd: int) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(storage.os, "fsync", broken_fsync)
    with pytest.raises(OSError, match="disk full"):
        storage.write_atomic(tmp_path / "a" / "b.bin", b"data")
    assert _files(tmp_path) == []


@pytest.mark.parametrize("bad", ["../outside.png", "/etc/passwd", "originals/../../x", "."])
def test_paths_outside_the_data_directory_are_refused(tmp_path: Path, bad: str) -> None:
    with pytest.raises(StorageError):
        FileStore(tmp_path / "data").absolute(bad)


def test_staged_files_remove_only_what_they_created(tmp_path: Path) -> None:
    store = FileStore(tmp_path)
    existing = store.put(b"another study's image", storage.ORIGINALS, ".png").relpath
    with pytest.raises(RuntimeError), staged(store) as files:
        files.put(b"another study's image", storage.ORIGINALS, ".png")
        new = files.put(b"preview", storage.RENDERS, ".jpg")
        assert store.exists(new)
        raise RuntimeError("the transaction failed")
    assert _files(tmp_path) == [existing]


def test_a_created_file_that_a_saved_row_now_references_is_kept(tmp_path: Path) -> None:
    store = FileStore(tmp_path)
    with pytest.raises(RuntimeError), staged(store, still_needed=lambda rel: rel.endswith(".png")) as files:
        kept = files.put(b"image", storage.ORIGINALS, ".png")
        files.put(b"preview", storage.RENDERS, ".jpg")
        raise RuntimeError("boom")
    assert _files(tmp_path) == [kept]


def test_cached_renders_once(tmp_path: Path) -> None:
    store = FileStore(tmp_path)
    calls: list[int] = []

    def render() -> bytes:
        calls.append(1)
        return b"rendered"

    path = store.cached("cache/heat/1/Nodule.jpg", render)
    assert store.cached("cache/heat/1/Nodule.jpg", render) == path
    assert path.read_bytes() == b"rendered" and len(calls) == 1
    with pytest.raises(StorageError):
        store.cached("originals/ab/x.png", render)
