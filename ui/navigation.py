"""The dashboard's routes: one row per file in ``pages/``, in menu order.

``app.py`` registers exactly these (admins see the ``admin`` ones too); the login-gate test in
``tests/test_pages.py`` is generated from them, so a new page is covered the moment it is listed here.
Plain data, no Streamlit: tests and tools read it without starting a script run.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Route:
    """One page: its script, menu title and icon, and the URL path it is served under."""

    path: str  # the script, relative to the project root
    title: str
    icon: str
    # Differs from the file name on purpose: Streamlit still treats a folder named ``pages/`` as a v1
    # multipage app until the first st.navigation call of the process (and AppTest resets that before every
    # run), and a matching name would let that v1 router run a page script directly, around the login gate.
    url_path: str
    admin: bool = False  # only administrators see it in the menu (the page checks the role itself too)
    default: bool = False  # the page a bare URL opens


ROUTES: tuple[Route, ...] = (
    Route("pages/patients.py", "Patients", ":material/person_search:", "search", default=True),
    Route("pages/worklist.py", "Emergency worklist", ":material/emergency:", "ed-worklist"),
    Route("pages/review_queue.py", "Review queue", ":material/fact_check:", "review-queue"),
    Route("pages/record.py", "Patient record", ":material/clinical_notes:", "patient"),
    Route("pages/xray.py", "X-ray", ":material/radiology:", "x-ray"),
    Route("pages/history.py", "Imaging history", ":material/history:", "imaging-history"),
    Route("pages/review.py", "Review / correct", ":material/rate_review:", "review-study"),
    Route("pages/referrals.py", "Referrals", ":material/local_hospital:", "ed-referrals"),
    Route("pages/pacs.py", "Unmatched from PACS", ":material/move_to_inbox:", "pacs-unmatched"),
    Route("pages/account.py", "My account", ":material/manage_accounts:", "my-account"),
    Route("pages/audit.py", "Audit log", ":material/policy:", "audit-log", admin=True),
    Route("pages/accounts.py", "Accounts", ":material/group:", "user-accounts", admin=True),
    Route("pages/models.py", "Models", ":material/model_training:", "model-versions", admin=True),
)

ACCOUNT_PAGE = "pages/account.py"  # the sidebar's "My account" link
