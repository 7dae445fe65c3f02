"""User-supplied text in Streamlit markdown, shown verbatim.

Streamlit renders markdown (CommonMark + GFM, KaTeX math, its own ``:color[...]`` /
``:material/icon:`` / ``:emoji:`` directives) in ``st.markdown``, ``st.caption``, ``st.info`` /
``warning`` / ``error`` / ``success``, ``st.toast``, ``st.write(str)``, titles and headers, expander
titles, widget labels and ``help=`` tooltips, radio options, tab labels, ``st.progress`` text,
``st.metric`` labels *and values*, and ``st.table`` cells. A robot, task, user, token label,
file name or job error holding ``![x](http://evil.example/t.png)`` would load an outside image
from the supervisor's browser (a beacon), ``[click](http://evil.example)`` would make a link
that looks like ours, ``**``, ``#``, ``|``, backticks or ``:red[...]`` would garble the page.

``md(value)`` escapes a value for any of those, with backslashes (CommonMark shows an escaped
ASCII punctuation character as itself):

- everywhere: ``\ ` * _ { } [ ] ( ) # | < > ~ $ & !`` (emphasis, code, links and images,
  HTML and autolinks, tables, strike-through, math, entities), and ``:`` unless a space follows
  (Streamlit's ``:red[...]`` directives, ``:material/icon:`` and ``:emoji:`` need a name after
  it; "iteration 50: greedy" stays as typed);
- at the start only: ``- + =`` and the ``.`` after leading digits (a list, a setext heading
  or a thematic break; mid-line these mean nothing, so names such as ``robot-0`` or figures
  such as ``0.77`` stay as typed in the markdown source);
- line breaks and tabs become spaces (a label is one line; a new line could start a heading, a
  list or a table row), other control characters are dropped. ``multiline=True`` keeps lines
  as markdown hard breaks, each line escaped on its own (so each gets the start rule).

Escapes do not stop what Streamlit finds in the text after escapes are resolved: GFM's bare
``http://``, ``www.`` and e-mail autolinks, ``:emoji:`` shortcodes and ``:material/icon:``
icons (remark-emoji, loaded whenever the source holds a ``:name:``, e.g. in our own text). So
an invisible word joiner (U+2060) also goes after ``http``/``https``/``www``, before ``@`` and
after a ``:`` that a non-space follows.

Checked in Chromium against Streamlit 1.67 (tests/security/test_ui_text.py pins the rules):
after ``md`` no link, image (no request leaves the page), KaTeX, emphasis, inline code, heading,
list, quote, table, HTML, entity, colored text, material icon or emoji is rendered, in any of
the elements above, even beside our own ``:emoji:``; the text reads as typed.

Not for selectbox / multiselect ``format_func`` output: options there are plain text in 1.67
(escapes would show as backslashes). Where a value is shown alone, ``st.text``, ``st.code`` or
``st.dataframe`` (never markdown) is better than escaping.
"""
from __future__ import annotations

import re
from typing import Any

SPECIAL = "\\`*_{}[]()#|<>~$&!"
"""Escaped wherever they are; ``:`` unless a space follows; ``- + =`` and a digit run's ``.`` at
the start only."""
_SPECIAL = re.compile("([" + re.escape(SPECIAL) + "]|:(?!\\s))")
_START = re.compile(r"^(\s*)(?:([-+=])|(\d{1,9})([.]))")
_BREAKS = re.compile("[\r\n\t\v\f\x85\u2028\u2029]+")
_CONTROL = re.compile("[\x00-\x1f\x7f]")
_LINES = re.compile("\r\n|[\r\n\v\f\x85\u2028\u2029]")
# Autolinks, emoji and icons are found in the parsed text, after escapes are resolved: a word
# joiner (U+2060, invisible) after "http"/"https"/"www", before "@" and after ":" breaks them up.
_AUTOLINK = re.compile(r"(?i)(?<=https)(?=:)|(?<=http)(?=:)|(?<=www)(?=\.)|(?=@)|(?<=:)(?!\s)")
WORD_JOINER = "\u2060"


def md(value: Any, *, multiline: bool = False) -> str:
    """``value`` (any object; None is empty) as markdown that renders as its exact text, on one
    line; ``multiline=True`` keeps its lines (a message listing problems), each shown as typed."""
    text = "" if value is None else str(value)
    if multiline:
        return "  \n".join(md(line) for line in _LINES.split(text))
    text = _CONTROL.sub("", _BREAKS.sub(" ", text))
    text = _SPECIAL.sub(r"\\\1", _AUTOLINK.sub(WORD_JOINER, text))
    return _START.sub(lambda m: m.group(1) + (f"\\{m.group(2)}" if m.group(2) else f"{m.group(3)}\\."), text)
