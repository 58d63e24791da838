"""Who is signed in, session expiry, flash messages, navigation between pages, the record on show.

Only ``app.py`` and ``pages/`` import Streamlit. What is kept in ``st.session_state`` is plain values and the
frozen DTOs the services return (``AuthenticatedUser``, ``PatientRecord``, ``DiagnosisView``) — never ORM
objects or sessions, which would outlive their transaction and leak between reruns. The one thing cached
with ``st.cache_*`` is :func:`load_models` (process-wide models, shared by every user); everything else here
is per-user data.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Literal, NoReturn

import streamlit as st

from core import auth, records
from core.config import get_settings
from core.errors import NotFound

log = logging.getLogger(__name__)

# session_state keys shared between app.py and the pages
USER = "user"  # AuthenticatedUser (frozen dataclass of plain values)
LAST_ACTIVITY = "last_activity"  # aware datetime (UTC) of the previous script run
PATIENT_ID = "patient_id"  # the patient selected on the search page
FLASH = "flash"  # (kind, message) shown once on the next run
LOGIN_NOTICE = "login_notice"  # why the login form is showing (expired session, logged out)

SESSION_EXPIRED = "Your session expired — please log in again."

RECORD_PAGE = "pages/record.py"
PATIENTS_PAGE = "pages/patients.py"
XRAY_PAGE = "pages/xray.py"
HISTORY_PAGE = "pages/history.py"
WORKLIST_PAGE = "pages/worklist.py"
REVIEW_PAGE = "pages/review.py"
QUEUE_PAGE = "pages/review_queue.py"
STUDY_ID = "study_id"  # the X-ray study shown on the X-ray page (an int; its DTO is fetched per opening)

FlashKind = Literal["success", "info", "warning", "error"]


def utcnow() -> datetime:
    """Aware UTC now; one place so expiry and the display agree."""
    return datetime.now(UTC)


def sign_in(user: auth.AuthenticatedUser) -> None:
    """Start a session for ``user`` (a DTO, not a database row)."""
    st.session_state[USER] = user
    st.session_state[LAST_ACTIVITY] = utcnow()
    st.session_state.pop(LOGIN_NOTICE, None)


def sign_out(notice: str | None = None, *, reason: str = "logout") -> None:
    """End the session: audit it, then forget everything this browser tab held.

    Clearing the whole session state (selected patient, half-filled forms) matters on shared ED
    workstations: the next person at the keyboard must not see the previous doctor's patient.
    """
    user = st.session_state.get(USER)
    if user is not None:
        try:
            auth.logout(user, reason=reason)
        except Exception:  # an audit hiccup must never keep someone signed in
            log.exception("could not record logout of %s", getattr(user, "username", "?"))
    st.session_state.clear()
    if notice:
        st.session_state[LOGIN_NOTICE] = notice


def active_user() -> auth.AuthenticatedUser | None:
    """The signed-in user, or ``None`` (also when the session just expired or the account was disabled).

    Each script run is a user action, so it both checks and refreshes the idle timer. The user is re-read
    from the database so that a deactivated account or a changed role takes effect on the next click.
    """
    user = st.session_state.get(USER)
    if user is None:
        return None
    now = utcnow()
    last = st.session_state.get(LAST_ACTIVITY)
    idle = get_settings().session_idle_minutes
    if not isinstance(last, datetime) or auth.session_expired(last, now, idle):
        sign_out(SESSION_EXPIRED, reason="session expired")
        return None
    try:
        user = auth.load_user(user.id)
    except NotFound:
        sign_out("Your account is no longer active — ask an administrator.", reason="account inactive")
        return None
    st.session_state[USER] = user
    st.session_state[LAST_ACTIVITY] = now
    return user


@st.fragment(run_every=30)
def idle_watch() -> None:
    """Every 30 s, end the session once it has been idle too long, even if nobody touches the screen:
    an unattended ED workstation must not keep showing a patient's record. Only this fragment reruns on
    the timer, so it is not counted as activity."""
    last = st.session_state.get(LAST_ACTIVITY)
    idle = get_settings().session_idle_minutes
    if st.session_state.get(USER) is not None and (
        not isinstance(last, datetime) or auth.session_expired(last, utcnow(), idle)
    ):
        st.rerun(scope="app")  # the full run's active_user() signs out and shows why


def require_user() -> auth.AuthenticatedUser:
    """The signed-in user. app.py's gate normally guarantees one; this keeps a page that is run on its own
    (Streamlit's legacy ``pages/`` router, a test) behind the login form too."""
    user = st.session_state.get(USER)
    if not isinstance(user, auth.AuthenticatedUser):
        from ui.login import login_form  # late: login imports this module

        login_form()
        st.stop()
    return user


def flash(message: str, kind: FlashKind = "success") -> None:
    """Queue a message for the next run (actions end with ``st.rerun()``, which would swallow it)."""
    st.session_state[FLASH] = (kind, message)


def show_flash() -> None:
    """Show and forget the queued message, if any."""
    queued = st.session_state.pop(FLASH, None)
    if queued:
        kind, message = queued
        icons = {
            "success": ":material/check_circle:",
            "info": ":material/info:",
            "warning": ":material/warning:",
            "error": ":material/error:",
        }
        getattr(st, kind)(message, icon=icons[kind])


def open_record(patient_id: str) -> NoReturn:
    """Select ``patient_id`` and go to the record page."""
    st.session_state[PATIENT_ID] = patient_id
    mark_record_stale()  # opening a record always shows its latest state
    st.switch_page(RECORD_PAGE)


def open_study(study_id: int, patient_id: str) -> NoReturn:
    """Show a saved X-ray study (and select its patient) on the X-ray page."""
    st.session_state[PATIENT_ID] = patient_id
    st.session_state[STUDY_ID] = study_id
    st.switch_page(XRAY_PAGE)


def open_review(study_id: int, patient_id: str) -> NoReturn:
    """Open a study (and select its patient) in the correction editor."""
    st.session_state[PATIENT_ID] = patient_id
    st.session_state[STUDY_ID] = study_id
    st.switch_page(REVIEW_PAGE)


@st.cache_resource(show_spinner="Loading the X-ray models…")
def load_models() -> dict[str, str]:
    """Load the active classifier (and detector) once per server process; returns their versions.

    The models are shared by every session: core.ml.inference keeps one instance per version and serializes
    each runtime's calls. Raises ``ModelNotAvailable`` (not cached) when no model is installed.
    """
    from core.xray import diagnosis  # late: the record pages need no imaging stack

    return diagnosis.warm_up()


RECORD = "record"  # PatientRecord DTO as last shown; its versions are what an edit is based on
RECORD_LOADED_AT = "record_loaded_at"
RECORD_STALE = "record_stale"  # set after a change: the record page reloads before rendering
RECORD_KEYS = "rec."  # prefix of every record-page form key; dropped when another patient is opened


def mark_record_stale() -> None:
    """Have the record page fetch the record again on its next run."""
    st.session_state[RECORD_STALE] = True


def current_record(patient_id: str, user: auth.AuthenticatedUser) -> records.PatientRecord:
    """The record of ``patient_id`` as this user last saw it, fetched again when stale or just opened.

    Keeping the DTO (not re-reading it on every click) means every edit is checked against the version
    the doctor actually saw, and the audit log gets one 'view' per opening rather than one per click.
    Raises ``NotFound`` for an unknown ID.
    """
    shown = st.session_state.get(RECORD)
    if shown is None or shown.patient_id != patient_id or st.session_state.get(RECORD_STALE):
        if shown is None or shown.patient_id != patient_id:
            # Half-finished forms belong to the previous patient: never let them reach this one.
            for key in [k for k in st.session_state if str(k).startswith(RECORD_KEYS)]:
                del st.session_state[key]
        shown = records.get_record(patient_id, user)
        st.session_state[RECORD] = shown
        st.session_state[RECORD_LOADED_AT] = utcnow()
        st.session_state.pop(RECORD_STALE, None)
    return shown


SEARCH_LIMIT = 25  # a page of hits; more means the query is too vague to scan by eye
SEARCHED = "searched"  # the last patient search audited in this session (a str)


def search_patients(query: str) -> list[records.PatientSummary]:
    """A patient search by the signed-in user, audited once per distinct query in this session: a rerun
    that shows the same hits again (a click elsewhere on the page) is not a new search."""
    user = st.session_state.get(USER)
    audit_it = isinstance(user, auth.AuthenticatedUser) and st.session_state.get(SEARCHED) != query
    hits = records.search_patients(query, limit=SEARCH_LIMIT, actor=user if audit_it else None)
    st.session_state[SEARCHED] = query
    return hits
