"""Server-side web sessions (core.web_sessions) on both databases: create, validate, idle expiry, logout,
revocation by an administrator and from the command line, a tampered token, one-time cookie codes, and the
cookie route's redirect rules (serve.py)."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from collections.abc import Callable
from datetime import timedelta

import pytest

from core import web_sessions
from core.auth import AuthenticatedUser
from core.errors import NotFound, PermissionDenied
from db import models
from db.base import utcnow
from db.session import session_scope
from tests.support.db import TestAccount


def _rows(user_id: int) -> list[models.WebSession]:
    with session_scope() as s:
        rows = s.query(models.WebSession).filter_by(user_id=user_id).order_by(models.WebSession.id).all()
        s.expunge_all()
        return rows


def _logouts(username: str) -> list[str]:
    with session_scope() as s:
        rows = (
            s.query(models.AuditLog)
            .filter_by(action="logout", entity_type="user")
            .order_by(models.AuditLog.id)
            .all()
        )
        return [f"{r.username}: {r.detail}" for r in rows if username in (r.username + r.detail)]


def test_create_stores_only_the_hash_and_validates(doctor: AuthenticatedUser) -> None:
    token = web_sessions.create(doctor, client="web:10.0.0.7")
    assert len(token) >= 43
    [row] = _rows(doctor.id)
    assert row.token_hash == hashlib.sha256(token.encode()).hexdigest()
    assert token not in (row.token_hash, row.client)
    assert row.client == "web:10.0.0.7"
    assert row.revoked_at is None and row.expires_at - row.created_at == web_sessions.MAX_AGE
    assert web_sessions.validate(token) == doctor
    assert web_sessions.create(doctor) != token  # random per login


def test_tampered_unknown_and_empty_tokens_open_nothing(doctor: AuthenticatedUser) -> None:
    token = web_sessions.create(doctor)
    flipped = token[:-1] + ("A" if token[-1] != "A" else "B")
    for bad in (flipped, token[:-1], token + "x", "", None, "x" * 500, token.upper()):
        assert web_sessions.validate(bad) is None
    assert web_sessions.validate(token) == doctor  # still fine


def test_idle_expiry_revokes_and_audits_once(
    doctor: AuthenticatedUser, configure: Callable[..., None]
) -> None:
    configure(session_idle_minutes=15)
    start = utcnow()
    token = web_sessions.create(doctor, now=start)
    # Activity keeps it alive past 15 minutes in total...
    assert web_sessions.validate(token, now=start + timedelta(minutes=10)) == doctor
    assert web_sessions.validate(token, now=start + timedelta(minutes=24)) == doctor
    # ...a look that is not activity (the idle watcher) does not
    assert web_sessions.validate(token, now=start + timedelta(minutes=38), touch=False) == doctor
    assert web_sessions.validate(token, now=start + timedelta(minutes=39, seconds=1)) is None
    assert web_sessions.validate(token, now=start + timedelta(minutes=40)) is None
    [row] = _rows(doctor.id)
    assert row.revoked_at is not None
    assert _logouts(doctor.username) == [f"{doctor.username}: session expired"]


def test_maximum_age_ends_even_an_active_session(doctor: AuthenticatedUser) -> None:
    start = utcnow()
    token = web_sessions.create(doctor, now=start)
    moment = start
    while moment < start + web_sessions.MAX_AGE - timedelta(minutes=10):
        moment += timedelta(minutes=10)
        assert web_sessions.validate(token, now=moment) == doctor
    assert web_sessions.validate(token, now=start + web_sessions.MAX_AGE) is None


def test_logout_ends_only_that_session(doctor: AuthenticatedUser) -> None:
    first, second = web_sessions.create(doctor), web_sessions.create(doctor)
    assert web_sessions.end(first) is True
    assert web_sessions.validate(first) is None
    assert web_sessions.validate(second) == doctor
    assert web_sessions.end(first) is False  # already over: not audited twice
    assert _logouts(doctor.username) == [f"{doctor.username}: logout"]


def test_deactivated_account_opens_nothing(doctor: AuthenticatedUser, admin: AuthenticatedUser) -> None:
    from core import accounts

    token = web_sessions.create(doctor)
    accounts.deactivate(doctor.username, admin)
    assert web_sessions.validate(token) is None


def test_admin_signs_a_user_out_everywhere(
    doctor: AuthenticatedUser, admin: AuthenticatedUser, make_user: Callable[..., TestAccount]
) -> None:
    other = make_user("dr.other").user
    tokens = [web_sessions.create(doctor) for _ in range(3)]
    theirs = web_sessions.create(other)
    web_sessions.end(tokens[0])
    assert web_sessions.live_count(doctor.username) == 2
    with pytest.raises(PermissionDenied):
        web_sessions.revoke_user(doctor.username, doctor)
    assert web_sessions.revoke_user(f"  {doctor.username.upper()} ", admin) == 2
    assert all(web_sessions.validate(t) is None for t in tokens)
    assert web_sessions.validate(theirs) == other
    assert web_sessions.live_count(doctor.username) == 0
    assert any(
        "signed out everywhere by an administrator (2 session(s)" in line
        for line in _logouts(doctor.username)
    )
    with pytest.raises(NotFound):
        web_sessions.revoke_user("nobody.here", admin)


def test_revoke_sessions_command(doctor: AuthenticatedUser) -> None:
    token = web_sessions.create(doctor)
    done = subprocess.run(
        [sys.executable, "-m", "core", "users", "revoke-sessions", doctor.username],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "1 session(s) signed out" in done.stdout
    assert web_sessions.validate(token) is None
    missing = subprocess.run(
        [sys.executable, "-m", "core", "users", "revoke-sessions", "nobody.here"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert missing.returncode == 2


def test_one_time_codes_are_single_use_and_expire(monkeypatch: pytest.MonkeyPatch) -> None:
    code = web_sessions.issue_code("the-token")
    assert web_sessions.redeem_code(code + "x") is None
    assert web_sessions.redeem_code(code) == "the-token"
    assert web_sessions.redeem_code(code) is None  # used
    stale = web_sessions.issue_code("old-token")
    clock = web_sessions.time.monotonic() + web_sessions.CODE_TTL + 1
    monkeypatch.setattr(web_sessions.time, "monotonic", lambda: clock)
    assert web_sessions.redeem_code(stale) is None
    assert web_sessions.redeem_code(None) is None


def test_cookie_route_never_redirects_off_site() -> None:
    from serve import _safe_next

    assert _safe_next("/x-ray?patient=ED-1&study=2") == "/x-ray?patient=ED-1&study=2"
    for bad in ("https://evil.example/", "//evil.example/x", "/\\evil.example", "evil", "", None):
        assert _safe_next(bad) == "/"
