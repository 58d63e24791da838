"""Dashboard entry point: page config, the login gate and the role-aware navigation — nothing else.

Run with ``streamlit run app.py`` (``make run`` migrates and seeds first).
"""

from __future__ import annotations

import streamlit as st

from ui import fmt, session
from ui.login import login_form

st.set_page_config(page_title="CXR assistant", page_icon=":material/radiology:", layout="wide")

user = session.active_user()  # None when signed out, or when the idle timeout just ended the session

# url_path differs from each file name on purpose: Streamlit still treats a folder named ``pages/`` as a
# v1 multipage app until the first st.navigation call of the process (and AppTest resets that before every
# run), and a matching name would let that v1 router run a page script directly, around this gate.
patients = st.Page(
    "pages/patients.py", title="Patients", icon=":material/person_search:", url_path="search", default=True
)
record = st.Page(
    "pages/record.py", title="Patient record", icon=":material/clinical_notes:", url_path="patient"
)
xray = st.Page("pages/xray.py", title="X-ray", icon=":material/radiology:", url_path="x-ray")
history = st.Page(
    "pages/history.py", title="Imaging history", icon=":material/history:", url_path="imaging-history"
)
worklist = st.Page(
    "pages/worklist.py", title="Emergency worklist", icon=":material/emergency:", url_path="ed-worklist"
)
queue = st.Page(
    "pages/review_queue.py", title="Review queue", icon=":material/fact_check:", url_path="review-queue"
)
review = st.Page(
    "pages/review.py", title="Review / correct", icon=":material/rate_review:", url_path="review-study"
)
audit = st.Page("pages/audit.py", title="Audit log", icon=":material/policy:", url_path="audit-log")
models = st.Page(
    "pages/models.py", title="Models", icon=":material/model_training:", url_path="model-versions"
)
clinical = [patients, worklist, queue, record, xray, history, review]
admin_only = [audit, models]

if user is None:
    # Every page stays registered (hidden), so a bookmarked URL shows the login form rather than
    # "page not found", and opens the requested page once the login succeeds.
    st.navigation([*clinical, *admin_only], position="hidden")
    login_form()
    st.stop()

page = st.navigation([*clinical, *admin_only] if user.is_admin else clinical)
with st.sidebar:
    st.markdown(f"**{fmt.md(user.full_name or user.username)}**  \n:gray[{user.username} · {user.role}]")
    if st.button("Log out", icon=":material/logout:"):
        session.sign_out("You have logged out.")
        st.rerun()
    session.idle_watch()
page.run()
