"""Text from outside (mail, another tool's rows, a peer's answer) as the characters a reader
sees: NFKC-normalised (width variants and compatibility forms become the letters they look
like), without control, format, bidi, private-use or unassigned characters, nor the invisible
fillers and joiners that are letters or marks by category. What it leaves is what a person or a
model reads, so a check on the result cannot be dodged with a character nobody can see.

Pure functions; this module must never decide what the text means.
"""

from __future__ import annotations

import unicodedata

__all__ = ["INVISIBLE", "visible_text"]

#: Invisible characters that are not Cc/Cf by category: combining grapheme joiner, Hangul
#: fillers, Khmer inherent vowels, Mongolian variation selectors, variation selectors, the
#: braille blank. (Bidi controls, zero-width spaces and joiners, the soft hyphen, the BOM and
#: tag characters are Cf and go by category.)
INVISIBLE = frozenset(
    [
        *(0x034F, 0x115F, 0x1160, 0x17B4, 0x17B5, 0x2800, 0x3164, 0xFFA0),
        *range(0x180B, 0x1810),
        *range(0xFE00, 0xFE10),
        *range(0xE0100, 0xE01F0),
    ]
)
_DROPPED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn"})
_LINE_BREAKS = frozenset({"\n", "\r", "\u2028", "\u2029", "\x85", "\x0b", "\x0c"})


def visible_text(text: str, *, newlines: bool = True) -> str:
    """``text`` NFKC-normalised, with every line break as ``\\n`` (or a space when
    ``newlines`` is False), tabs kept, and every invisible character dropped. Idempotent:
    the invisible characters go before and after normalising, so nothing they separated can
    compose into something new later."""
    text = _drop_invisible(text.replace("\r\n", "\n"), newlines)
    return _drop_invisible(unicodedata.normalize("NFKC", text), newlines)


def _ascii_table(newlines: bool) -> dict[int, str | None]:
    table: dict[int, str | None] = {c: None for c in [*range(32), 127] if c != 9}
    for c in (10, 11, 12, 13):
        table[c] = "\n" if newlines else " "
    return table


_ASCII_TABLES = {True: _ascii_table(True), False: _ascii_table(False)}


def _drop_invisible(text: str, newlines: bool) -> str:
    if text.isascii():  # the common case, without a Python-level loop
        return text.translate(_ASCII_TABLES[newlines])
    out = []
    for ch in text:
        if ch in _LINE_BREAKS:
            out.append("\n" if newlines else " ")
        elif ch == "\t" or (
            ord(ch) not in INVISIBLE and unicodedata.category(ch) not in _DROPPED_CATEGORIES
        ):
            out.append(ch)
    return "".join(out)
