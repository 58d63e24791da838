"""Command line: create-user, seed, db (in-process, plus the `make run` steps as real subprocesses)."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import func, select

from core import auth
from core.__main__ import main
from core.config import PROJECT_ROOT
from core.errors import InvalidCredentials
from db import models
from db.session import session_scope


def _patients() -> int:
    with session_scope() as s:
        return s.scalar(select(func.count()).select_from(models.Patient)) or 0


@pytest.mark.usefixtures("database")
def test_create_user_reads_password_from_stdin(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO("a long admin password\n"))
    assert main(["create-user", "--username", "Chief", "--role", "admin", "--password-stdin"]) == 0
    assert "Created admin 'chief'" in capsys.readouterr().out
    user = auth.authenticate("chief", "a long admin password")
    assert user.role == "admin"


@pytest.mark.usefixtures("database")
def test_create_user_prompts_twice_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    answers = iter(["typed at the prompt", "typed at the prompt"])
    monkeypatch.setattr("getpass.getpass", lambda _prompt="": next(answers))
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    monkeypatch.setattr(sys.stdin, "isatty", lambda: True)
    assert main(["create-user", "--username", "doc"]) == 0
    assert auth.authenticate("doc", "typed at the prompt").role == "doctor"


@pytest.mark.usefixtures("database")
def test_create_user_refuses_mismatch_short_password_and_no_terminal(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    answers = iter(["first long password", "second long password"])
    monkeypatch.setattr("getpass.getpass", lambda _prompt="": next(answers))
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    monkeypatch.setattr(sys.stdin, "isatty", lambda: True)
    assert main(["create-user", "--username", "doc"]) == 1
    assert "differ" in capsys.readouterr().err

    monkeypatch.setattr(sys, "stdin", io.StringIO("short\n"))
    assert main(["create-user", "--username", "doc", "--password-stdin"]) == 1
    assert "at least 12" in capsys.readouterr().err

    monkeypatch.setattr(sys, "stdin", io.StringIO(""))  # not a terminal, no --password-stdin
    assert main(["create-user", "--username", "doc"]) == 1
    with pytest.raises(InvalidCredentials):
        auth.authenticate("doc", "first long password")


@pytest.mark.usefixtures("database")
def test_seed_creates_patients_and_prints_fresh_passwords_once(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["seed", "--patients", "12"]) == 0
    out = capsys.readouterr().out
    passwords = dict(re.findall(r"account '(\w+)'\s+password: (\S+)", out))
    assert set(passwords) == {"demo", "admin"}
    assert passwords["demo"] != passwords["admin"] and len(passwords["demo"]) >= 12
    assert auth.authenticate("demo", passwords["demo"]).role == "doctor"
    assert auth.authenticate("admin", passwords["admin"]).role == "admin"
    assert _patients() == 12
    with session_scope() as s:
        stored = s.scalars(select(models.User.password_hash)).all()
        assert all(h.startswith("$argon2id$") for h in stored)
        assert s.scalar(select(func.count()).select_from(models.Visit))  # history came with them
        assert s.scalar(select(func.count()).select_from(models.Allergy))

    # --if-empty leaves a populated database alone and prints no password.
    assert main(["seed", "--if-empty"]) == 0
    out = capsys.readouterr().out
    assert "Nothing seeded" in out and "password" not in out
    assert _patients() == 12
    # Without --if-empty it refuses rather than colliding with existing IDs.
    assert main(["seed"]) == 1
    assert _patients() == 12


@pytest.mark.usefixtures("database")
def test_seed_keeps_existing_accounts(capsys: pytest.CaptureFixture[str]) -> None:
    auth.create_user("admin", "the real chief password", role="admin")
    assert main(["seed", "--patients", "3"]) == 0
    out = capsys.readouterr().out
    assert "'admin' already exists" in out
    assert auth.authenticate("admin", "the real chief password").role == "admin"


@pytest.mark.usefixtures("database")
def test_seed_is_deterministic() -> None:
    from core.records.demo_data import synthetic_patients

    first = [p.patient_id + p.family_name for p in synthetic_patients(20)]
    assert first == [p.patient_id + p.family_name for p in synthetic_patients(20)]
    assert len(set(first)) == 20


def test_make_run_steps_work_on_a_fresh_sqlite_file(tmp_path: Path) -> None:
    """`python -m core db upgrade` then `seed --if-empty` twice, as `make run` does, in real processes."""
    env = {**os.environ, "CXR_DATABASE_URL": f"sqlite:///{tmp_path / 'run.db'}", "CXR_VAR_DIR": str(tmp_path)}
    env.pop("DATABASE_URL", None)

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "core", *args],
            cwd=PROJECT_ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )

    up = cli("db", "upgrade")
    assert up.returncode == 0, up.stderr
    assert "(head)" in cli("db", "current").stdout  # migrated to the newest revision
    first = cli("seed", "--if-empty")
    assert first.returncode == 0, first.stderr
    assert "Seeded 50 synthetic patients" in first.stdout and "account 'demo'" in first.stdout
    second = cli("seed", "--if-empty")
    assert second.returncode == 0 and "Nothing seeded" in second.stdout
    down = cli("db", "downgrade", "base")
    assert down.returncode == 0, down.stderr
    assert "0001" not in cli("db", "current").stdout


def test_seed_without_migrations_says_what_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    from core.config import get_settings

    monkeypatch.setenv("CXR_DATABASE_URL", f"sqlite:///{tmp_path / 'empty.db'}")
    get_settings.cache_clear()
    try:
        assert main(["seed"]) == 1
        assert "python -m core db upgrade" in capsys.readouterr().err
    finally:
        get_settings.cache_clear()
