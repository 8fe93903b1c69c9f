"""The pure parts of `fleet cutover` and the secrets file format, table-driven: recognising a
legacy job by label, script or program words; rewriting ops-watchdog.json's critical_services;
KEY=VALUE parsing, rendering and ${VAR} references; -config arguments; plists and units read
from files (hostile ones included)."""

from __future__ import annotations

import plistlib
from pathlib import Path

import pytest

from fleet.cutover.legacy import LEGACY_JOBS, LegacyService, read_plist, read_unit
from fleet.cutover.litestream import config_args
from fleet.cutover.watchdog import legacy_labels_in, replace_labels
from fleet.registry import by_name
from shared.envfile import (
    EnvFileError,
    env_references,
    parse_env_text,
    read_env_file,
    render_env_text,
)

JOBS = {job.name: job for job in LEGACY_JOBS}


def test_every_legacy_job_is_replaced_by_a_registered_daemon() -> None:
    names = set(by_name())
    for job in LEGACY_JOBS:
        target = job.replaced_by
        assert target in names or target == "litestream-*", job.name


@pytest.mark.parametrize(
    ("argv", "job"),
    [
        (["/usr/local/bin/node", "/Users/x/system/tools/inbox-watcher.js"], "inbox-watcher"),
        (
            ["/bin/sh", "-c", "cd ~/system && node tools/health-server.js --port 8099"],
            "health-server",
        ),
        (["node", "daemons/ollama-health-monitor.js"], "ollama-health-monitor"),
        (["/opt/homebrew/bin/litestream", "replicate", "-config", "x.yml"], "litestream"),
        (["/bin/bash", "/Users/x/system/scripts/litestream-restore-loop.sh"], "litestream-restore"),
        (["/opt/homebrew/bin/litestream", "restore", "-config", "x.yml"], None),
        (["node", "/srv/tools/health-server.json"], None),
        (["/bin/sh", "-c", "unbalanced 'quote health-server.js"], "health-server"),
    ],
)
def test_a_job_is_recognised_by_the_script_it_runs(argv: list[str], job: str | None) -> None:
    found = [j.name for j in LEGACY_JOBS if j.runs(argv)]
    assert found == ([job] if job else [])


def test_replacements_by_name_or_prefix() -> None:
    services = ["email-reactor", "heartbeat", "litestream-p0-critical", "litestream-p1"]
    assert JOBS["inbox-watcher"].replacements(services) == ["email-reactor"]
    assert JOBS["litestream"].replacements(services) == ["litestream-p0-critical", "litestream-p1"]
    assert JOBS["litestream-restore"].replacements(services) == []


def test_watchdog_labels_are_replaced_in_place_once() -> None:
    data = {
        "interval_s": 30,
        "critical_services": [
            "no.alai.inbox-watcher",
            {"name": "com.john.email-reactor-digest", "grace_s": 5},
            {"label": "com.alai.litestream"},
            "no.alai.mehanik",
            42,
        ],
    }
    replacements = {
        "no.alai.inbox-watcher": ["no.alai.fleet.email-reactor"],
        "com.john.email-reactor-digest": ["no.alai.fleet.email-reactor"],
        "com.alai.litestream": ["no.alai.fleet.litestream-p0", "no.alai.fleet.litestream-p1"],
        "com.example.health": ["no.alai.fleet.heartbeat"],
    }
    assert legacy_labels_in(data, list(replacements)) == [
        "no.alai.inbox-watcher",
        "com.john.email-reactor-digest",
        "com.alai.litestream",
    ]
    out = replace_labels(data, replacements)
    assert out["interval_s"] == 30
    assert out["critical_services"] == [
        "no.alai.fleet.email-reactor",
        {"label": "no.alai.fleet.litestream-p0"},
        {"label": "no.alai.fleet.litestream-p1"},
        "no.alai.mehanik",
        42,
    ]
    assert legacy_labels_in(out, list(replacements)) == []
    # a fleet label already listed is not added twice
    already = {"critical_services": ["no.alai.inbox-watcher", "no.alai.fleet.email-reactor"]}
    assert replace_labels(already, replacements)["critical_services"] == [
        "no.alai.fleet.email-reactor"
    ]


@pytest.mark.parametrize(
    ("text", "values", "problems"),
    [
        ("A=1\n# c\n; c\n\nexport B = two words \n", {"A": "1", "B": "two words"}, []),
        ("A='x y'\nB=\"q\"\nC=a=b\n", {"A": "x y", "B": "q", "C": "a=b"}, []),
        (
            "A=1\nnot a pair\n1BAD=x\n",
            {"A": "1"},
            ["line 2: not KEY=VALUE", "line 3: not KEY=VALUE"],
        ),
        ("EMPTY=\n", {"EMPTY": ""}, []),
    ],
)
def test_env_file_parsing(text: str, values: dict[str, str], problems: list[str]) -> None:
    assert parse_env_text(text) == (values, problems)


def test_env_file_rendering_round_trips() -> None:
    values = {"KEY": "s3cr3t==", "SPACED": "a b", "DOLLAR": "x$y"}
    text = render_env_text("# kept\nOLD=1", values)
    assert text.startswith("# kept\nOLD=1\n")
    assert parse_env_text(text) == ({"OLD": "1", **values}, [])
    with pytest.raises(ValueError, match="BAD"):
        render_env_text("", {"BAD": "it's"})


def test_references_and_config_args() -> None:
    yaml = 'account-key: "${LITESTREAM_AZURE_ACCOUNT_KEY}"\nx: ${A}${A} $NOT ${1NO}\n'
    assert env_references(yaml) == ["LITESTREAM_AZURE_ACCOUNT_KEY", "A"]
    assert config_args(["litestream", "replicate", "-config", "/a.yml"]) == [Path("/a.yml")]
    assert config_args(["sh", "-c", "litestream replicate -config=/b.yml"]) == [Path("/b.yml")]
    assert config_args(["litestream", "replicate", "-config"]) == []


def test_read_env_file_refuses_what_is_not_private(tmp_path: Path) -> None:
    path = tmp_path / "x.env"
    path.write_text("A=1\n")
    path.chmod(0o640)
    with pytest.raises(EnvFileError, match="mode 0640"):
        read_env_file(path)
    path.chmod(0o600)
    assert read_env_file(path) == {"A": "1"}
    with pytest.raises(EnvFileError, match="does not exist"):
        read_env_file(tmp_path / "missing.env")
    (tmp_path / "dir.env").mkdir()
    with pytest.raises(EnvFileError, match="not a regular file"):
        read_env_file(tmp_path / "dir.env")


def test_plists_and_units_read_from_files(tmp_path: Path) -> None:
    good = tmp_path / "com.example.any.plist"
    good.write_bytes(
        plistlib.dumps(
            {
                "Label": "com.example.any",
                "Program": "/usr/local/bin/node",
                "ProgramArguments": ["node", "/x/email-reactor-digest.js", 7],
                "EnvironmentVariables": {"K": "v", "N": 1},
            }
        )
    )
    found = read_plist(good)
    assert isinstance(found, LegacyService) and found.job.name == "email-reactor-digest"
    assert dict(found.environment) == {"K": "v"}
    fleet = tmp_path / "no.alai.fleet.litestream-p0.plist"
    fleet.write_bytes(
        plistlib.dumps(
            {
                "Label": "no.alai.fleet.litestream-p0",
                "ProgramArguments": ["litestream", "replicate"],
            }
        )
    )
    assert read_plist(fleet) is None  # the fleet's own
    truncated = tmp_path / "com.alai.litestream.plist"
    truncated.write_bytes(good.read_bytes()[:40])
    broken = read_plist(truncated)
    assert isinstance(broken, LegacyService) and broken.unreadable
    other = tmp_path / "com.example.other.plist"
    other.write_bytes(b"\xff\xfe")
    assert isinstance(read_plist(other), str)
    unit = tmp_path / "mail.service"
    unit.write_text(
        "[Service]\nExecStart=@/usr/bin/node node /t/inbox-watcher.js\n"
        "Environment=A=1 'B=two words' C\n"
    )
    found_unit = read_unit(unit, "systemd-user")
    assert isinstance(found_unit, LegacyService) and found_unit.job.name == "inbox-watcher"
    assert dict(found_unit.environment) == {"A": "1", "B": "two words"}
    binary = tmp_path / "litestream.service"
    binary.write_bytes(b"\xff\xfe\x00")
    by_name_only = read_unit(binary, "systemd-system")
    assert isinstance(by_name_only, LegacyService) and by_name_only.unreadable
