"""Dashboard entry point: logging, page config, the login gate and the role-aware navigation — nothing else.

Served by ``serve.py`` (``streamlit run serve.py``; ``make run`` migrates and seeds first), which adds the session
cookie routes and loads the models at start.
"""

from __future__ import annotations

import streamlit as st

from core import origin
from ui import errors, fmt, focus, session
from ui.login import login_form
from ui.logs import configure_logging
from ui.navigation import ACCOUNT_PAGE, ROUTES

configure_logging()  # once per process: a rerun finds it done
# Every audit row of this run (failed logins included) names the browser's address; it also keys the
# per-client login throttle (core.auth.ClientThrottle).
origin.set_client(f"web:{st.context.ip_address}" if st.context.ip_address else "web")

st.set_page_config(page_title="CXR assistant", page_icon=":material/radiology:", layout="wide")

if not errors.database_ready():  # down or locked: one plain sentence instead of a traceback on first query
    st.stop()

user = session.active_user()  # None when signed out, or when the idle timeout just ended the session

# The routes (file, title, icon, URL path, who sees them) are listed in ui/navigation.py.
pages = {
    route.path: st.Page(
        route.path, title=route.title, icon=route.icon, url_path=route.url_path, default=route.default
    )
    for route in ROUTES
}
clinical = [pages[route.path] for route in ROUTES if not route.admin]
admin_only = [pages[route.path] for route in ROUTES if route.admin]

if user is None:
    # Every page stays registered (hidden), so a bookmarked URL shows the login form rather than
    # "page not found", and opens the requested page once the login succeeds.
    st.navigation([*clinical, *admin_only], position="hidden")
    session.clear_cookie()  # after a logout: the browser drops its (revoked) cookie
    login_form()
    st.stop()

# After a login: the HttpOnly session cookie (the page reloads through /session/start), so F5, a second tab
# and links stay signed in.
reloading = session.set_cookie()
page = st.navigation([*clinical, *admin_only] if user.is_admin else clinical)
if not reloading:  # ?patient=..&study=.. opens that patient or film; the URL follows what is on show
    session.follow_link(
        next((path for path, p in pages.items() if p is page or p.url_path == page.url_path), "")
    )
with st.sidebar:
    st.markdown(f"**{fmt.md(user.full_name or user.username)}**  \n:gray[{user.username} · {user.role}]")
    st.page_link(ACCOUNT_PAGE, label="My account", icon=":material/manage_accounts:")
    if st.button("Log out", icon=":material/logout:"):
        session.sign_out("You have logged out.", clear_cookie=True)
        st.rerun()
    session.idle_watch()
    focus.send_typing_before_links()  # a link clicked while typing: the typed value first, then the page
errors.run_page(page)  # a disk or database failure, or a bug, becomes a plain sentence
