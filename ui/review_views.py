"""Widgets of the correction pages: the model's read, the finding labels, the box editor, saving, history.

The box editor is :func:`ui.box_editor.box_editor` (streamlit-image-annotation's detection canvas: move,
resize, delete, relabel and draw boxes), which applies every change at once, so a box drawn is a box saved
without pressing the editor's own Complete. It is fed a copy of the display image shrunk to at most
``EDITOR_SIDE`` px, so its pixels map to the study's frame with one factor per axis. Findings start **not
set**, with the model's suggestion beside each: a label is the doctor's only when the doctor sets it, or
presses "Accept the model's suggestions" (stored as ``accepted``). Every widget key carries the study and its version: another study, or the same study after a
save, starts from the freshly loaded reading, while a rerun keeps what the doctor has done so far.

A review typed but not saved survives leaving the page (:data:`DRAFTS`): Streamlit forgets the state of
widgets a run does not draw, so every change is also copied into a plain per-study draft (the widgets'
callbacks, which run even in the run that opens another page, and the end of each run of this page for the
boxes), and coming back writes it into the widgets before they are drawn. The draft lives in this browser
tab's server-side session only (gone on logout, expiry or F5) and is removed on a save, a sign or Discard.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import streamlit as st
from PIL import Image

from core.auth import AuthenticatedUser
from core.errors import ConflictError, ValidationError
from core.review import corrections
from core.review.corrections import FINDING_LABELS, CorrectedBox, EditorState
from ui import fmt, session, xray_views
from ui.box_editor import box_editor as box_canvas

STATE = "cx.state"  # the EditorState on show (a frozen DTO); its study_version is what a save is based on
UNSAVED = "cx.unsaved"  # (labels, boxes, note) of a save refused by a conflict, shown after the reload
DRAFTS = "cx.drafts"  # study_id -> Draft: the review typed and not saved, kept while the doctor is elsewhere
RESTORED_NOTE = "Restored your unsaved review of this film (not saved yet)."
EDITOR_SIDE = 640
NOT_SET = "not set"


def prefix(state: EditorState) -> str:
    """Widget key prefix of one loaded reading (changes with the study and after every save)."""
    return f"cx.{state.study_id}.v{state.study_version}."


def current_state(study_id: int, user: AuthenticatedUser) -> EditorState:
    """The editor state of ``study_id`` as this session last loaded it (loaded, and audited, per opening)."""
    shown = st.session_state.get(STATE)
    if shown is None or shown.study_id != study_id:
        shown = corrections.get_editor_state(study_id, user)
        st.session_state[STATE] = shown
        st.session_state.pop(UNSAVED, None)
    return shown


def reload(user: AuthenticatedUser) -> None:
    """Load the study's latest reading (after a save, or to see what someone else saved)."""
    state = st.session_state[STATE]
    st.session_state[STATE] = corrections.get_editor_state(state.study_id, user, audit=False)
    st.session_state.pop(xray_views.VIEW, None)  # the result page shows the new status too


def model_read(state: EditorState) -> None:
    """The model's read, exactly as it was made (a correction never changes it)."""
    st.markdown("**The model's read** :gray[(kept as it was made)]")
    st.image(str(state.model_image_path), width="stretch")
    if not state.detector_ran:
        st.caption("No detector model was active for this film, so the model marked no region.")
    st.dataframe(
        [
            {
                "Finding": f.label,
                "Probability": round(f.probability, 3),
                "Threshold": round(f.threshold, 3),
                "Model": state.model_labels[f.name],
            }
            for f in state.findings
        ],
        hide_index=True,
    )
    boxes = ", ".join(f"{b.label} {b.confidence:.0%}" for b in state.model_boxes)
    st.caption(f"Model's boxes: {fmt.md(boxes) if boxes else 'none'}")
    if state.unusable_model_boxes:
        st.caption(f"{state.unusable_model_boxes} model box(es) have a label outside the detector's classes.")


def _initial(state: EditorState, name: str) -> str:
    """A finding's choice as loaded: the previous reading's label where a doctor set it, else not set."""
    if state.sources.get(name, "model") == "model":
        return NOT_SET
    return state.labels.get(name, NOT_SET)


def _accept_all(state: EditorState) -> None:
    """Button callback: every finding still not set takes the model's suggestion, marked 'accepted'."""
    accepted = st.session_state.setdefault(f"{prefix(state)}accepted", set())
    for f in state.findings:
        key = f"{prefix(state)}label.{f.name}"
        if st.session_state.get(key, _initial(state, f.name)) == NOT_SET:
            st.session_state[key] = state.model_labels[f.name]
            accepted.add(f.name)
    choices = {f.name: st.session_state.get(f"{prefix(state)}label.{f.name}") for f in state.findings}
    _keep(state, choices={n: str(c) for n, c in choices.items() if c is not None}, accepted=accepted)


def _set_by_doctor(state: EditorState, name: str) -> None:
    accepted = st.session_state.setdefault(f"{prefix(state)}accepted", set())
    accepted.discard(name)
    choice = st.session_state.get(f"{prefix(state)}label.{name}")
    _keep(state, choices={name: str(choice)} if choice is not None else {}, accepted=accepted)


def _note_changed(state: EditorState) -> None:
    _keep(state, note=str(st.session_state.get(f"{prefix(state)}note", "")))


def reason_changed(state: EditorState) -> None:
    """The amendment reason's callback: into the draft."""
    _keep(state, reason=str(st.session_state.get(f"{prefix(state)}reason", "")))


def finding_labels(state: EditorState) -> tuple[dict[str, str], dict[str, str]]:
    """One not set / present / absent / uncertain choice per finding, the model's suggestion beside it;
    returns (labels, sources): a finding left unset carries the model's suggestion with source 'model'."""
    labels: dict[str, str] = {}
    sources: dict[str, str] = {}
    model = state.model_labels
    accepted = st.session_state.setdefault(f"{prefix(state)}accepted", set())
    options = (NOT_SET, *FINDING_LABELS)
    for f in state.findings:
        text, choice = st.columns([2, 3], vertical_alignment="center")
        key = f"{prefix(state)}label.{f.name}"
        st.session_state.setdefault(key, _initial(state, f.name))
        value = choice.radio(
            f.label,
            options,
            format_func=fmt.label,
            horizontal=True,
            label_visibility="collapsed",
            key=key,
            on_change=_set_by_doctor,
            args=(state, f.name),
        )
        if value is None or value == NOT_SET:
            labels[f.name], sources[f.name] = model[f.name], "model"
        else:
            labels[f.name] = value
            previous = state.sources.get(f.name, "model")
            if f.name in accepted:
                sources[f.name] = "accepted"
            elif value == state.labels.get(f.name) and previous != "model":
                sources[f.name] = previous  # as the loaded reading had it
            else:
                sources[f.name] = "doctor"
        suggestion = f":gray[model: {model[f.name]} {f.probability:.0%}]"
        tag = (
            " :orange-badge[differs from model]"
            if sources[f.name] != "model" and labels[f.name] != model[f.name]
            else ""
        )
        tag += " :blue-badge[not set]" if sources[f.name] == "model" else ""
        text.markdown(f"**{f.label}** {suggestion}{tag}")
    unset = sum(v == "model" for v in sources.values())
    st.button(
        f"Accept the model's suggestions for the {unset} finding(s) not set",
        icon=":material/done_all:",
        disabled=not unset,
        on_click=_accept_all,
        args=(state,),
        key=f"{prefix(state)}accept",
        help="Recorded as 'accepted' (not as labels you set) in the reading and the training export.",
    )
    return labels, sources


def note(state: EditorState) -> str:
    """The reading's free-text note (kept in the draft as it is typed)."""
    key = f"{prefix(state)}note"
    st.session_state.setdefault(key, state.note)
    return st.text_area("Note", max_chars=2000, key=key, on_change=_note_changed, args=(state,))


def box_editor(state: EditorState) -> tuple[CorrectedBox, ...]:
    """The film with the boxes to edit; returns the boxes as last completed (else as loaded)."""
    factor = min(1.0, EDITOR_SIDE / max(state.width, state.height))
    size = (max(1, round(state.width * factor)), max(1, round(state.height * factor)))
    scale_x, scale_y = state.width / size[0], state.height / size[1]
    with Image.open(state.preview_path) as preview:
        shown = preview.convert("L").resize(size, Image.Resampling.BILINEAR)
    st.caption(
        "Choose the **Class** first, then drag on the film to draw a box; click a box to select it, drag to "
        "move it or pull its handles to resize it; **Class** relabels the selected box, **Mode: Del** deletes "
        "boxes on click. Every change is applied at once (no need to press Complete). Classes after the "
        "detector's mark findings it does not know; they go to the training export's side file."
    )
    classes = corrections.markable_classes(state.finding_names)
    draft = _drafts().get(state.study_id)
    start = draft.editor_boxes if draft is not None and draft.editor_boxes is not None else state.boxes
    shown_boxes = [b for b in start if b.label in classes]
    drawn = box_canvas(
        shown,
        list(classes),
        [
            [b.x1 / scale_x, b.y1 / scale_y, (b.x2 - b.x1) / scale_x, (b.y2 - b.y1) / scale_y]
            for b in shown_boxes
        ],
        [classes.index(b.label) for b in shown_boxes],
        width=size[0],
        height=size[1],
        line_width=2,
        key=_editor_key(state),
    )
    if drawn is None:
        return start
    return corrections.boxes_from_xywh(drawn, scale_x, scale_y, state.width, state.height)


def box_table(boxes: tuple[CorrectedBox, ...], state: EditorState) -> None:
    """The boxes a save would store, in the film's own pixels."""
    lines = [f"- {fmt.md(b.label)}: x {b.x1:.0f}–{b.x2:.0f}, y {b.y1:.0f}–{b.y2:.0f}" for b in boxes]
    st.markdown(
        f"**Boxes to save** :gray[({len(boxes)}, in the film's {state.width} x {state.height} px)]"
        + ("\n" + "\n".join(lines) if lines else "")
    )


def save(
    state: EditorState,
    labels: dict[str, str],
    boxes: tuple[CorrectedBox, ...],
    note: str,
    user: AuthenticatedUser,
    mark_reviewed: bool,
    *,
    sources: dict[str, str] | None = None,
    sign: bool = False,
    amend_reason: str = "",
) -> None:
    """Save the reading; on success reload and say what the study became, else say why nothing was saved."""
    try:
        saved = corrections.save_correction(
            state.study_id,
            labels,
            boxes,
            note,
            state.study_version,
            user,
            mark_reviewed,
            sources=sources,
            sign=sign,
            amend_reason=amend_reason,
        )
    except ValidationError as exc:
        for message in exc.errors.values():
            st.error(message, icon=":material/error:")
        return
    except ConflictError as exc:
        st.session_state[UNSAVED] = (labels, boxes, note, state.study_version)
        _drafts().pop(state.study_id, None)  # what was entered is listed by unsaved() from now on
        session.flash(str(exc), "error")
        st.rerun()
    _drafts().pop(state.study_id, None)
    reload(user)
    if sign:
        what = "amended and signed" if state.signed else "signed"
        session.flash(f"Saved and {what}: you are the reader of record. The model's read is kept beside it.")
    elif not mark_reviewed:
        session.flash("Draft saved; the study still waits for review.", "info")
    elif saved.status == "reviewed":
        session.flash("Saved: the study is marked reviewed (your reading agrees with the model's).")
    else:
        session.flash("Saved: the study is marked corrected. The model's read is kept beside your reading.")
    st.rerun()


def unsaved(state: EditorState, user: AuthenticatedUser) -> None:
    """After a save lost to someone else's: a Reload button, then what the doctor had entered (so nothing
    typed is lost) next to the reading that won."""
    kept = st.session_state.get(UNSAVED)
    if not kept:
        return
    labels, boxes, note, attempted_on = kept
    if state.study_version == attempted_on:
        st.warning(
            "Someone else saved a reading of this study after you opened it. Reload to see it; what you "
            "entered stays listed here.",
            icon=":material/sync_problem:",
        )
        if st.button("Reload", icon=":material/refresh:", key=f"{prefix(state)}reload"):
            reload(user)
            st.rerun()
        return
    differs = [
        f"{f.label}: {labels[f.name]}"
        for f in state.findings
        if labels.get(f.name) != state.labels.get(f.name)
    ]
    with st.expander("Your unsaved reading (someone else saved first)", expanded=True):
        st.markdown("Labels that differ from the reading below: " + (fmt.md(", ".join(differs)) or "none"))
        st.markdown("Boxes: " + (fmt.md(", ".join(b.label for b in boxes)) or "none"))
        if note:
            st.markdown(f"Note: {fmt.md(note)}")
        if st.button("Dismiss", key=f"{prefix(state)}dismiss"):
            st.session_state.pop(UNSAVED, None)
            st.rerun()


def history(study_id: int) -> None:
    """Every reading saved for the study, newest first (the first is the current one)."""
    saved = corrections.correction_history(study_id)
    with st.expander(f"Readings saved for this study ({len(saved)})"):
        if not saved:
            st.caption("Nobody has reviewed this film yet.")
            return
        rows: list[dict[str, Any]] = [
            {
                "Saved": fmt.moment(c.created_at),
                "By": c.created_by,
                "Status": (
                    ("amended, signed" if c.amends else "signed")
                    if c.signed
                    else (c.status if c.reviewed else f"draft ({c.status})")
                ),
                "Changed findings": ", ".join(
                    f"{n.replace('_', ' ')}: {c.labels[n]}" for n in c.changed_findings
                ),
                "Boxes": f"{len(c.boxes)}{' (changed)' if c.boxes_changed else ''}",
                "Note": c.note,
                "Amendment reason": c.amend_reason,
            }
            for c in saved
        ]
        st.dataframe(rows, hide_index=True)


def dirty(
    state: EditorState,
    labels: dict[str, str],
    sources: dict[str, str],
    boxes: tuple[CorrectedBox, ...],
    note: str,
) -> bool:
    """Whether the form holds anything not saved yet (labels set, boxes changed or a note typed)."""
    loaded_sources = {n: state.sources.get(n, "model") for n in labels}
    return (
        sources != loaded_sources
        or any(labels[n] != state.labels.get(n) for n in labels if sources[n] != "model")
        or not corrections.same_boxes(boxes, state.boxes)
        or note.strip() != state.note.strip()
    )


def leave_guard(active: bool) -> None:
    """While the form holds unsaved changes: a warning on the page and the browser's own "leave site?"
    question on reload or close (removed again once saved)."""
    if active:
        st.warning(
            "You have unsaved changes: they are kept in this session while you look at other pages, but "
            "nothing is saved until you save, sign or save a draft.",
            icon=":material/edit_note:",
        )
    flag = "true" if active else "false"
    st.iframe(
        "<script>(function(){var w=window.parent;"
        "if(!w.__cxrGuard){w.__cxrGuard=function(e){if(w.__cxrDirty){e.preventDefault();e.returnValue='';}};"
        f"w.addEventListener('beforeunload',w.__cxrGuard);}}w.__cxrDirty={flag};}})();</script>",
        height=1,
    )


# ---------------------------------------------------------------- the review typed but not saved


@dataclass(frozen=True)
class Draft:
    """What the doctor has entered for one loaded reading (``version``) and not saved: each finding's choice
    as the radio holds it, the findings taken from the model's suggestions, the note, the amendment reason
    and the boxes (``None``: as loaded); ``editor_boxes`` are the boxes the editor was restarted with."""

    version: int
    choices: dict[str, str]
    accepted: frozenset[str]
    note: str
    reason: str
    boxes: tuple[CorrectedBox, ...] | None = None
    editor_boxes: tuple[CorrectedBox, ...] | None = None
    restored: bool = False


def _drafts() -> dict[int, Draft]:
    drafts: dict[int, Draft] = st.session_state.setdefault(DRAFTS, {})
    return drafts


def _editor_key(state: EditorState) -> str:
    generation = st.session_state.get(f"{prefix(state)}editor", 0)  # a discard starts a fresh editor
    return f"{prefix(state)}boxes" + (f".{generation}" if generation else "")


def _entered(state: EditorState, draft: Draft | None) -> Draft:
    """The form as the widgets hold it at the end of a run of the page (every widget drawn)."""
    p = prefix(state)
    return Draft(
        version=state.study_version,
        choices={
            f.name: str(st.session_state.get(f"{p}label.{f.name}", _initial(state, f.name)))
            for f in state.findings
        },
        accepted=frozenset(st.session_state.get(f"{p}accepted", ())),
        note=str(st.session_state.get(f"{p}note", state.note)),
        reason=str(st.session_state.get(f"{p}reason", "")),
        boxes=draft.boxes if draft is not None else None,
        editor_boxes=draft.editor_boxes if draft is not None else None,
        restored=draft.restored if draft is not None else False,
    )


def _loaded(state: EditorState) -> Draft:
    """A draft holding exactly the loaded reading (what a first change starts from)."""
    choices = {f.name: _initial(state, f.name) for f in state.findings}
    return Draft(state.study_version, choices, frozenset(), state.note, "")


def _differs(state: EditorState, draft: Draft) -> bool:
    return (
        any(choice != _initial(state, name) for name, choice in draft.choices.items())
        or bool(draft.accepted)
        or draft.note.strip() != state.note.strip()
        or bool(draft.reason.strip())
        or (draft.boxes is not None and not corrections.same_boxes(draft.boxes, state.boxes))
    )


def _current(state: EditorState) -> Draft | None:
    """The study's draft of this very reading, or None; None too for a state no longer on show (a late
    callback of a form saved since, or of another film)."""
    shown = st.session_state.get(STATE)
    if shown is None or (shown.study_id, shown.study_version) != (state.study_id, state.study_version):
        return None
    draft = _drafts().get(state.study_id)
    return draft if draft is not None and draft.version == state.study_version else None


def _store(state: EditorState, draft: Draft) -> None:
    if _differs(state, draft):
        _drafts()[state.study_id] = draft
    else:
        _drafts().pop(state.study_id, None)


def _keep(
    state: EditorState,
    *,
    choices: dict[str, str] | None = None,
    accepted: set[str] | None = None,
    note: str | None = None,
    reason: str | None = None,
) -> None:
    """A widget callback: copy the one value that changed into the draft. Callbacks also run in the run that
    opens another page (the last keystrokes arrive with it), when the other widgets' values may already be
    gone, so only what the browser just sent is taken."""
    shown = st.session_state.get(STATE)
    if shown is None or (shown.study_id, shown.study_version) != (state.study_id, state.study_version):
        return  # a late callback of a form no longer on show (saved since, or another film open)
    draft = _current(state) or _loaded(state)
    _store(
        state,
        replace(
            draft,
            choices={**draft.choices, **(choices or {})},
            accepted=frozenset(accepted) if accepted is not None else draft.accepted,
            note=draft.note if note is None else note,
            reason=draft.reason if reason is None else reason,
        ),
    )


def keep_draft(state: EditorState, boxes: tuple[CorrectedBox, ...]) -> None:
    """At the end of a run of the page (every widget drawn): the whole form, boxes included, into the
    study's draft; no draft while nothing differs from the loaded reading."""
    if st.session_state.get(STATE) is state:
        _store(state, replace(_entered(state, _current(state)), boxes=boxes))


def restore_draft(state: EditorState) -> None:
    """Before the form is drawn: arriving on the page for a film with a draft, write it into the widgets (set
    through the Session State API, so the browser is told too), then say so with a Discard button. A draft
    of an older reading (someone saved since) is listed as unsaved instead."""
    draft = _drafts().get(state.study_id)
    if draft is None:
        return
    p = prefix(state)
    if draft.version != state.study_version:
        labels = {
            f.name: state.model_labels[f.name]
            if draft.choices.get(f.name, NOT_SET) == NOT_SET
            else draft.choices[f.name]
            for f in state.findings
        }
        st.session_state[UNSAVED] = (labels, draft.boxes or state.boxes, draft.note, draft.version)
        _drafts().pop(state.study_id, None)
        return
    if session.arrived():  # coming from another page: the widgets were not drawn since, put the draft back
        for name, choice in draft.choices.items():
            st.session_state[f"{p}label.{name}"] = choice
        st.session_state[f"{p}accepted"] = set(draft.accepted)
        st.session_state[f"{p}note"] = draft.note
        st.session_state[f"{p}reason"] = draft.reason
        st.session_state[f"{p}editor"] = st.session_state.get(f"{p}editor", 0) + 1
        draft = replace(draft, editor_boxes=draft.boxes, restored=True)
        _drafts()[state.study_id] = draft
    if draft.restored:
        told, discard = st.columns([4, 1], vertical_alignment="center")
        told.info(RESTORED_NOTE, icon=":material/restore:")
        discard.button(
            "Discard draft",
            icon=":material/delete:",
            key=f"{p}discard",
            on_click=discard_draft,
            args=(state,),
            width="stretch",
        )


def discard_draft(state: EditorState) -> None:
    """Button callback: forget the draft and start the form again from the loaded reading."""
    _drafts().pop(state.study_id, None)
    p = prefix(state)
    generation = st.session_state.get(f"{p}editor", 0) + 1
    for key in [k for k in st.session_state if str(k).startswith(p)]:
        del st.session_state[key]
    st.session_state[f"{p}editor"] = generation  # a fresh box editor, showing the loaded boxes
