"""The pages' last line of defence: a failure of the server's disk or database, or a bug, is told in one plain
sentence (``core.failures``) and logged; the doctor never sees a traceback, a server path or SQL.

``run_page`` wraps every page (app.py); ``guard`` lets a page say which action failed and carry on drawing;
``database_ready`` is the check before anything else touches the database. Widget values live in
Streamlit's session state, so what the doctor typed is still in the form after such a failure.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import streamlit as st
from sqlalchemy.exc import SQLAlchemyError

from core import failures
from db.session import check_database

log = logging.getLogger(__name__)

UNEXPECTED = (
    "Something went wrong on the server (reference {ref}). What was saved before is safe; what you were "
    "doing just now may not have been saved. Try again; if it keeps happening, call IT and quote the reference."
)
DATABASE_DOWN = (
    "The patient database cannot be reached ({why}), so nothing can be shown or saved right now. "
    "Try again in a moment; if it keeps happening, call IT."
)


#: Set by the test suite: a bug (not a disk or database failure) is shown AND raised, so tests that check a
#: page ran without an exception can still fail.
RERAISE_ENV = "CXR_RERAISE_ERRORS"


def _show(exc: Exception, action: str) -> None:
    message = failures.describe(exc, action)
    if message is None:
        ref = failures.reference()
        log.exception("unexpected error, reference %s", ref)
        st.error(UNEXPECTED.format(ref=ref), icon=":material/error:")
        if os.environ.get(RERAISE_ENV) == "1":
            raise exc
        return
    log.warning("%s: %s (%s)", action, failures.reason(exc), type(exc).__name__)
    st.error(message, icon=":material/cloud_off:")


@contextmanager
def guard(action: str) -> Iterator[None]:
    """``with guard("The X-ray could not be saved"):`` shows a disk or database failure inside the block as
    a sentence and lets the page go on; any other error goes up to :func:`run_page`."""
    try:
        yield
    except (OSError, SQLAlchemyError) as exc:
        if failures.reason(exc) is None:
            raise
        _show(exc, action)


def run_page(page: Any) -> None:
    """``page.run()``; whatever escapes it (Streamlit's own stop/rerun signals excepted) becomes a sentence."""
    try:
        page.run()
    except Exception as exc:  # the boundary: every error ends here, told plainly and logged
        _show(exc, "This could not be completed")


def database_ready() -> bool:
    """Whether the database answers; if not, says so on the page (once per run) and returns ``False``.
    (The forms of ``ui.forms`` keep what was typed over such a run.)"""
    try:
        check_database()
    except SQLAlchemyError as exc:
        log.error("database check failed: %s", failures.reason(exc))
        st.error(DATABASE_DOWN.format(why=failures.reason(exc) or "no answer"), icon=":material/cloud_off:")
        return False
    return True
