"""Logging for the dashboard process, so the services' info lines (logins, uploads, promotions...) reach the
server log: ``streamlit run app.py`` configures no logging for the application's own modules, and without a
handler Python drops everything below WARNING."""

from __future__ import annotations

import logging
import os
import sys

HANDLER_NAME = "cxr-dashboard"
PACKAGES = ("core", "db", "ui", "pages")
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure_logging() -> None:
    """Send the project's log records (``CXR_LOG_LEVEL``, default INFO) to standard error, once per process.

    Streamlit executes app.py again on every rerun in the same process: the named handler makes every call
    after the first a no-op. Only the project's packages are configured (libraries keep their own levels),
    and their records still propagate, so pytest's log capture sees them as before.
    """
    level = os.environ.get("CXR_LOG_LEVEL", "INFO").strip().upper()
    if not isinstance(logging.getLevelName(level), int):  # unknown names map to "Level x" strings
        level = "INFO"
    handler = logging.StreamHandler(sys.stderr)
    handler.name = HANDLER_NAME
    handler.setFormatter(logging.Formatter(FORMAT))
    for name in PACKAGES:
        logger = logging.getLogger(name)
        if any(h.name == HANDLER_NAME for h in logger.handlers):
            continue
        logger.setLevel(level)
        logger.addHandler(handler)
