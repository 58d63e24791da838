"""The server: Streamlit's ASGI ``st.App`` running ``app.py``, plus the two HTTP routes that set and clear the
session cookie, and the model warm-up at start.

``streamlit run serve.py`` (``make run``) finds the ``app`` below and serves it with uvicorn. Why routes: a
Streamlit script talks over a websocket and cannot set an HttpOnly cookie; after a login the page sends the
browser to ``/session/start?code=..&next=..`` with a single-use code (core.web_sessions.issue_code), which
this route exchanges for the session token, sets it as the cookie and redirects back to the page (and deep
link) the doctor was on. ``/session/end`` clears the cookie after a logout (the session is already revoked
server-side). Each new websocket (F5, a second tab, a link) sends the cookie, and ``st.context.cookies``
reads it (ui/session.py).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit

import streamlit as st
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from core import web_sessions

log = logging.getLogger(__name__)


def _safe_next(target: str | None) -> str:
    """Only a path on this site (no scheme, no host, no ``//``): a login never redirects elsewhere."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    parts = urlsplit(target)
    if parts.scheme or parts.netloc:
        return "/"
    return target


def _secure(request: Request) -> bool:
    forwarded = request.headers.get("x-forwarded-proto", "")
    return request.url.scheme == "https" or forwarded.split(",")[0].strip() == "https"


def _no_store(response: Response) -> Response:
    response.headers["Cache-Control"] = "no-store"
    response.headers["Referrer-Policy"] = "no-referrer"
    return response


async def session_start(request: Request) -> Response:
    """Exchange a one-time code for the session cookie, then go back to ``next``."""
    token = web_sessions.redeem_code(request.query_params.get("code"))
    response = RedirectResponse(_safe_next(request.query_params.get("next")), status_code=303)
    if token is not None:
        # Lax, not Strict: a link to a patient clicked in another hospital system must open signed in.
        # Cross-site requests cannot act with it: the dashboard acts only over its own websocket, which a
        # Lax cookie is not sent to from another site.
        response.set_cookie(
            web_sessions.COOKIE_NAME,
            token,
            httponly=True,
            samesite="lax",
            secure=_secure(request),
            path="/",
        )
    return _no_store(response)


async def session_end(_request: Request) -> Response:
    """Clear the cookie (its session was revoked by the logout) and show the login form."""
    response = RedirectResponse("/?signed_out=1", status_code=303)
    response.delete_cookie(web_sessions.COOKIE_NAME, path="/", httponly=True, samesite="lax")
    return _no_store(response)


def _warm_up() -> None:
    """Load the active models before the first upload (the first film is not the slow one)."""
    try:
        from core.xray import diagnosis

        versions = diagnosis.warm_up()
        log.info("models loaded at start: %s", versions)
    except Exception:  # no model installed yet, or a broken one: the X-ray page says so on use
        log.warning("models not loaded at start", exc_info=True)


def _routes_by_navigation_only() -> None:
    """Route every script run through app.py's ``st.navigation``, the first one of the process included.

    Streamlit decides once per process whether the app is a v1 multipage app from whether a folder named
    ``pages/`` sits beside the main script, and runs the *first* script run of the process through v1
    routing until the first ``st.navigation`` call says otherwise (that call sets this same flag). With our
    ``pages/``, a server's first visitor following a link (``/patient?patient=..``) got "Page not found" over
    the login form, because v1 routing knows only file names. Setting the flag at start, as that call would,
    gives the first visitor what every later one gets: the login form, then the page the link named.
    """
    from streamlit.runtime.pages_manager import PagesManager

    PagesManager.uses_pages_directory = False


@asynccontextmanager
async def lifespan(_app: Any) -> AsyncIterator[dict[str, Any]]:
    _routes_by_navigation_only()
    threading.Thread(target=_warm_up, name="model-warm-up", daemon=True).start()
    yield {}


app = st.App(
    "app.py",
    routes=[Route("/session/start", session_start), Route("/session/end", session_end)],
    lifespan=lifespan,
)
