"""Driving ``app.py`` in-process through Streamlit's AppTest: start it, log in, read what the page shows."""

from __future__ import annotations

from pathlib import Path

from streamlit.testing.v1 import AppTest

from tests.support.db import TestAccount
from ui import session

ROOT = Path(__file__).resolve().parents[2]
APP = ROOT / "app.py"
TIMEOUT = 30  # seconds per script run: generous, the machine is shared with training jobs


def start() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    assert not at.exception, at.exception
    return at


def submit_login(at: AppTest, username: str, password: str) -> AppTest:
    username_box, password_box = _login_inputs(at)
    username_box.set_value(username)
    password_box.set_value(password)
    at.button(key="FormSubmitter:login-Log in").click().run()
    assert not at.exception, at.exception
    return at


def _login_inputs(at: AppTest) -> tuple:  # type: ignore[type-arg]
    boxes = {box.label: box for box in at.text_input}
    return boxes["Username"], boxes["Password"]


def login(account: TestAccount) -> AppTest:
    at = submit_login(start(), account.username, account.password)
    assert session.USER in at.session_state, texts(at)
    return at


def texts(at: AppTest) -> str:
    """Everything a user could read on the page, as one string for ``in`` checks."""
    parts: list[str] = []
    for kind in ("title", "markdown", "caption", "error", "warning", "info", "success"):
        parts.extend(str(element.value) for element in getattr(at, kind))
    return "\n".join(parts)


def shows_login_form(at: AppTest) -> bool:
    return {"Username", "Password"} <= {box.label for box in at.text_input}
