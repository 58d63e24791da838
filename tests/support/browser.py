"""What the real-browser tests share: a `streamlit run` server on a free port and a Debian chromium page."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"  # Debian's; Playwright never downloads a browser here
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
STEP_MS = 60_000  # generous: two cores are shared with training jobs (load average 7 measured)


@dataclass(frozen=True)
class Server:
    """A running throwaway dashboard: its URL and the environment it was started with."""

    url: str
    env: dict[str, str]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_healthy(url: str, process: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"streamlit exited with {process.returncode} before becoming healthy")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"streamlit at {url} not healthy after {timeout} s")


@contextmanager
def running_streamlit(env: Mapping[str, str], log_path: Path) -> Iterator[str]:
    """`streamlit run serve.py` (app.py behind the session-cookie routes) with ``env``; yields its URL once
    healthy and always stops it."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "streamlit", "run", "serve.py", "--server.headless", "true"]
    command += [
        "--server.port",
        str(port),
        "--server.address",
        "127.0.0.1",
        "--browser.gatherUsageStats",
        "false",
    ]
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, cwd=ROOT, env=dict(env), stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_healthy(url, process)
            yield url
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@contextmanager
def chromium_page(width: int = 1400, height: int = 1000) -> Iterator[object]:
    """A fresh Playwright page in Debian's chromium."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport={"width": width, "height": height})
            context.set_default_timeout(
                STEP_MS
            )  # actions too, not only expect(): a loaded CI machine is slow
            yield context.new_page()
        finally:
            browser.close()


def choose_option(page, combobox, option: str, attempts: int = 3) -> None:  # type: ignore[no-untyped-def]
    """Pick ``option`` in a Streamlit selectbox.

    The dropdown is a popover that a rerun arriving at the same moment can close again before the option is
    clicked (seen once in CI), so open it again until the option shows, a bounded number of times.
    """
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    wanted = page.get_by_role("option", name=option, exact=True)
    for attempt in range(attempts):
        combobox.click()
        try:
            wanted.wait_for(state="visible", timeout=STEP_MS // 4)
        except PlaywrightTimeout:
            if attempt == attempts - 1:
                raise
            page.keyboard.press("Escape")
            continue
        wanted.click()
        return


def throwaway_env(var_dir: Path) -> dict[str, str]:
    """This process's environment pointed at a SQLite database and data directory under ``var_dir``
    (skips the test when Debian's chromium is not installed)."""
    import pytest

    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} not installed (`make test` installs Debian's chromium)")
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{var_dir / 'cxr.db'}", "CXR_VAR_DIR": str(var_dir)}
    env.pop("CXR_DATABASE_URL", None)  # it would win over DATABASE_URL
    return env


class Environment:
    """Point this process's settings at the server's database and data directory for a block."""

    KEYS = ("CXR_DATABASE_URL", "DATABASE_URL", "CXR_VAR_DIR")

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env

    def __enter__(self) -> None:
        from core.config import get_settings

        self.saved = {k: os.environ.get(k) for k in self.KEYS}
        os.environ.pop("CXR_DATABASE_URL", None)
        os.environ.update(DATABASE_URL=self.env["DATABASE_URL"], CXR_VAR_DIR=self.env["CXR_VAR_DIR"])
        get_settings.cache_clear()

    def __exit__(self, *exc: object) -> None:
        from core.config import get_settings
        from db.session import dispose_engines

        for key, value in self.saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        get_settings.cache_clear()
        dispose_engines()


def log_in(page, base_url: str, username: str, password: str, path: str = "") -> None:  # type: ignore[no-untyped-def]
    """Open ``base_url/path`` and log in through the form."""
    from playwright.sync_api import expect

    page.goto(f"{base_url}/{path}")
    expect(page.get_by_label("Username", exact=True)).to_be_visible(timeout=STEP_MS)
    page.get_by_label("Username", exact=True).fill(username)
    page.get_by_label("Password", exact=True).fill(password)
    page.get_by_role("button", name="Log in").click()
    # A login that succeeds reloads the page through /session/start (serve.py) to set the session cookie:
    # wait for the cookie and the reloaded page, so the next step does not act on the page about to go.
    deadline = time.monotonic() + STEP_MS / 1000
    while time.monotonic() < deadline:
        if any(c["name"] == "cxr_session" for c in page.context.cookies()):
            page.wait_for_load_state()
            expect(page.get_by_role("button", name="Log out")).to_be_visible(timeout=STEP_MS)
            return
        if page.get_by_text("Invalid username or password.").count():
            return
        page.wait_for_timeout(100)
