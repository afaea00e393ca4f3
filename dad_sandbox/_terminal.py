"""Showing run output on a terminal without letting it drive the terminal.

A run's output may hold escape sequences: clear the screen, move the cursor to overwrite earlier
lines (forging a status line), set the window title, or write the clipboard (OSC 52). Everything
dad-sandbox prints for a human from run data goes through :func:`printable`, which makes every
control character visible (``\\x1b``) and keeps the rest as it was; ``--json`` output is never
changed (JSON escapes control characters itself).
"""

from __future__ import annotations

import re

# C0 controls except tab and newline, DEL, the C1 controls (U+0080-U+009F: \x9b is a CSI), and the
# invisible characters that reorder or break what is shown: bidi marks, embeddings, overrides and
# isolates (U+200E-F, U+202A-E, U+2066-9), line and paragraph separators (U+2028-9).
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u200e\u200f\u2028-\u202e\u2066-\u2069]")


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(text: str, *, keep_newlines: bool = True) -> str:
    """``text`` with every control character (but tab and, unless told, newline) shown escaped."""
    out = _CONTROL.sub(_escape, text)
    return out if keep_newlines else out.replace("\n", "\\n")
