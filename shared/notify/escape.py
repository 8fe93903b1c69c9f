"""The one escaping function for text we did not write that goes into a Slack message: a
sender's name, address or domain, a subject, an account, a URL, a model name, a file path, a
lease holder, another tool's error text.

``slack_text`` makes such a field inert and keeps it readable:
- invisible characters go (``shared.text.visible_text``: bidi controls such as U+202E, zero-width
  characters, NUL, the soft hyphen), width variants are normalised, and the field is one line;
- it is cut to ``limit`` characters (an ellipsis says so);
- ``&``, ``<`` and ``>`` are escaped as Slack's formatting reference asks, so no control sequence
  survives: no ``<!channel>``, ``<!here>``, ``<!everyone>``, ``<@U…>``, ``<#C…>``,
  ``<!subteam^…>``, and no ``<url|label>`` link whose label lies about its target;
- bare URLs and domains are defanged, the way security tools quote indicators: a scheme's
  ``://`` becomes ``[:]//`` (``http`` becomes ``hxxp``) and every dot before a letter becomes
  ``[.]`` (``https://evil.example/x`` -> ``hxxps[:]//evil[.]example/x``, ``ceo@example.com`` ->
  ``ceo@example[.]com``), so Slack links nothing a sender chose;
- ``@channel``, ``@here`` and ``@everyone`` lose their ``@`` to a fullwidth ``＠``.
Defanging rather than code spans: it reads the same in every Slack client, in the HiveMind and
in a copy-paste, and needs no trust in how a client treats links inside code.

A function of one string; it must never be applied twice to the same text (``&amp;`` would
show as ``&amp;``) nor to text the fleet wrote itself (its own links and commands stay live).
"""

from __future__ import annotations

import re

from shared.text import visible_text

__all__ = ["slack_text"]

_SCHEME = re.compile(r"(?i)(h)tt(ps?)://|://")
_DOT_BEFORE_LETTER = re.compile(r"(?<=[^\W_])\.(?=[^\W\d_])")
_BROADCAST = re.compile(r"(?i)@(?=channel|here|everyone)")


def _defang_scheme(match: re.Match[str]) -> str:
    if match.group(1) is None:
        return "[:]//"
    return f"{match.group(1)}xx{match.group(2)}[:]//"


def slack_text(untrusted: object, limit: int = 200) -> str:
    """``untrusted`` as inert, readable, one-line Slack text of at most about ``limit``
    characters before escaping (see the module doc)."""
    # A cut before normalising bounds the work (a 300 kB subject); padding of invisible
    # characters can only make the field shorter than ``limit``, never longer.
    text = str(untrusted)
    raw = text[: limit * 4 + 16]
    flat = " ".join(visible_text(raw, newlines=False).split())
    if len(flat) > limit or len(raw) < len(text):
        flat = flat[: max(0, limit - 1)].rstrip() + "…"
    flat = _SCHEME.sub(_defang_scheme, flat)
    flat = _DOT_BEFORE_LETTER.sub("[.]", flat)
    flat = _BROADCAST.sub("\uff20", flat)
    return flat.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
