"""The referral's widgets: the crew's quick registration, proposal and live answers, a department's incoming
referrals with accept/decline, the sites admin, the sound-free alert banner (the worklist calls it) and the
"Refer" link (the result page calls it)."""

from __future__ import annotations

import streamlit as st

from core.auth import AuthenticatedUser
from core.errors import AppError, ValidationError
from core.records import SEXES
from core.referral import crew, service, sites
from core.referral import fhir as referral_fhir
from core.xray.diagnosis import get_diagnosis
from ui import fmt, session, xray_views

REFERRALS_PAGE = "pages/referrals.py"
XRAY_PAGE = "pages/xray.py"
REFER_PARAM = "refer"  # ?refer=STUDY_ID opens the proposal for that film
POLL_SECONDS = 3  # the crew's screen polls the answers this often
ALERT_SECONDS = 10  # the department's alert banner checks for new referrals this often
_STATUS_BADGES = {
    "pending": ":orange-badge[:material/hourglass_top: waiting]",
    "accepted": ":green-badge[:material/check_circle: accepted]",
    "declined": ":red-badge[:material/cancel: declined]",
    "closed": ":gray-badge[:material/block: closed: taken elsewhere]",
    "open": ":orange-badge[:material/hourglass_top: open]",
}


def refer_link(study_id: int) -> None:
    """The "Refer" entry for a film (the result page calls this): a link to the proposal for ``study_id``."""
    st.page_link(
        REFERRALS_PAGE,
        label="Refer to an emergency department",
        icon=":material/local_hospital:",
        query_params={REFER_PARAM: str(study_id)},
    )


@st.fragment(run_every=ALERT_SECONDS)
def alert_banner(user: AuthenticatedUser) -> None:
    """A visual (sound-free) alert when referrals wait for the answer of the user's department; nothing
    otherwise. The worklist and the referrals page show it at the top."""
    waiting = service.waiting_count(user)
    if not waiting:
        return
    with st.container(border=True, key="referral-alert"):
        st.error(
            f"**{waiting} incoming referral{'s' if waiting != 1 else ''} waiting for your department's answer.**",
            icon=":material/notifications_active:",
        )
        st.page_link(REFERRALS_PAGE, label="Answer the referrals", icon=":material/local_hospital:")


def seconds_text(seconds: float | None) -> str:
    """'45 s', '3 min 05 s', '—'."""
    if seconds is None:
        return "—"
    whole = max(0, int(round(seconds)))
    return f"{whole} s" if whole < 60 else f"{whole // 60} min {whole % 60:02d} s"


def _answers(view: service.ReferralView) -> None:
    for target in view.targets:
        line = f"{_STATUS_BADGES.get(target.status, target.status)} **{fmt.md(target.site_name)}**"
        if target.answered_by:
            line += f" · {fmt.md(target.answered_by)} at {fmt.moment(target.answered_at)}"
        if target.answer_reason:
            line += f"  \n:gray[Reason: {fmt.md(target.answer_reason)}]"
        st.markdown(line)


def _patient_block(view: service.ReferralView) -> str:
    read = ", ".join(f.replace("_", " ") for f in view.likely) or "none"
    maybe = ", ".join(f.replace("_", " ") for f in view.possible)
    return (
        f"**{fmt.md(view.patient_id)}** · {fmt.md(view.patient_name)} · {fmt.label(view.sex)} · {view.age} y  \n"
        f"{xray_views.triage_badge(view.triage_level, False)} AI read: likely {fmt.md(read)}"
        + (f"; possible {fmt.md(maybe)}" if maybe else "")
        + "  \n:gray[Decision aid, not a diagnosis.]"
    )


# ---------------------------------------------------------------- crew


def quick_registration(user: AuthenticatedUser) -> None:
    """A crew registers a patient with the sex and an estimated age, then uploads the film."""
    with (
        st.expander("Quick registration of a patient", icon=":material/person_add:", expanded=True),
        st.form("ref.quick", clear_on_submit=True),
    ):
        left, right = st.columns(2)
        sex = left.selectbox("Sex", SEXES, index=len(SEXES) - 1, key="ref.quick.sex")
        age = right.number_input("Estimated age (years)", 0, 120, 50, key="ref.quick.age")
        given = left.text_input("Given name (if known)", key="ref.quick.given")
        family = right.text_input("Family name (if known)", key="ref.quick.family")
        if st.form_submit_button("Register", icon=":material/person_add:"):
            try:
                record = crew.quick_register(sex, int(age), user, given_name=given, family_name=family)
            except AppError as exc:
                st.error(fmt.md(str(exc)))
            else:
                session.flash(f"Registered {record.patient_id}: upload the film on the X-ray page.")
                st.session_state[session.PATIENT_ID] = record.patient_id
                st.switch_page(XRAY_PAGE, query_params=session.link(record.patient_id))


def proposal(user: AuthenticatedUser, study_id: int) -> None:
    """The proposed departments for a film with the rule's reasons; the crew confirms or changes, adds a note."""
    st.subheader("Refer this film", anchor=False)
    position = st.session_state.get(f"ref.pos.{study_id}")
    try:
        found = service.propose(
            study_id, user, lat=position[0] if position else None, lon=position[1] if position else None
        )
    except ValidationError as exc:
        st.warning(fmt.md(str(exc)))
        found = None
    except AppError as exc:
        st.error(fmt.md(str(exc)))
        return
    with st.expander("Crew location", icon=":material/my_location:", expanded=found is None):
        lat = st.number_input(
            "Latitude", -90.0, 90.0, found.lat if found else 0.0, format="%.4f", key="ref.lat"
        )
        lon = st.number_input(
            "Longitude", -180.0, 180.0, found.lon if found else 0.0, format="%.4f", key="ref.lon"
        )
        if st.button("Use this location", key="ref.pos"):
            st.session_state[f"ref.pos.{study_id}"] = (lat, lon)
            st.rerun()
    if found is None:
        return
    findings = ", ".join(f.replace("_", " ") for f in found.findings) or "no flagged finding"
    st.caption(
        f"Rule: departments with the services the read's findings need ({fmt.md(findings)}), then the "
        "nearest (great-circle distance from the crew). The three best are proposed; change them if needed."
    )
    names = {s.code: s.name for s in found.ranked}
    for rank, suggestion in enumerate(found.ranked, 1):
        mark = ":material/star:" if rank <= service.MAX_TARGETS else ":gray[·]"
        st.markdown(f"{mark} **{rank}. {fmt.md(suggestion.name)}**  \n:gray[{fmt.md(suggestion.reasons)}]")
    with st.form(f"ref.send.{study_id}"):
        chosen = st.multiselect(
            "Send to",
            list(names),
            default=[s.code for s in found.proposed],
            format_func=lambda c: names[c],
            max_selections=service.MAX_TARGETS,
            key="ref.targets",
        )
        note = st.text_area("Note for the departments", max_chars=service.NOTE_LIMIT, key="ref.note")
        if st.form_submit_button("Send referral", type="primary", icon=":material/send:"):
            try:
                referral_id = service.create_referral(
                    study_id, chosen, note, user, lat=found.lat, lon=found.lon
                )
            except AppError as exc:
                st.error(fmt.md(str(exc)))
            else:
                try:
                    outside = referral_fhir.send(referral_id, user)  # departments of other installations
                except AppError as exc:
                    st.error(fmt.md(str(exc)))
                    return
                extra = f" ({len(outside)} by FHIR to another installation)" if outside else ""
                session.flash(f"Referral {referral_id} sent to {len(chosen)} department(s){extra}.")
                st.query_params.clear()
                st.rerun()


def recent_films(user: AuthenticatedUser) -> None:
    """The crew's latest films, each with a "Refer" button (the proposal opens below)."""
    films = service.recent_films(user)
    if not films:
        return
    st.subheader("Your recent films", anchor=False)
    for item in films:
        who, when, action = st.columns([4, 2, 1.4], vertical_alignment="center")
        who.markdown(
            f"{xray_views.triage_badge(item.triage_level, False)} **{fmt.md(item.patient_id)}** "
            f"{fmt.md(item.patient_name)}" + (" :gray[· referred]" if item.referred else "")
        )
        when.caption(fmt.moment(item.uploaded_at))
        if action.button("Refer", key=f"ref.film.{item.study_id}", icon=":material/local_hospital:"):
            st.query_params[REFER_PARAM] = str(item.study_id)
            st.rerun()


@st.fragment(run_every=POLL_SECONDS)
def sent_referrals(user: AuthenticatedUser) -> None:
    """The crew's referrals with every department's answer as it comes (polled)."""
    views = service.sent_by(user)
    if not views:
        st.info("You have not referred a patient yet.", icon=":material/info:")
        return
    for view in views:
        with st.container(border=True, key=f"ref-sent-{view.id}"):
            head = f"Referral {view.id} · {_STATUS_BADGES.get(view.status, view.status)}"
            if view.status == "accepted" and view.accepted_by_site:
                head += f" · **Accepted by {fmt.md(view.accepted_by_site)}**"
            st.markdown(head)
            st.markdown(_patient_block(view))
            st.caption(
                f"Sent {fmt.moment(view.created_at)} · time to first answer: "
                f"{seconds_text(view.seconds_to_first_answer)}"
            )
            _answers(view)


# ---------------------------------------------------------------- department


def _answer_controls(user: AuthenticatedUser, view: service.ReferralView) -> None:
    accept, decline = st.columns(2)
    if accept.button(
        "Accept the patient", key=f"ref.accept.{view.id}", type="primary", icon=":material/check_circle:"
    ):
        _answer(user, view.id, accept=True, reason="")
    reason = decline.text_input("Reason to decline", key=f"ref.reason.{view.id}")
    if decline.button("Decline", key=f"ref.decline.{view.id}", icon=":material/cancel:"):
        _answer(user, view.id, accept=False, reason=reason)


def _answer(user: AuthenticatedUser, referral_id: int, *, accept: bool, reason: str) -> None:
    try:
        service.answer(referral_id, user, accept=accept, reason=reason)
    except AppError as exc:
        st.error(fmt.md(str(exc)))
        return
    session.flash(f"Referral {referral_id} {'accepted' if accept else 'declined'}.")
    st.rerun()


def incoming_referrals(user: AuthenticatedUser) -> None:
    """Referrals sent to the user's department, those waiting for its answer first, with the film."""
    mine = sites.user_site(user.id)
    if mine is None:
        st.info("Your account belongs to no department, so no referral reaches you.", icon=":material/info:")
        return
    st.subheader(f"Incoming referrals · {mine.name}", anchor=False)
    views = service.incoming(user)
    if not views:
        st.info("No referral has been sent to your department.", icon=":material/task_alt:")
        return
    for view in views:
        target = view.target(mine.code)
        status = target.status if target else "closed"
        with st.container(border=True, key=f"ref-in-{view.id}"):
            st.markdown(
                f"Referral {view.id} · {_STATUS_BADGES.get(status, status)} · from {fmt.md(view.sent_by)}"
                + (f" ({fmt.md(view.from_site)})" if view.from_site else "")
                + f" · {fmt.moment(view.created_at)}"
            )
            film, details = st.columns([1, 2])
            if status == "pending":
                try:
                    shown = get_diagnosis(view.study_id, user, audit=False)  # the listing is audited
                    film.image(str(shown.image_path), width="stretch")
                except (AppError, OSError):
                    film.caption("The film cannot be shown.")
            details.markdown(_patient_block(view))
            if view.note:
                details.markdown(f"**Crew note:** {fmt.md(view.note)}")
            if target is not None:
                details.caption(f"Why your department: {fmt.md(target.reasons)}")
            if status == "pending":
                with details:
                    _answer_controls(user, view)
            elif view.status == "accepted" and view.accepted_by_site:
                details.caption(f"Accepted by {fmt.md(view.accepted_by_site)}.")


# ---------------------------------------------------------------- admin


def sites_admin(user: AuthenticatedUser) -> None:
    """The sites in the database, a sync from the configuration file, and a user's site."""
    st.subheader("Sites", anchor=False)
    st.caption(f"From `{fmt.md(str(sites.sites_file()))}`; a site removed from the file is deactivated.")
    rows = sites.list_sites(active_only=False)
    st.dataframe(
        [
            {
                "Code": s.code,
                "Name": s.name,
                "Kind": s.kind,
                "Capabilities": ", ".join(s.capabilities),
                "Location": f"{s.lat:.4f}, {s.lon:.4f}",
                "Outside (FHIR)": s.fhir_url or "",
                "Active": s.active,
            }
            for s in rows
        ],
        hide_index=True,
    )
    if st.button("Sync from the file", key="ref.sync", icon=":material/sync:"):
        try:
            result = sites.sync_sites(user)
        except AppError as exc:
            st.error(fmt.md(str(exc)))
        else:
            session.flash(
                f"Sites synced: {len(result.added)} added, {len(result.updated)} updated, "
                f"{len(result.deactivated)} deactivated."
            )
            st.rerun()
    with st.form("ref.assign"):
        left, right = st.columns(2)
        username = left.text_input("Username", key="ref.assign.user")
        codes = ["", *(s.code for s in rows if s.active)]
        code = right.selectbox("Site", codes, format_func=lambda c: c or "(no site)", key="ref.assign.site")
        if st.form_submit_button("Assign the site"):
            try:
                sites.assign_user(username, code or None, user)
            except AppError as exc:
                st.error(fmt.md(str(exc)))
            else:
                session.flash(f"{username} now works for {code or 'no site'}.")
                st.rerun()


def render(user: AuthenticatedUser) -> None:
    """The whole Referrals page for ``user``'s role."""
    sites.ensure_sites()
    st.title("Referrals", anchor=False)
    session.show_flash()
    alert_banner(user)
    refer = (st.query_params.get(REFER_PARAM) or "").strip()
    if user.role in service.SENDERS:
        if user.role == "ambulance":
            quick_registration(user)
        if refer.isdigit() and len(refer) < 12:
            proposal(user, int(refer))
        elif user.role == "ambulance":
            recent_films(user)
        if user.role == "ambulance" or service.sent_by(user):
            st.subheader("Your referrals", anchor=False)
            sent_referrals(user)
    if user.role != "ambulance":
        incoming_referrals(user)
    if user.is_admin:
        sites_admin(user)
