"""`fleet units launchd-run`'s click-free parser takes exactly the forms the generated plists
use (and the option spellings click accepts for them) and leaves every other one to click."""

from __future__ import annotations

from pathlib import Path

import pytest

from fleet.launchd_run import LaunchdRunArgs, parse_args


@pytest.mark.parametrize(
    ("words", "parsed"),
    [
        (["claim-sweeper"], LaunchdRunArgs("claim-sweeper")),
        (
            [
                "heartbeat",
                "--config",
                "f.toml",
                "--optional-env-file",
                "a.env",
                "--optional-env-file=b.env",
                "--env-file",
                "s.env",
                "--domain",
                "system",
            ],
            LaunchdRunArgs("heartbeat", ("a.env", "b.env"), "s.env", "system", "f.toml"),
        ),
        (["--domain=user", "heartbeat"], LaunchdRunArgs("heartbeat", domain="user")),
        (["heartbeat", "--env-file", "a", "--env-file", "b"], LaunchdRunArgs("heartbeat", (), "b")),
    ],
)
def test_plain_forms(words: list[str], parsed: LaunchdRunArgs) -> None:
    assert parse_args(words) == parsed


@pytest.mark.parametrize(
    "words",
    [
        [],
        ["--help"],
        ["-h", "heartbeat"],
        ["no-such-daemon"],
        ["heartbeat", "claim-sweeper"],
        ["heartbeat", "--domain", "gui"],
        ["heartbeat", "--env-file"],
        ["heartbeat", "--optional-env-file="],
        ["heartbeat", "--once"],
        ["--all"],
    ],
)
def test_everything_else_goes_to_click(words: list[str]) -> None:
    assert parse_args(words) is None


@pytest.mark.parametrize("option", ["--config", "--env-file", "--optional-env-file"])
def test_a_directory_as_a_file_goes_to_click(option: str, tmp_path: Path) -> None:
    assert parse_args(["heartbeat", option, str(tmp_path)]) is None
