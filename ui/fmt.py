"""How stored values read on screen: codes as words, dates, ages, and user text made safe for markdown.

No Streamlit here: plain functions the pages and widgets share.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

from core.config import get_settings


def label(value: str) -> str:
    """A stored code as a person reads it: 'life-threatening' -> 'Life-threatening'."""
    return value[:1].upper() + value[1:] if value else ""


def day(value: date | None) -> str:
    """ISO dates: unambiguous across the locales of a hospital's staff."""
    return value.isoformat() if value else "—"


def moment(value: datetime | None) -> str:
    """A (UTC stored) timestamp to the minute in the site's time zone (``CXR_TIMEZONE``), labelled with the
    zone so nobody reads it as another one."""
    if value is None:
        return "—"
    zone = get_settings().timezone
    if zone == "UTC":
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return value.astimezone(ZoneInfo(zone)).strftime("%Y-%m-%d %H:%M %Z")


def age_years(born: date, on: date | None = None) -> int:
    """Completed years of age on ``on`` (default: today)."""
    on = on or datetime.now(UTC).date()
    return on.year - born.year - ((on.month, on.day) < (born.month, born.day))


# Characters that start markdown (or Streamlit's :directive[...], :material/icon: and $LaTeX$) anywhere in a
# line, and the markers that only mean something at the start of a line (lists, headings, rules).
_INLINE_MARKUP = re.compile(r"([\\`*_{}\[\]<>#~$:|!^=])")
_LINE_START_MARKUP = re.compile(r"^([ \t]*)([-+]|\d+[.)])", re.MULTILINE)


# Streamlit's markdown (GFM) turns bare URLs, ``www.`` hosts and e-mail addresses into links after the
# escapes are resolved, so escaping cannot stop it: a WORD JOINER (U+2060, invisible, never a line break)
# inside the pattern does ('http:\u2060//x', 'www\u2060.x', 'a@\u2060b.c' show as typed, not as links).
WORD_JOINER = "\u2060"
_AUTOLINK = re.compile(r"(?<=:)(?=//)|(?<=\bwww)(?=\.)|(?<=@)", re.IGNORECASE)


def tiers(likely: tuple[str, ...] | list[str], possible: tuple[str, ...] | list[str]) -> str:
    """How many findings a read shows in each tier, as the result page names them ("1 likely · 8 possible");
    "" when none."""
    parts = [f"{len(names)} {word}" for names, word in ((likely, "likely"), (possible, "possible")) if names]
    return " · ".join(parts)


def unlink(text: str) -> str:
    """``text`` with every would-be autolink (URL, www. host, e-mail address) broken by a word joiner."""
    return _AUTOLINK.sub(WORD_JOINER, text)


def md(text: str) -> str:
    """User-typed text (or any value that came from a file) made safe to embed in markdown: shown as typed,
    never as formatting, links (also bare URLs, ``www.`` hosts and e-mail addresses), icons
    (``:material/...:``) or LaTeX; line breaks kept."""
    escaped = _INLINE_MARKUP.sub(r"\\\1", unlink(text.replace("\r\n", "\n")))
    escaped = _LINE_START_MARKUP.sub(lambda m: m.group(1) + m.group(2)[:-1] + "\\" + m.group(2)[-1], escaped)
    return escaped.replace("\n", "  \n")
