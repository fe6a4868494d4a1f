"""Text that came from elsewhere — the platform's rows, a person's arguments — made safe to show.

A `full_name` of `Eve \\x1b[2J\\x1b]0;owned\\x07` must reach a terminal as those characters, not
clear the screen and retitle the window. Everything shown to people passes through
`printable`; values echoed in error messages pass through `shown`, which also cuts them.
"""

from __future__ import annotations

import re

# C0 controls but tab and newline, DEL, C1 controls, the bidirectional overrides that can make
# a line read differently from what it holds ("Trojan Source"), and lone surrogates (bytes that
# were not UTF-8, which no terminal encoding can print).
_SPECIAL = "\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\ud800-\udfff"
_UNSAFE = re.compile(f"[\x00-\x08\x0b-\x1f{_SPECIAL}]")
_UNSAFE_ALL = re.compile(f"[\x00-\x1f{_SPECIAL}\u2028\u2029]")
_BLANKS = re.compile(r"\s+")


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(text: str, *, newlines: bool = True) -> str:
    """`text` with every control character shown as an escape (`\\x1b`), so it is inert.

    Args:
        text: anything, typically from the database.
        newlines: keep newlines and tabs as they are (multi-line fields); False escapes them too.
    """
    return (_UNSAFE if newlines else _UNSAFE_ALL).sub(_escape, text)


def one_line(text: str) -> str:
    """Whitespace runs (newlines included) folded to one space, then made printable."""
    return printable(_BLANKS.sub(" ", text).strip(), newlines=False)


def cut(text: str, limit: int) -> str:
    """At most `limit` characters, an ellipsis marking a cut."""
    return text if len(text) <= limit else text[: max(limit - 1, 0)] + "…"


def shown(value: object, limit: int = 60) -> str:
    """A value someone gave, for an error message: quoted, printable, and cut to `limit`."""
    text = printable(str(value), newlines=False)
    return repr(cut(text, limit)) if text == str(value) else f"'{cut(text, limit)}'"
