"""Document schemas and the liveness policy: which files are blueprints, DEPLOY-MAPs or ZAKON
rules, which sections each must have, and how old its ``Last-Verified`` date may be.

Pure functions over text and a date (the DEPLOY-BLUEPRINT v2 §4 schema: five required
sections, so a blueprint scores n/5; a ``Last-Verified: YYYY-MM-DD`` no older than 30 days).
Standard library only, because the pre-write hook path imports it. It must never read files,
look at the clock or trust the document: headings inside code fences do not count, and a
malformed date is a finding, never an exception.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

__all__ = [
    "DEFAULT_BLUEPRINT_SECTIONS",
    "DEFAULT_DOC_TYPES",
    "DOC_TYPE_NAMES",
    "REASONS",
    "SECTION_PATTERN_FLAGS",
    "DocType",
    "DocVerdict",
    "DocumentFacts",
    "SchemaError",
    "doc_types_from_settings",
    "glob_regex",
    "judge_document",
    "match_doc_type",
    "parse_document",
]

DEFAULT_BLUEPRINT_SECTIONS: tuple[str, ...] = (
    "Purpose",
    "Architecture",
    "Deploy",
    "Rollback",
    "Verification",
)
DEFAULT_MAX_AGE_DAYS = 30

# Every reason a file can be non-compliant (the `reason` label of the metrics: a closed set).
REASONS: tuple[str, ...] = (
    "schema",  # fewer required sections than the schema names
    "stale",  # Last-Verified older than max_age_days
    "missing_last_verified",
    "invalid_last_verified",  # not a real date, or in the future
    "unregistered",  # ZAKON file without a registry entry
    "not_approved",  # registry entry with a wrong status, token or MC task
    "changed",  # hash differs from the registry's published_sha256
    "registry_error",  # the registry is missing or unparseable (fail closed)
    "unreadable",
    "not_utf8",
    "symlink_loop",
    "too_large",
    "outside_root",  # a symlink leaving the scan roots, not followed
)

DOC_TYPE_NAMES: tuple[str, ...] = ("blueprint", "deploy-map", "zakon")


# Section patterns match a heading's text case-insensitively (the config validates them so).
SECTION_PATTERN_FLAGS = re.IGNORECASE


class SchemaError(ValueError):
    """A schema setting is unusable (a heading pattern that is not a regex, a bad glob)."""


@dataclass(frozen=True)
class DocType:
    """One kind of document: where it lives (globs relative to a scan root), the sections it
    must have (regexes matched at the start of a heading's text, case-insensitive) and the
    maximum age of its Last-Verified date (0: no Last-Verified required). ``registry``: its
    files must be registered in the ZAKON registry."""

    name: str
    globs: tuple[str, ...]
    sections: tuple[str, ...]
    max_age_days: int
    registry: bool = False
    _patterns: tuple[re.Pattern[str], ...] = field(default=(), repr=False, compare=False)
    _glob_res: tuple[re.Pattern[str], ...] = field(default=(), repr=False, compare=False)

    def __post_init__(self) -> None:
        try:
            patterns = tuple(re.compile(p, SECTION_PATTERN_FLAGS) for p in self.sections)
        except re.error as exc:
            raise SchemaError(f"{self.name}: bad section pattern: {exc}") from None
        object.__setattr__(self, "_patterns", patterns)
        object.__setattr__(self, "_glob_res", tuple(glob_regex(g) for g in self.globs))

    @property
    def patterns(self) -> tuple[re.Pattern[str], ...]:
        return self._patterns

    def matches(self, rel_path: str) -> bool:
        """Does the root-relative POSIX path ``rel_path`` fall under one of the globs?"""
        return any(r.fullmatch(rel_path) for r in self._glob_res)


def _setting_prefix(name: str) -> str:
    return name.replace("-", "_")


def doc_types_from_settings(settings: Mapping[str, Any]) -> tuple[DocType, ...]:
    """The three document types from flat settings (``blueprint_globs``,
    ``deploy_map_sections``, ``zakon_max_age_days``...), defaults for keys not given.
    Shared by the pydantic section and the stdlib hook path so both judge alike."""
    out = []
    for default in DEFAULT_DOC_TYPES:
        prefix = _setting_prefix(default.name)
        globs = settings.get(f"{prefix}_globs", default.globs)
        sections = settings.get(f"{prefix}_sections", default.sections)
        max_age = settings.get(f"{prefix}_max_age_days", default.max_age_days)
        if not _str_list(globs):
            raise SchemaError(f"{prefix}_globs must be a list of strings")
        if not _str_list(sections):
            raise SchemaError(f"{prefix}_sections must be a list of strings")
        if isinstance(max_age, bool) or not isinstance(max_age, int) or max_age < 0:
            raise SchemaError(f"{prefix}_max_age_days must be an integer >= 0")
        out.append(DocType(default.name, tuple(globs), tuple(sections), max_age, default.registry))
    return tuple(out)


def _str_list(value: Any) -> bool:
    return isinstance(value, list | tuple) and all(isinstance(v, str) for v in value)


def glob_regex(pattern: str) -> re.Pattern[str]:
    """Compile a path glob for root-relative POSIX paths: ``**/`` is any number of
    directories (including none), ``*`` and ``?`` stay within one path segment, ``[...]`` is a
    character class."""
    if pattern.startswith("/") or not pattern:
        raise SchemaError(f"glob {pattern!r} must be relative to a scan root")
    out: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if pattern.startswith("**/", i):
            out.append("(?:[^/]+/)*")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif c == "*":
            out.append("[^/]*")
            i += 1
        elif c == "?":
            out.append("[^/]")
            i += 1
        elif c == "[":
            end = pattern.find("]", i + 2)
            if end < 0:
                out.append(re.escape(c))
                i += 1
                continue
            body = pattern[i + 1 : end]
            if body.startswith("!"):
                body = "^" + body[1:]
            out.append(f"[{body.replace(chr(92), chr(92) * 2)}]")
            i = end + 1
        else:
            out.append(re.escape(c))
            i += 1
    try:
        return re.compile("".join(out))
    except re.error as exc:
        raise SchemaError(f"bad glob {pattern!r}: {exc}") from None


DEFAULT_DOC_TYPES: tuple[DocType, ...] = (
    DocType(
        "blueprint", ("**/BUILD-BLUEPRINT.md",), DEFAULT_BLUEPRINT_SECTIONS, DEFAULT_MAX_AGE_DAYS
    ),
    DocType("deploy-map", ("**/DEPLOY-MAP.md",), DEFAULT_BLUEPRINT_SECTIONS, DEFAULT_MAX_AGE_DAYS),
    DocType("zakon", ("rules/zakon-*.md",), (), 0, registry=True),
)


def match_doc_type(rel_path: str, doc_types: Iterable[DocType]) -> DocType | None:
    for doc_type in doc_types:
        if doc_type.matches(rel_path):
            return doc_type
    return None


# --- parsing -------------------------------------------------------------------------------

_FENCE_RE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_ATX_RE = re.compile(r"^ {0,3}(#{1,6})(?:[ \t]+(.*?))?[ \t]*$")
_SETEXT_RE = re.compile(r"^ {0,3}(=+|-+)[ \t]*$")
_CLOSING_HASHES_RE = re.compile(r"(?:^|[ \t]+)#+$")
_NUMBERING_RE = re.compile(r"^(?:§\s*)?\d+(?:\.\d+)*[.)]?\s+")
_EMPHASIS_RE = re.compile(r"[*_`]+")
_LAST_VERIFIED_RE = re.compile(
    r"^\s*(?:[-*+>]\s+)?(?:\*\*|__)?last[-_ ]verified(?:\*\*|__)?\s*:\s*(?:\*\*|__)?\s*"
    r"(?P<value>[^\s*_]+)",
    re.IGNORECASE,
)
_DATE_RE = re.compile(r"^(\d{4})-(\d{2})-(\d{2})$")


@dataclass(frozen=True)
class DocumentFacts:
    """What a document says about itself: its headings (level, text) and the raw
    Last-Verified value (None: no such field)."""

    headings: tuple[tuple[int, str], ...]
    last_verified_raw: str | None


def _front_matter(lines: Sequence[str]) -> tuple[list[str], int]:
    """(front-matter lines, index of the first body line); no front matter: ([], 0)."""
    if not lines or lines[0].strip() != "---":
        return [], 0
    for index in range(1, min(len(lines), 200)):
        if lines[index].strip() in ("---", "..."):
            return list(lines[1:index]), index + 1
    return [], 0


def _heading_text(raw: str) -> str:
    text = _CLOSING_HASHES_RE.sub("", raw.strip()).strip()
    text = _EMPHASIS_RE.sub("", text).strip()
    return _NUMBERING_RE.sub("", text).strip()


def parse_document(text: str) -> DocumentFacts:
    """Headings outside code fences (ATX ``## X`` and setext underlines) and the
    Last-Verified field from the front matter, else from the first body line carrying it."""
    lines = text.splitlines()
    front, start = _front_matter(lines)
    last_verified: str | None = None
    for line in front:
        m = _LAST_VERIFIED_RE.match(line)
        if m:
            last_verified = m.group("value").strip("\"'")
            break
    headings: list[tuple[int, str]] = []
    fence: str | None = None
    previous: str | None = None  # the paragraph line a setext underline would promote
    for line in lines[start:]:
        fence_match = _FENCE_RE.match(line)
        if fence is not None:
            if (
                fence_match
                and fence_match.group(1)[0] == fence[0]
                and len(fence_match.group(1)) >= len(fence)
            ):
                fence = None
            continue
        if fence_match:
            fence = fence_match.group(1)
            previous = None
            continue
        atx = _ATX_RE.match(line)
        if atx:
            headings.append((len(atx.group(1)), _heading_text(atx.group(2) or "")))
            previous = None
            continue
        setext = _SETEXT_RE.match(line)
        if setext and previous is not None:
            headings.append((1 if setext.group(1)[0] == "=" else 2, _heading_text(previous)))
            previous = None
            continue
        if last_verified is None:
            m = _LAST_VERIFIED_RE.match(line)
            if m:
                last_verified = m.group("value")
        stripped = line.strip()
        previous = stripped if stripped and not line.startswith(("    ", "\t")) else None
    return DocumentFacts(tuple(headings), last_verified)


# --- judging -------------------------------------------------------------------------------


@dataclass(frozen=True)
class DocVerdict:
    """How one document measures up: ``found``/``required`` sections (the n/5 score), the
    sections missing, its Last-Verified date and age, and each reason it is non-compliant
    as (reason, human detail)."""

    found: int
    required: int
    missing: tuple[str, ...]
    last_verified: date | None
    age_days: int | None
    reasons: tuple[tuple[str, str], ...]

    @property
    def score(self) -> str:
        return f"{self.found}/{self.required}"

    @property
    def compliant(self) -> bool:
        return not self.reasons


def _parse_date(raw: str) -> date | None:
    m = _DATE_RE.match(raw)
    if not m:
        return None
    try:
        return date(int(m.group(1)), int(m.group(2)), int(m.group(3)))
    except ValueError:
        return None


def judge_document(facts: DocumentFacts, doc_type: DocType, today: date) -> DocVerdict:
    """Score ``facts`` against ``doc_type`` on ``today`` (UTC). Headings from level 2 down
    count (level 1 is the title)."""
    texts = [text for level, text in facts.headings if level >= 2]
    missing = tuple(
        label
        for label, pattern in zip(doc_type.sections, doc_type.patterns, strict=True)
        if not any(pattern.match(text) for text in texts)
    )
    required = len(doc_type.sections)
    found = required - len(missing)
    reasons: list[tuple[str, str]] = []
    if missing:
        reasons.append(
            ("schema", f"schema {found}/{required}: missing section(s) {', '.join(missing)}")
        )
    verified: date | None = None
    age: int | None = None
    raw = facts.last_verified_raw
    if raw is not None:
        verified = _parse_date(raw)
        if verified is not None:
            age = (today - verified).days
    if doc_type.max_age_days > 0:
        if raw is None:
            reasons.append(
                ("missing_last_verified", "no 'Last-Verified: YYYY-MM-DD' field or line")
            )
        elif verified is None:
            reasons.append(
                # The value is not quoted: findings name the rule, never the file's text.
                ("invalid_last_verified", "Last-Verified is not a YYYY-MM-DD date")
            )
        elif verified > today + timedelta(days=1):
            reasons.append(
                ("invalid_last_verified", f"Last-Verified {verified.isoformat()} is in the future")
            )
        elif age is not None and age > doc_type.max_age_days:
            reasons.append(
                (
                    "stale",
                    f"last verified {verified.isoformat()}, {age} days ago "
                    f"(max {doc_type.max_age_days})",
                )
            )
    return DocVerdict(found, required, missing, verified, age, tuple(reasons))
