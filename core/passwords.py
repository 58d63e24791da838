"""The password policy: what a new password must be (accounts created, reset by an admin, or changed).

At least ``MIN_PASSWORD_LENGTH`` characters (and at most ``MAX_PASSWORD_LENGTH``, so that no login makes the
server hash megabytes); not only whitespace; not one character or one short pattern repeated
("aaaaaaaaaaaa", "abcabcabcabc"); not containing the username; and not a common password, also when digits,
spaces or symbols are added before or after it ("password1234", "Welcome2024!"). The common passwords are
``core/data/common_passwords.txt`` (its header names the source), shipped with the code: nothing is downloaded.

NIST SP 800-63B's advice, which this follows: length and a block-list rather than composition rules
(no "one capital, one digit, one symbol").
"""

from __future__ import annotations

import string
from functools import cache
from pathlib import Path

__all__ = ["MAX_PASSWORD_LENGTH", "MIN_PASSWORD_LENGTH", "common_passwords", "password_problem"]

MIN_PASSWORD_LENGTH = 12
# argon2 has no length limit of its own; this only stops someone from making every login hash megabytes.
MAX_PASSWORD_LENGTH = 1024
_MIN_DISTINCT = 4  # fewer different characters than this is a pattern, not a password

COMMON_PASSWORDS_FILE = Path(__file__).resolve().parent / "data" / "common_passwords.txt"
_PADDING = string.digits + string.punctuation + string.whitespace


@cache
def common_passwords() -> frozenset[str]:
    """The block-list, lower case."""
    lines = COMMON_PASSWORDS_FILE.read_text(encoding="utf-8").splitlines()
    return frozenset(line.strip().lower() for line in lines if line.strip() and not line.startswith("#"))


def _repeats_a_pattern(text: str) -> bool:
    n = len(text)
    return any(n % size == 0 and text == text[:size] * (n // size) for size in range(1, n // 2 + 1))


def password_problem(password: str, username: str = "") -> str | None:
    """Why ``password`` may not be used by ``username``, as a sentence for the form; ``None`` when it may."""
    if len(password) < MIN_PASSWORD_LENGTH:
        return f"Password must be at least {MIN_PASSWORD_LENGTH} characters."
    if len(password) > MAX_PASSWORD_LENGTH:
        return f"Password must be at most {MAX_PASSWORD_LENGTH} characters."
    if not password.strip():
        return "Password must not be only spaces."
    lowered = password.casefold()
    if len(set(lowered)) < _MIN_DISTINCT or _repeats_a_pattern(lowered):
        return "Password must not be one character or a short pattern repeated."
    name = (username or "").strip().casefold()
    if name and name in lowered:
        return "Password must not contain the username."
    common = common_passwords()
    core = lowered.strip(_PADDING)
    squeezed = "".join(lowered.split())
    if lowered in common or squeezed in common or not core or core in common or _repeats_a_pattern(core):
        return "This password is too common or too easy to guess: choose a longer phrase of your own."
    return None
