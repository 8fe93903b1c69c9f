"""The pure schema/liveness policy: headings, Last-Verified, scores, globs (table-driven)."""

from __future__ import annotations

from datetime import date

import pytest

from daemons.blueprint_watchdog.schema import (
    DEFAULT_DOC_TYPES,
    DocType,
    SchemaError,
    doc_types_from_settings,
    glob_regex,
    judge_document,
    match_doc_type,
    parse_document,
)

TODAY = date(2026, 11, 23)
BLUEPRINT = DEFAULT_DOC_TYPES[0]
ZAKON = DEFAULT_DOC_TYPES[2]

FULL = """# Payments blueprint
Last-Verified: 2026-11-20

## Purpose
## Architecture
### Deploy
#### Rollback
## Verification
"""


def reasons(text: str, doc_type: DocType = BLUEPRINT) -> list[str]:
    return [r for r, _ in judge_document(parse_document(text), doc_type, TODAY).reasons]


@pytest.mark.parametrize(
    ("text", "score", "expected"),
    [
        (FULL, "5/5", []),
        (FULL.replace("#### Rollback\n", ""), "4/5", ["schema"]),
        (FULL.replace("2026-11-20", "2026-10-01"), "5/5", ["stale"]),
        (FULL.replace("2026-11-20", "2026-10-24"), "5/5", []),  # exactly 30 days: still live
        (FULL.replace("2026-11-20", "2026-10-23"), "5/5", ["stale"]),  # 31 days
        (FULL.replace("Last-Verified: 2026-11-20\n", ""), "5/5", ["missing_last_verified"]),
        (FULL.replace("2026-11-20", "2026-13-45"), "5/5", ["invalid_last_verified"]),
        (FULL.replace("2026-11-20", "20/11/2026"), "5/5", ["invalid_last_verified"]),
        (FULL.replace("2026-11-20", "2027-01-01"), "5/5", ["invalid_last_verified"]),
        ("# Only a title\n", "0/5", ["schema", "missing_last_verified"]),
    ],
)
def test_scores_and_reasons(text: str, score: str, expected: list[str]) -> None:
    verdict = judge_document(parse_document(text), BLUEPRINT, TODAY)
    assert verdict.score == score
    assert [r for r, _ in verdict.reasons] == expected
    assert verdict.compliant == (not expected)


def test_missing_sections_named_and_age_reported() -> None:
    verdict = judge_document(
        parse_document(FULL.replace("## Purpose\n", "").replace("2026-11-20", "2026-10-01")),
        BLUEPRINT,
        TODAY,
    )
    assert verdict.missing == ("Purpose",)
    assert verdict.age_days == 53
    assert verdict.last_verified == date(2026, 10, 1)
    details = " ".join(d for _, d in verdict.reasons)
    assert "Purpose" in details and "53 days" in details


def test_level_one_heading_does_not_count() -> None:
    text = FULL.replace("## Purpose", "# Purpose")
    assert reasons(text) == ["schema"]


def test_headings_in_code_fences_do_not_count() -> None:
    text = FULL.replace("#### Rollback\n", "```markdown\n## Rollback\n```\n")
    assert reasons(text) == ["schema"]
    tilde = FULL.replace("#### Rollback\n", "~~~\n## Rollback\n~~~\n")
    assert reasons(tilde) == ["schema"]


def test_last_verified_in_a_fence_does_not_count() -> None:
    text = FULL.replace("Last-Verified: 2026-11-20\n", "```\nLast-Verified: 2026-11-20\n```\n")
    assert reasons(text) == ["missing_last_verified"]


@pytest.mark.parametrize(
    "variant",
    [
        "## 4. Rollback",
        "## §4.2 Rollback plan",
        "## **Rollback**",
        "## rollback ##",
        "###### ROLLBACK",
        "Rollback\n--------",
    ],
)
def test_heading_variants_match(variant: str) -> None:
    assert reasons(FULL.replace("#### Rollback", variant)) == []


def test_setext_level_one_does_not_count() -> None:
    assert reasons(FULL.replace("#### Rollback", "Rollback\n========")) == ["schema"]


@pytest.mark.parametrize(
    "line",
    [
        "Last-Verified: 2026-11-20",
        "**Last-Verified:** 2026-11-20",
        "- Last-Verified: 2026-11-20",
        "> last verified: 2026-11-20",
        "Last_Verified: 2026-11-20",
    ],
)
def test_last_verified_line_forms(line: str) -> None:
    facts = parse_document(FULL.replace("Last-Verified: 2026-11-20", line))
    assert facts.last_verified_raw == "2026-11-20"


def test_front_matter_wins() -> None:
    text = "---\ntitle: x\nlast_verified: '2026-11-21'\n---\n" + FULL
    facts = parse_document(text)
    assert facts.last_verified_raw == "2026-11-21"
    assert reasons(text) == []


def test_crlf_and_bom() -> None:
    text = "\ufeff" + FULL.replace("\n", "\r\n")
    assert reasons(text.removeprefix("\ufeff")) == []


def test_zakon_default_schema_requires_nothing() -> None:
    assert reasons("just text, no headings", ZAKON) == []


def test_no_age_requirement_when_zero() -> None:
    doc_type = DocType("x", ("*.md",), ("Purpose",), 0)
    assert reasons("## Purpose\n", doc_type) == []


@pytest.mark.parametrize(
    ("glob", "path", "matches"),
    [
        ("**/BUILD-BLUEPRINT.md", "BUILD-BLUEPRINT.md", True),
        ("**/BUILD-BLUEPRINT.md", "a/b/c/BUILD-BLUEPRINT.md", True),
        ("**/BUILD-BLUEPRINT.md", "a/xBUILD-BLUEPRINT.md", False),
        ("**/BUILD-BLUEPRINT.md", "a/BUILD-BLUEPRINT.md.bak", False),
        ("rules/zakon-*.md", "rules/zakon-cost.md", True),
        ("rules/zakon-*.md", "x/rules/zakon-cost.md", False),
        ("rules/zakon-*.md", "rules/sub/zakon-cost.md", False),
        ("rules/zakon-?.md", "rules/zakon-a.md", True),
        ("docs/[ab]*.md", "docs/b1.md", True),
        ("docs/[!ab]*.md", "docs/b1.md", False),
    ],
)
def test_globs(glob: str, path: str, matches: bool) -> None:
    assert bool(glob_regex(glob).fullmatch(path)) is matches


def test_first_matching_type_wins() -> None:
    assert match_doc_type("x/DEPLOY-MAP.md", DEFAULT_DOC_TYPES) is DEFAULT_DOC_TYPES[1]
    assert match_doc_type("rules/zakon-a.md", DEFAULT_DOC_TYPES) is ZAKON
    assert match_doc_type("README.md", DEFAULT_DOC_TYPES) is None


def test_settings_override_defaults_per_key() -> None:
    types = doc_types_from_settings(
        {"blueprint_sections": ["Purpose", "Runbook"], "zakon_max_age_days": 90}
    )
    assert types[0].sections == ("Purpose", "Runbook")
    assert types[0].globs == BLUEPRINT.globs
    assert types[1] == DEFAULT_DOC_TYPES[1]
    assert types[2].max_age_days == 90 and types[2].registry


@pytest.mark.parametrize(
    "settings",
    [
        {"blueprint_sections": ["(unclosed"]},
        {"blueprint_globs": "not-a-list"},
        {"blueprint_globs": ["/absolute/*.md"]},
        {"deploy_map_max_age_days": -1},
        {"zakon_max_age_days": True},
    ],
)
def test_bad_settings_are_schema_errors(settings: dict[str, object]) -> None:
    with pytest.raises(SchemaError):
        doc_types_from_settings(settings)
