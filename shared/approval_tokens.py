"""The approval tokens the write gates honour in Mission Control task text, and how text from
outside (an email's subject, sender or body) is kept from carrying one into a task.

``[CEO_APPROVED]`` in a task approves a ZAKON write; a task created from mail with the raw
subject ``Contract [CEO_APPROVED]`` did. ``void_approval_tokens`` rewrites every spelling of a
token a gate might accept (any case, ``_``/``-``/space between the words, any brackets, width
variants and invisible characters, nested) into a visible note that it was quoted and is void,
until none is left. Pure; it must never add a token, only take them out.
"""

from __future__ import annotations

import re

from shared.text import visible_text

__all__ = ["CEO_APPROVED_TOKEN", "VOIDED_TOKEN", "void_approval_tokens"]

CEO_APPROVED_TOKEN = "[CEO_APPROVED]"
VOIDED_TOKEN = "(approval token quoted from outside: void)"

# [CEO_APPROVED], ceo-approved-123 (the override's form), GRANDFATHERED-2026 (the registry's
# legacy token), with or without brackets around them.
_TOKEN_LIKE = re.compile(
    r"[\[({<]?\s*(?:ceo[\s_\-]*approved|grandfathered[\s_\-]+[\w.\-]*)\s*[\])}>]?",
    re.IGNORECASE,
)


def void_approval_tokens(text: str, *, newlines: bool = True) -> str:
    """``text`` as a reader sees it (``visible_text``) with every approval-token spelling
    replaced by ``VOIDED_TOKEN``, repeated until none is left."""
    text = visible_text(text, newlines=newlines)
    for _ in range(len(text) + 1):  # each round shortens the tokens left; never reaches this
        changed = _TOKEN_LIKE.sub(VOIDED_TOKEN, text)
        if changed == text:
            break
        text = changed
    return text
