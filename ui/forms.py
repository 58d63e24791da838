"""Forms with per-field validation messages, and the add / edit / remove editor used by the record tabs.

The services validate (``core.validation``) and raise ``ValidationError`` with a message per field; this
module only shows those messages under the matching widget. Widget values live under stable keys in
``st.session_state``, so after a rejected or conflicting save the form comes back with everything the user
typed. Choices (allergy kinds, severities, ...) are passed in from the service layer, never spelled here.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from functools import partial
from typing import Any, Generic, Literal, NoReturn, Protocol, TypeVar

import streamlit as st
from sqlalchemy.exc import SQLAlchemyError

from core import failures
from core.errors import AppError, ConflictError, ValidationError
from core.validation import EARLIEST_DATE, latest_today
from ui import fmt, session

log = logging.getLogger(__name__)

#: A form's typed values survive a run that does not draw it (the database was down, a failure stopped the
#: page): Streamlit otherwise forgets the value of a widget a run leaves out.
KEEP: Literal["session"] = "session"

FORM_ERROR = "__form__"  # key of a message about the whole form (NotFound, PermissionDenied)
CONFLICT = "This record was changed by someone else — reload to see the latest version."


@dataclass(frozen=True)
class Field:
    """One input of a form; ``name`` is the service's field name (and the key of its error message)."""

    name: str
    label: str
    kind: Literal["text", "area", "date", "choice"] = "text"
    options: tuple[str, ...] = ()
    required: bool = False  # only marks the label; the service decides
    today_default: bool = False  # date fields start empty unless today is the likely answer
    placeholder: str | None = None
    choose: bool = False  # a choice with no default: the user must pick one (e.g. an allergy's severity)


def _key(form: str, field: str) -> str:
    return f"{form}.{field}"


def errors(form: str) -> dict[str, str]:
    """The field errors of the last rejected submit of ``form``."""
    return st.session_state.get(f"{form}.__errors", {})


def set_errors(form: str, field_errors: Mapping[str, str] | None) -> None:
    if field_errors:
        st.session_state[f"{form}.__errors"] = dict(field_errors)
    else:
        st.session_state.pop(f"{form}.__errors", None)


def prime(form: str, fields: Sequence[Field], values: Mapping[str, Any]) -> None:
    """Load ``values`` into the form's widgets (when an edit starts); later reruns keep what is typed."""
    for f in fields:
        st.session_state[_key(form, f.name)] = values.get(f.name)
    set_errors(form, None)


def reset(form: str, fields: Sequence[Field]) -> None:
    """Forget the form's values and errors (after a successful save)."""
    for f in fields:
        st.session_state.pop(_key(form, f.name), None)
    set_errors(form, None)


def inputs(form: str, fields: Sequence[Field]) -> dict[str, Any]:
    """Render ``fields`` (inside an open ``st.form``), each with its error message under it."""
    errs = errors(form)
    values: dict[str, Any] = {}
    for f in fields:
        key = _key(form, f.name)
        text = f.label + (" *" if f.required else "")
        if f.kind == "text":
            st.session_state.setdefault(key, "")
            values[f.name] = st.text_input(text, key=key, placeholder=f.placeholder, persist_state=KEEP)
        elif f.kind == "area":
            st.session_state.setdefault(key, "")
            values[f.name] = st.text_area(
                text, key=key, placeholder=f.placeholder, height=100, persist_state=KEEP
            )
        elif f.kind == "choice":
            st.session_state.setdefault(key, None if f.choose else f.options[0])
            values[f.name] = st.selectbox(
                text, f.options, key=key, format_func=fmt.label, persist_state=KEEP, placeholder="Choose…"
            )
        else:
            # The widget's own bounds already refuse most impossible dates; the service re-checks.
            st.session_state.setdefault(key, date.today() if f.today_default else None)
            values[f.name] = st.date_input(
                text,
                key=key,
                min_value=EARLIEST_DATE,
                max_value=latest_today(),
                format="YYYY-MM-DD",
                persist_state=KEEP,
            )
        if f.name in errs:
            st.markdown(f":red[:material/error: {fmt.md(errs[f.name])}]")
    # Errors about fields this form does not show (should not happen, but never hide a refusal).
    for name, message in errs.items():
        if name not in values:
            st.error(message, icon=":material/error:")
    return values


def submit(
    form: str,
    action: Callable[[], object],
    *,
    done: str,
    fields: Sequence[Field] = (),
    after: Callable[[Any], None] | None = None,
) -> NoReturn:
    """Run one service call for ``form``, then rerun.

    Success: forget the form, run ``after`` on the action's result, flash ``done`` and have the record
    page reload the record.
    Refusal: keep every typed value and show why next to the form (per field, or the conflict notice);
    so too for a full disk or an unreachable or locked database (``core.failures``: one sentence, no trace).
    """
    try:
        result = action()
    except ValidationError as exc:
        set_errors(form, exc.errors)
    except ConflictError:
        st.session_state[f"{form}.__conflict"] = True
    except AppError as exc:  # NotFound, PermissionDenied: their messages are written for the user
        set_errors(form, {FORM_ERROR: str(exc)})
    except (OSError, SQLAlchemyError) as exc:  # disk or database failure: one sentence, the form kept
        message = failures.describe(exc, "This could not be saved")
        if message is None:
            raise
        log.warning("%s: %s (%s)", form, failures.reason(exc), type(exc).__name__)
        set_errors(form, {FORM_ERROR: message})
    else:
        reset(form, fields)
        clear_conflict(form)
        session.flash(done)
        session.mark_record_stale()
        if after is not None:
            after(result)  # may switch page
    st.rerun()


def notices(form: str) -> None:
    """Show the refusal of a form that has no fields of its own (a remove button)."""
    if conflict(form) and st.button("Reload", key=f"{form}.reload", icon=":material/refresh:"):
        clear_conflict(form)
        session.mark_record_stale()
        st.rerun()
    if message := errors(form).get(FORM_ERROR):
        st.error(message, icon=":material/error:")


def conflict(form: str) -> bool:
    """Show the conflict notice for ``form`` if its last save lost a race; True when shown."""
    if not st.session_state.get(f"{form}.__conflict"):
        return False
    st.warning(CONFLICT, icon=":material/sync_problem:")
    return True


def clear_conflict(form: str) -> None:
    st.session_state.pop(f"{form}.__conflict", None)


def start_edit(
    form: str, fields: Sequence[Field], values: Mapping[str, Any], version: int, item_id: int | None = None
) -> NoReturn:
    """Open ``form`` on the values the user sees, remembering their version (and entry) for the save."""
    prime(form, fields, values)
    clear_conflict(form)
    st.session_state[f"{form}.__base"] = version
    st.session_state[f"{form}.__id"] = item_id
    st.session_state.pop(f"{form}.__rebased", None)
    st.rerun()


def editing(form: str) -> bool:
    """Whether an edit of ``form`` is open."""
    return f"{form}.__base" in st.session_state


def editing_id(form: str) -> int | None:
    """The entry an open edit of ``form`` is about."""
    return st.session_state.get(f"{form}.__id") if editing(form) else None


def stop_edit(form: str, fields: Sequence[Field]) -> None:
    reset(form, fields)
    clear_conflict(form)
    for suffix in ("__base", "__id", "__rebased"):
        st.session_state.pop(f"{form}.{suffix}", None)


def edit_form(
    form: str,
    fields: Sequence[Field],
    *,
    latest_version: int,
    show_latest: Callable[[], object],
    save: Callable[[Any, int], object],
    make: Callable[..., object],
    done: str,
) -> None:
    """An open edit: the form, Save / Cancel, and the optimistic-locking dance.

    The save sends the version the edit started from. If someone else saved in between, the service
    refuses (``ConflictError``): the notice appears, the typed values stay, and "Reload" fetches the
    latest record, shows it above the form and rebases the edit on it, so the next save is deliberate.
    """
    base = st.session_state[f"{form}.__base"]
    if base is None:  # the record was just reloaded after a conflict
        base = st.session_state[f"{form}.__base"] = latest_version
        st.session_state[f"{form}.__rebased"] = True
    if conflict(form) and st.button("Reload", key=f"{form}.reload", icon=":material/refresh:"):
        st.session_state[f"{form}.__base"] = None
        clear_conflict(form)
        session.mark_record_stale()
        st.rerun()
    if st.session_state.get(f"{form}.__rebased"):
        with st.container(border=True):
            st.caption("Latest saved version — your unsaved changes are in the form below")
            show_latest()
    with st.form(f"{form}.form", border=False):
        values = inputs(form, fields)
        save_col, cancel_col = st.columns(2)
        submitted = save_col.form_submit_button("Save", type="primary", icon=":material/save:")
        cancelled = cancel_col.form_submit_button("Cancel")
    if cancelled:
        stop_edit(form, fields)
        st.rerun()
    if submitted:
        submit(
            form,
            lambda: save(make(**values), base),
            done=done,
            fields=fields,
            after=lambda _result: stop_edit(form, fields),
        )


class Versioned(Protocol):
    @property
    def id(self) -> int: ...
    @property
    def version(self) -> int: ...


Item = TypeVar("Item", bound=Versioned)


@dataclass(frozen=True)
class ListEditor(Generic[Item]):
    """Add / edit / remove for one kind of record entry (visits, allergies, conditions).

    ``add``, ``update`` and ``remove`` are the service calls with the patient and user already bound;
    ``update``/``remove`` get the version the user saw, so a concurrent change raises ``ConflictError``
    instead of silently overwriting it.
    """

    name: str  # "allergy": form keys and button labels
    fields: tuple[Field, ...]
    make_input: Callable[..., object]  # the service's input dataclass, built from the field values
    describe: Callable[[Item], str]  # one markdown line per entry
    add: Callable[[Any], object]
    update: Callable[[int, Any, int], object]
    remove: Callable[[int, int], None]

    def render(self, items: Sequence[Item], empty: str) -> None:
        key = f"{session.RECORD_KEYS}{self.name}"
        edited = editing_id(f"{key}.edit")
        removing = st.session_state.get(f"{key}.__removing")  # (id, version shown when asked)
        notices(f"{key}.remove")
        if not items:
            st.caption(empty)
        if edited is not None and all(item.id != edited for item in items):
            self._vanished(key)
        for item in items:
            with st.container(border=True):
                if item.id == edited:
                    edit_form(
                        f"{key}.edit",
                        self.fields,
                        latest_version=item.version,
                        show_latest=partial(st.markdown, self.describe(item)),
                        save=partial(self.update, item.id),
                        make=self.make_input,
                        done=f"{fmt.label(self.name)} saved.",
                    )
                    continue
                text_col, actions = st.columns([3, 1], vertical_alignment="center")
                text_col.markdown(self.describe(item))
                buttons = actions.container(horizontal=True, horizontal_alignment="right")
                if buttons.button("Edit", key=f"{key}.edit.{item.id}", icon=":material/edit:"):
                    values = {f.name: getattr(item, f.name) for f in self.fields}
                    start_edit(f"{key}.edit", self.fields, values, item.version, item.id)
                if buttons.button("Remove", key=f"{key}.remove.{item.id}", icon=":material/delete:"):
                    st.session_state[f"{key}.__removing"] = (item.id, item.version)
                    st.rerun()
                if removing and removing[0] == item.id:
                    self._confirm_remove(key, *removing)
        form = f"{key}.add"
        with (
            st.expander(f"Add {self.name}", icon=":material/add:", expanded=bool(errors(form))),
            st.form(f"{form}.form", border=False),
        ):
            values = inputs(form, self.fields)
            submitted = st.form_submit_button(f"Add {self.name}", type="primary", icon=":material/add:")
        if submitted:
            submit(
                form,
                lambda: self.add(self.make_input(**values)),
                done=f"{fmt.label(self.name)} added.",
                fields=self.fields,
            )

    def _vanished(self, key: str) -> None:
        """The entry being edited was removed by someone else: say so and give back what was typed."""
        form = f"{key}.edit"
        typed = {f.label: st.session_state.get(_key(form, f.name)) for f in self.fields}
        st.warning(
            f"The {self.name} you were editing was removed by someone else. What you typed:",
            icon=":material/sync_problem:",
        )
        st.json({label: str(value) for label, value in typed.items() if value not in (None, "")})
        if st.button("Dismiss", key=f"{form}.dismiss"):
            stop_edit(form, self.fields)
            st.rerun()

    def _confirm_remove(self, key: str, item_id: int, version: int) -> None:
        st.warning(f"Remove this {self.name} from the record?", icon=":material/delete:")
        yes, no = st.columns(2)
        if yes.button(f"Yes, remove {self.name}", key=f"{key}.remove.yes", type="primary"):
            st.session_state.pop(f"{key}.__removing", None)
            submit(
                f"{key}.remove",
                lambda: self.remove(item_id, version),
                done=f"{fmt.label(self.name)} removed.",
            )
        if no.button("Keep it", key=f"{key}.remove.no"):
            st.session_state.pop(f"{key}.__removing", None)
            st.rerun()
