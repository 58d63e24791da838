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
from urllib.parse import quote

import streamlit as st

from core import auth, records, web_sessions
from core.config import get_settings
from core.errors import NotFound

log = logging.getLogger(__name__)

# session_state keys shared between app.py and the pages
USER = "user"  # AuthenticatedUser (frozen dataclass of plain values)
LAST_ACTIVITY = "last_activity"  # aware datetime (UTC) of the previous script run
PATIENT_ID = "patient_id"  # the patient selected on the search page
FLASH = "flash"  # (kind, message) shown once on the next run
LOGIN_NOTICE = "login_notice"  # why the login form is showing (expired session, logged out)
TOKEN = (
    "web_session_token"  # this tab's server-side session token (core.web_sessions); kept on the server only
)
COOKIE_CODE = "cookie_code"  # one-time code for /session/start, set by a login, used once by set_cookie()
CLEAR_COOKIE = "clear_cookie"  # a logout: have the browser drop its cookie (/session/end)

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
    """Start a session for ``user`` (a DTO, not a database row), just authenticated by the login form.

    The server-side session (core.web_sessions) is opened here; its token stays in this tab's server-side
    state, and :func:`set_cookie` has the browser fetch it as an HttpOnly cookie, so that F5, a second tab
    and a link find the sign-in again.
    """
    token = web_sessions.create(user)
    st.session_state[TOKEN] = token
    st.session_state[COOKIE_CODE] = web_sessions.issue_code(token)
    st.session_state[USER] = user
    st.session_state[LAST_ACTIVITY] = utcnow()
    st.session_state.pop(LOGIN_NOTICE, None)


def set_cookie() -> bool:
    """Right after a login: send the browser to ``/session/start`` (serve.py) with the one-time code; it sets
    the cookie and comes back to this very URL (the page and its ``?patient=&study=`` link). True when it
    did: the page is about to reload, so nothing may switch pages in this run (that would drop the script)."""
    code = st.session_state.pop(COOKIE_CODE, None)
    if code:
        st.html(
            "<script>(function(){var next=window.location.pathname+window.location.search;"
            f"window.location.replace('/session/start?code={quote(code)}&next='+encodeURIComponent(next));"
            "})();</script>",
            unsafe_allow_javascript=True,
        )
        return True
    return False


def sign_out(notice: str | None = None, *, reason: str = "logout", clear_cookie: bool = False) -> None:
    """End the session: revoke and audit it, then forget everything this browser tab held.

    Clearing the whole session state (selected patient, half-filled forms) matters on shared ED
    workstations: the next person at the keyboard must not see the previous doctor's patient.
    ``clear_cookie`` (a logout) also has the browser drop its cookie via ``/session/end``.
    """
    token = st.session_state.get(TOKEN) or _cookie_token()
    user = st.session_state.get(USER)
    try:
        ended = web_sessions.end(token, reason=reason)
        if not ended and user is not None and token is None:
            auth.logout(user, reason=reason)  # a session opened without the server-side store (tests)
    except Exception:  # an audit hiccup must never keep someone signed in
        log.exception("could not record logout of %s", getattr(user, "username", "?"))
    st.session_state.clear()
    if notice:
        st.session_state[LOGIN_NOTICE] = notice
    if clear_cookie:
        st.session_state[CLEAR_COOKIE] = True


def clear_cookie() -> None:
    """After a logout: have the browser drop the (already revoked) cookie and show the login form."""
    if st.session_state.pop(CLEAR_COOKIE, None) and st.context.cookies is not None:
        st.html(
            "<script>window.location.replace('/session/end');</script>",
            unsafe_allow_javascript=True,
        )


def _cookie_token() -> str | None:
    try:
        value = st.context.cookies.get(web_sessions.COOKIE_NAME)
    except Exception:  # no browser behind this run (a test harness)
        return None
    return value if isinstance(value, str) and value else None


def active_user() -> auth.AuthenticatedUser | None:
    """The signed-in user, or ``None`` (also when the session just expired, was revoked or the account was
    disabled).

    The session is the server-side one (core.web_sessions): this tab's token, or on a fresh page (F5, a second
    tab, a link) the one in the HttpOnly cookie. Each script run is a user action, so it both checks and
    refreshes the idle timer. The user is re-read from the database so that a deactivated account or a
    changed role takes effect on the next click.
    """
    token = st.session_state.get(TOKEN)
    had_user = st.session_state.get(USER) is not None
    if token is None and had_user:
        return _legacy_active_user()
    resumed = token is None
    if resumed:
        token = _cookie_token()
        if token is None:
            return None
    now = utcnow()
    user = web_sessions.validate(token, now=now)
    if user is None:
        if had_user or resumed and st.session_state.get(LOGIN_NOTICE) is None:
            st.session_state.clear()
            st.session_state[LOGIN_NOTICE] = SESSION_EXPIRED
        return None
    st.session_state[TOKEN] = token
    st.session_state[USER] = user
    st.session_state[LAST_ACTIVITY] = now
    return user


def _legacy_active_user() -> auth.AuthenticatedUser | None:
    """A user put in the session state directly (page tests) without a server-side session."""
    user = st.session_state[USER]
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
    the timer, so it is not counted as activity. With a server-side session the server decides (another
    tab of the same doctor keeps it alive; an administrator's revocation shows here within 30 s)."""
    token = st.session_state.get(TOKEN)
    if token is not None:
        if web_sessions.validate(token, touch=False) is None:
            st.rerun(scope="app")
        return
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


def link(patient_id: str, study_id: int | None = None) -> dict[str, str]:
    """The query of a link to a patient (and a film): ``?patient=ED-100001&study=12``. It carries no
    credential; only a signed-in browser is shown what it names (app.py's gate)."""
    query = {"patient": patient_id}
    if study_id is not None:
        query["study"] = str(study_id)
    return query


def open_record(patient_id: str) -> NoReturn:
    """Select ``patient_id`` and go to the record page."""
    st.session_state[PATIENT_ID] = patient_id
    mark_record_stale()  # opening a record always shows its latest state
    st.switch_page(RECORD_PAGE, query_params=link(patient_id))


def open_study(study_id: int, patient_id: str) -> NoReturn:
    """Show a saved X-ray study (and select its patient) on the X-ray page."""
    st.session_state[PATIENT_ID] = patient_id
    st.session_state[STUDY_ID] = study_id
    st.switch_page(XRAY_PAGE, query_params=link(patient_id, study_id))


def open_review(study_id: int, patient_id: str) -> NoReturn:
    """Open a study (and select its patient) in the correction editor."""
    st.session_state[PATIENT_ID] = patient_id
    st.session_state[STUDY_ID] = study_id
    st.switch_page(REVIEW_PAGE, query_params=link(patient_id, study_id))


LINK_PAGES = (RECORD_PAGE, XRAY_PAGE, HISTORY_PAGE, REVIEW_PAGE)  # pages that show the linked patient / film
PAGE_SHOWN = "page_shown"  # the route of the latest full run
ARRIVED = "page_arrived"  # whether that run opened its page (from another page, a link, F5), not a rerun


def arrived() -> bool:
    """Whether this run opened its page rather than rerunning it after a click on it: Streamlit forgets the
    state of widgets a run does not draw, so a page that keeps typed work puts it back on arrival."""
    return bool(st.session_state.get(ARRIVED, True))


_PATIENT_PARAM_LIMIT = 32


def follow_link(page_path: str) -> None:
    """Open what the URL's ``?patient=..&study=..`` names (a link, a bookmark, F5), then keep the URL naming
    what is on show, so that a refresh or a copied address opens the same patient and film.

    Called by app.py after the login gate: a signed-out browser never gets here, and the parameters survive
    the login (the cookie route returns to the same URL). A link to the bare site with a film opens the
    X-ray page; with a patient only, the record. The pages check the IDs themselves (unknown: a sentence).
    It also notes whether this run :func:`arrived` on its page.
    """
    st.session_state[ARRIVED] = st.session_state.get(PAGE_SHOWN) != page_path
    st.session_state[PAGE_SHOWN] = page_path
    patient = (st.query_params.get("patient") or "").strip()[:_PATIENT_PARAM_LIMIT]
    study_text = (st.query_params.get("study") or "").strip()
    study = int(study_text) if study_text.isdigit() and len(study_text) < 12 else None
    if patient:
        if st.session_state.get(PATIENT_ID) != patient:
            st.session_state[PATIENT_ID] = patient
            mark_record_stale()
        if study is not None:
            st.session_state[STUDY_ID] = study
        elif page_path == XRAY_PAGE and st.session_state.get(STUDY_ID) is not None:
            st.session_state.pop(STUDY_ID, None)
        if page_path not in LINK_PAGES:
            st.switch_page(XRAY_PAGE if study is not None else RECORD_PAGE, query_params=link(patient, study))
        return
    if page_path in LINK_PAGES and st.session_state.get(PATIENT_ID):
        shown = st.session_state.get(STUDY_ID) if page_path in (XRAY_PAGE, REVIEW_PAGE) else None
        st.query_params.from_dict(link(st.session_state[PATIENT_ID], shown))


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
