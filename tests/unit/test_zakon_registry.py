"""The ZAKON registry model: parsing the seed's schema fail-closed, path lookup, and the
creation gate's decision table."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from daemons.blueprint_watchdog.registry import (
    RegistryError,
    judge_entry,
    judge_task_text,
    load_registry,
    parse_registry,
    sha256_matches,
)
from tests.unit.test_blueprint_fixture_tree import registry_entry

HOME = "/home/ops"
REG = Path("/home/ops/system/rules/zakon-registry.json")


def parse(entries: list[Any], **top: Any) -> Any:
    return parse_registry(
        json.dumps({"version": "1.0", "registry": entries, **top}), REG, home=HOME
    )


SEED_LIKE = [
    registry_entry(
        "feasibility-check",
        "~/system/rules/zakon-feasibility-check.md",
        status="legacy-pre-registry",
        token="GRANDFATHERED-PRE-2026-05-12",
    ),
    registry_entry(
        "blueprint-enforcement",
        "~/system/rules/zakon-blueprint-enforcement.md",
        status="active",
        mc_task=99911,
    ),
    registry_entry(
        "cost-ceiling",
        "~/system/rules/zakon-cost-ceiling.md",
        status="approved-pending-author",
        mc_task="100500",
    ),
]


def test_seed_shaped_registry_parses_and_finds_by_tilde_path() -> None:
    registry = parse(SEED_LIKE, policy={"fail_closed": "..."})
    assert registry.version == "1.0"
    entry = registry.find("/home/ops/system/rules/zakon-cost-ceiling.md")
    assert entry is not None and entry.zakon_id == "cost-ceiling" and entry.mc_task == 100500
    assert registry.find("/home/ops/system/rules/../rules/zakon-feasibility-check.md")
    assert registry.find("/home/ops/system/rules/zakon-other.md") is None
    assert registry.by_status() == {
        "active": 1,
        "approved-pending-author": 1,
        "legacy-pre-registry": 1,
    }


def test_relative_file_path_is_relative_to_the_registry() -> None:
    registry = parse([registry_entry("x", "zakon-x.md", mc_task=1)])
    assert registry.entries[0].path == "/home/ops/system/rules/zakon-x.md"


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "not valid JSON"),
        ("{not json", "not valid JSON"),
        ("[]", "not a JSON object"),
        ('{"version": "1.0"}', "'registry' is missing"),
        ('{"registry": {}}', "'registry' is missing or not a list"),
        ('{"registry": ["x"]}', "registry[0] is not an object"),
        ('{"registry": [{"file_path": "~/a.md"}]}', "registry[0].zakon_id missing"),
        ('{"registry": [{"zakon_id": "a"}]}', "registry[0].file_path missing"),
        (
            '{"registry": [{"zakon_id": "a", "file_path": "~/a.md"},'
            ' {"zakon_id": "b", "file_path": "/home/ops/a.md"}]}',
            "lists /home/ops/a.md again",
        ),
        ("[" * 100_000, "nested too deeply"),
        ('{"registry": [{"x": ' + "[" * 100_000, "nested too deeply"),
    ],
)
def test_malformed_registries_fail_closed(text: str, problem: str) -> None:
    with pytest.raises(RegistryError) as info:
        parse_registry(text, REG, home=HOME)
    assert info.value.kind == "invalid"
    assert problem in info.value.problem
    rendered = info.value.render()
    assert rendered.startswith("ZAKON_REGISTRY_ERROR:") and "FIX:" in rendered
    assert str(REG) in rendered


def test_missing_and_non_utf8_registry(tmp_path: Path) -> None:
    with pytest.raises(RegistryError) as info:
        load_registry(tmp_path / "zakon-registry.json")
    assert info.value.kind == "missing"
    bad = tmp_path / "latin.json"
    bad.write_bytes(b'{"registry": [], "x": "\xe9"}')
    with pytest.raises(RegistryError) as info:
        load_registry(bad)
    assert info.value.kind == "invalid"
    with pytest.raises(RegistryError) as info:
        load_registry(tmp_path)
    assert info.value.kind == "unreadable"


@pytest.mark.parametrize(
    ("entry", "reason", "needle"),
    [
        (registry_entry("a", "~/a.md", status="active", mc_task=7), "", "approved"),
        (registry_entry("a", "~/a.md", status="approved-live", mc_task=7), "", "approved"),
        (
            registry_entry("a", "~/a.md", status="approved-pending-author", mc_task="#7"),
            "",
            "approved",
        ),
        (
            registry_entry(
                "a", "~/a.md", status="legacy-pre-registry", token="GRANDFATHERED-PRE-2026-05-12"
            ),
            "",
            "grandfathered",
        ),
        (registry_entry("a", "~/a.md", status="legacy-pre-registry"), "", "approved"),
        (registry_entry("a", "~/a.md", status="retired", mc_task=7), "not_approved", "retired"),
        (registry_entry("a", "~/a.md", status="", mc_task=7), "not_approved", "status"),
        (registry_entry("a", "~/a.md", status="active"), "not_approved", "mc_task"),
        (
            registry_entry("a", "~/a.md", status="active", mc_task=7, token="CEO_APPROVED"),
            "not_approved",
            "neither",
        ),
        (
            registry_entry("a", "~/a.md", status="active", token="GRANDFATHERED-PRE-2026-05-12"),
            "not_approved",
            "only covers",
        ),
        (registry_entry("a", "~/a.md", mc_task=[1]), "not_approved", "mc_task"),
        (registry_entry("a", "~/a.md", mc_task=True), "not_approved", "mc_task"),
        # SQLite integers are 64-bit: a bigger id would crash the task lookup, not block it.
        (
            registry_entry("a", "~/a.md", mc_task=100463100463100463100463),
            "not_approved",
            "mc_task",
        ),
        (registry_entry("a", "~/a.md", mc_task=1_000_000_000_000), "not_approved", "mc_task"),
        (registry_entry("a", "~/a.md", mc_task="0"), "not_approved", "mc_task"),
        (registry_entry("a", "~/a.md", status="active", mc_task=999_999_999_999), "", "approved"),
        ({**registry_entry("a", "~/a.md", mc_task=7), "status": 3}, "not_approved", "status"),
    ],
)
def test_gate_decisions(entry: dict[str, Any], reason: str, needle: str) -> None:
    registry = parse([entry])
    approval = judge_entry(registry.entries[0])
    assert approval.reason == reason
    assert needle in approval.describe()


def test_unregistered() -> None:
    approval = judge_entry(None)
    assert approval.reason == "unregistered" and "[CEO_APPROVED]" in approval.detail


def test_task_text_rule() -> None:
    entry = parse([registry_entry("a", "~/a.md", mc_task=7)]).entries[0]
    assert judge_task_text(entry, "Title\nplease [CEO_APPROVED]").ok
    assert judge_task_text(entry, "Title\nCEO approved").reason == "not_approved"
    assert "not found" in judge_task_text(entry, None).detail


def test_published_hash_comparison() -> None:
    digest = "ab" * 32
    entries = parse(
        [
            registry_entry("a", "~/a.md", mc_task=1, published_sha256=digest.upper()),
            registry_entry("b", "~/b.md", mc_task=1),
            registry_entry("c", "~/c.md", mc_task=1, published_sha256="not-a-hash"),
        ]
    ).entries
    assert sha256_matches(entries[0], digest) is True
    assert sha256_matches(entries[0], "cd" * 32) is False
    assert sha256_matches(entries[1], digest) is None
    assert sha256_matches(entries[2], digest) is False
