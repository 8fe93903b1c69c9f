"""`fleet run`'s click-free parser takes exactly the plain forms and leaves every other one
(help, typos, unknown daemons, both or neither of NAME and --all) to click."""

from __future__ import annotations

from pathlib import Path

import pytest

from fleet.run import RunArgs, parse_args


@pytest.mark.parametrize(
    ("words", "parsed"),
    [
        (["claim-sweeper"], RunArgs("claim-sweeper")),
        (["--all"], RunArgs(None, run_all=True)),
        (["--once", "heartbeat", "--dry-run"], RunArgs("heartbeat", once=True, dry_run=True)),
        (["heartbeat", "--config", "f.toml"], RunArgs("heartbeat", config_path="f.toml")),
        (["--config=a=b.toml", "--all"], RunArgs(None, run_all=True, config_path="a=b.toml")),
    ],
)
def test_plain_forms(words: list[str], parsed: RunArgs) -> None:
    assert parse_args(words) == parsed


@pytest.mark.parametrize(
    "words",
    [
        [],
        ["--help"],
        ["-h", "heartbeat"],
        ["no-such-daemon"],
        ["heartbeat", "claim-sweeper"],
        ["heartbeat", "--all"],
        ["heartbeat", "--onse"],
        ["heartbeat", "--config"],
        ["heartbeat", "--config="],
        ["heartbeat", "--", "--once"],
    ],
)
def test_everything_else_goes_to_click(words: list[str]) -> None:
    assert parse_args(words) is None


def test_a_directory_as_config_goes_to_click(tmp_path: Path) -> None:
    assert parse_args(["heartbeat", "--config", str(tmp_path)]) is None
