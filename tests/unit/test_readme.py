"""The README starts with exactly the two fresh-machine commands, and CI runs the second."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    return re.findall(r"```sh\n(.*?)\n```", text, flags=re.S)


def test_two_commands_first() -> None:
    cmds = readme_commands()
    assert cmds[0].endswith("fleet run --all")
    assert "pytest" in cmds[1] and "[test]" in cmds[1]
    text = (ROOT / "README.md").read_text()
    assert text.index(cmds[1]) < text.index("## What it is")


def test_ci_runs_the_readme_test_command() -> None:
    ci_lines = (ROOT / ".ci" / "run").read_text().splitlines()
    assert readme_commands()[1] in ci_lines
