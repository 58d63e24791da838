"""Password hashing, login, lockout, audit of logins, user creation and session expiry."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from core import auth
from core.errors import AccountLocked, InvalidCredentials, NotFound, PermissionDenied, ValidationError
from db import models
from db.base import utcnow
from db.session import session_scope
from tests.support.db import PRODUCTION_PWD_CONTEXT, TEST_PASSWORD, TestAccount

MakeUser = Callable[..., TestAccount]


def _audit_actions(username: str) -> list[str]:
    with session_scope() as s:
        rows = s.query(models.AuditLog).filter_by(username=username).order_by(models.AuditLog.id).all()
        return [r.action for r in rows]


def test_hash_is_argon2id_and_verifies() -> None:
    hashed = auth.hash_password("a reasonably long secret")
    assert hashed.startswith("$argon2id$")
    assert "a reasonably long secret" not in hashed
    assert auth.verify_password("a reasonably long secret", hashed)
    assert not auth.verify_password("a reasonably long secreT", hashed)
    assert not auth.verify_password("anything", "not-a-hash")


def test_production_hashing_is_argon2id_with_owasp_level_cost() -> None:
    hashed = PRODUCTION_PWD_CONTEXT.hash("a reasonably long secret")
    assert hashed.startswith("$argon2id$v=19$m=65536,t=3,p=4$")
    assert PRODUCTION_PWD_CONTEXT.verify("a reasonably long secret", hashed)


def test_passwords_longer_than_72_bytes_are_not_truncated() -> None:
    # bcrypt would accept any password sharing the first 72 bytes; argon2 must not.
    base = "é" * 40  # 80 bytes in UTF-8
    hashed = auth.hash_password(base + "tail-1")
    assert auth.verify_password(base + "tail-1", hashed)
    assert not auth.verify_password(base + "tail-2", hashed)


def test_login_succeeds_case_insensitively_and_is_audited(make_user: MakeUser) -> None:
    account = make_user("Dr.Who", full_name="The Doctor")
    user = auth.authenticate("  DR.WHO ", account.password)
    assert user == auth.AuthenticatedUser(account.user.id, "dr.who", "The Doctor", "doctor")
    assert _audit_actions("dr.who")[-1] == "login"


def test_wrong_password_and_unknown_user_get_the_same_message(make_user: MakeUser) -> None:
    make_user("alice")
    with pytest.raises(InvalidCredentials) as wrong_password:
        auth.authenticate("alice", "not her password at all")
    with pytest.raises(InvalidCredentials) as unknown_user:
        auth.authenticate("mallory", "not her password at all")
    assert str(wrong_password.value) == str(unknown_user.value) == "Invalid username or password."
    assert "alice" not in str(wrong_password.value)
    assert _audit_actions("alice")[-1] == "login_failed"
    assert _audit_actions("mallory") == ["login_failed"]


def test_empty_and_absurd_inputs_are_invalid_credentials(make_user: MakeUser) -> None:
    make_user("bob")
    for username, password in [("", ""), ("bob", ""), ("x" * 500, "y"), ("bob'; DROP TABLE users;--", "z")]:
        with pytest.raises(InvalidCredentials):
            auth.authenticate(username, password)
    assert auth.authenticate("bob", TEST_PASSWORD).username == "bob"  # the table is still there


def test_lockout_after_configured_failures_then_unlock_after_time(
    make_user: MakeUser, configure: Callable[..., None]
) -> None:
    configure(lockout_attempts=3, lockout_minutes=10)
    account = make_user("carol")
    t0 = utcnow()
    for _ in range(2):
        with pytest.raises(InvalidCredentials):
            auth.authenticate("carol", "wrong password!", now=t0)
    with pytest.raises(AccountLocked) as locked:
        auth.authenticate("carol", "wrong password!", now=t0)
    assert locked.value.until == t0 + timedelta(minutes=10)
    # Issue 13: a locked account says what a wrong password says (no "locked until": it would tell anyone
    # trying names that this one exists).
    assert str(locked.value) == "Invalid username or password."

    # Even the right password is refused while locked...
    with pytest.raises(AccountLocked):
        auth.authenticate("carol", account.password, now=t0 + timedelta(minutes=9))
    # ...and accepted once the lock has expired, which also resets the counter.
    assert auth.authenticate("carol", account.password, now=t0 + timedelta(minutes=10, seconds=1))
    with pytest.raises(InvalidCredentials):
        auth.authenticate("carol", "wrong password!", now=t0 + timedelta(minutes=11))
    actions = _audit_actions("carol")
    assert actions.count("account_locked") == 1
    assert actions[-2:] == ["login", "login_failed"]


def test_default_lockout_is_five_attempts(make_user: MakeUser) -> None:
    make_user("dave")
    for _ in range(4):
        with pytest.raises(InvalidCredentials):
            auth.authenticate("dave", "wrong password!")
    with pytest.raises(AccountLocked):
        auth.authenticate("dave", "wrong password!")


def test_success_resets_failed_attempts(make_user: MakeUser, configure: Callable[..., None]) -> None:
    configure(lockout_attempts=2)
    account = make_user("erin")
    with pytest.raises(InvalidCredentials):
        auth.authenticate("erin", "wrong password!")
    auth.authenticate("erin", account.password)
    with pytest.raises(InvalidCredentials):  # would be AccountLocked without the reset
        auth.authenticate("erin", "wrong password!")


def test_deactivated_user_cannot_log_in(make_user: MakeUser) -> None:
    account = make_user("frank")
    with session_scope() as s:
        s.query(models.User).filter_by(username="frank").one().active = False
    with pytest.raises(InvalidCredentials):
        auth.authenticate("frank", account.password)
    with pytest.raises(NotFound):
        auth.load_user(account.user.id)


def test_login_rehashes_outdated_hash(make_user: MakeUser, monkeypatch: pytest.MonkeyPatch) -> None:
    account = make_user("gina")
    # Raise the cost parameters after the user was created: the next login must upgrade the stored hash.
    stronger = auth.pwd_context.copy(argon2__rounds=2)
    monkeypatch.setattr(auth, "pwd_context", stronger)
    auth.authenticate("gina", account.password)
    with session_scope() as s:
        new_hash = s.query(models.User).filter_by(username="gina").one().password_hash
    assert ",t=2," in new_hash and not stronger.needs_update(new_hash)
    assert auth.authenticate("gina", account.password).username == "gina"


@pytest.mark.usefixtures("database")
@pytest.mark.parametrize(
    ("username", "password", "role", "field"),
    [
        ("ab", "long enough password", "doctor", "username"),
        ("-bad", "long enough password", "doctor", "username"),
        ("has space", "long enough password", "doctor", "username"),
        ("x" * 33, "long enough password", "doctor", "username"),
        ("okname", "short", "doctor", "password"),
        ("okname", "okname", "doctor", "password"),
        ("okname", "x" * 1025, "doctor", "password"),
        ("okname", "long enough password", "superuser", "role"),
    ],
)
def test_create_user_validation(username: str, password: str, role: str, field: str) -> None:
    with pytest.raises(ValidationError) as err:
        auth.create_user(username, password, role=role)
    assert field in err.value.errors


def test_create_user_rejects_duplicates_case_insensitively(make_user: MakeUser) -> None:
    make_user("henry")
    with pytest.raises(ValidationError) as err:
        auth.create_user("HENRY", "another long password")
    assert "already taken" in err.value.errors["username"]


def test_only_admins_create_users_and_list_them(make_user: MakeUser) -> None:
    doctor = make_user("ivy").user
    admin = make_user("boss", role="admin").user
    with pytest.raises(PermissionDenied):
        auth.create_user("newdoc", "long enough password", actor=doctor)
    with pytest.raises(PermissionDenied):
        auth.list_users(doctor)
    created = auth.create_user("newdoc", "long enough password", actor=admin)
    assert created.role == "doctor"
    assert [u.username for u in auth.list_users(admin)] == ["boss", "ivy", "newdoc"]
    assert _audit_actions("boss") == ["user_created"]


def test_load_user_and_logout(make_user: MakeUser) -> None:
    user = make_user("jane").user
    assert auth.load_user(user.id) == user
    auth.logout(user, reason="session expired")
    assert _audit_actions("jane")[-1] == "logout"
    with pytest.raises(NotFound):
        auth.load_user(999_999)


def test_session_expiry_is_a_pure_function() -> None:
    start = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)
    assert not auth.session_expired(start, start + timedelta(minutes=30), idle_minutes=30)
    assert auth.session_expired(start, start + timedelta(minutes=30, seconds=1), idle_minutes=30)
    with pytest.raises(ValueError):
        auth.session_expired(start.replace(tzinfo=None), start, idle_minutes=30)


def test_session_expiry_default_comes_from_settings(configure: Callable[..., None]) -> None:
    configure(session_idle_minutes=5)
    start = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)
    assert auth.session_expired(start, start + timedelta(minutes=6))
    assert not auth.session_expired(start, start + timedelta(minutes=4))
