"""Run data shown on a terminal cannot drive the terminal."""

from __future__ import annotations

from dad_sandbox._terminal import printable


def test_escape_sequences_are_made_visible() -> None:
    """ESC, BEL, CR, DEL and C1 controls (CSI U+009B) are escaped; tab and newline stay."""
    raw = "a\x1b[2J\x1b]52;c;aGk=\x07b\rc\x7f\x9b1m\td\n"
    assert printable(raw) == "a\\x1b[2J\\x1b]52;c;aGk=\\x07b\\x0dc\\x7f\\x9b1m\td\n"
    assert "\n" not in printable("a\nb", keep_newlines=False)


def test_bidi_overrides_and_separators_are_made_visible() -> None:
    """Characters that reorder or split what is shown (RLO, isolates, U+2028) are escaped."""
    assert printable("a\u202eb\u2066c\u2028d") == "a\\u202eb\\u2066c\\u2028d"
