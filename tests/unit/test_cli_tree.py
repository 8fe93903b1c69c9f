"""The `fleet` command tree as a whole (walked in-process, as `fleet --help` would show it):
every group and command has help text, every read command takes `--json` (the shared option,
which turns errors into JSON too), and the gate commands' click wrappers offer exactly the
options the stdlib gates parse."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import click
import pytest

from fleet.cli import cli

#: commands that change something, start something or print a file in another format (TOML,
#: YAML, a unit): no --json. Any other command is a read command and must take --json.
NOT_READ_COMMANDS = {
    "blueprint gate-script": "writes a script",
    "blueprint validate": "the pre-write gate: the hook protocol's output",
    "zakon validate": "the pre-write gate: the hook protocol's output",
    "config example": "prints TOML",
    "cutover apply": "changes the host",
    "email cutover": "writes decisions",
    "email digest": "sends the digest",
    "email partners add": "writes the partners file",
    "email partners remove": "writes the partners file",
    "email process": "runs the daemon",
    "heartbeat github-workflow": "prints YAML",
    "litestream config": "prints YAML",
    "litestream tables-example": "prints TOML",
    "observability alertmanager": "writes files",
    "observability example": "writes files",
    "observability grafana": "writes files",
    "observability prometheus": "writes files",
    "role set": "writes the role file",
    "run": "runs daemons",
    "silence clear": "writes the outbox",
    "silence set": "writes the outbox",
    "units example": "writes files",
    "units generate": "writes files",
    "units install": "installs units",
    "units launchd-exec": "launchd's entry point",
    "units launchd-run": "launchd's entry point",
    "units uninstall": "removes units",
}


def walk(
    command: click.Command, ctx: click.Context, path: tuple[str, ...] = ()
) -> Iterator[tuple[str, click.Command]]:
    yield " ".join(path), command
    if isinstance(command, click.Group):
        for name in command.list_commands(ctx):
            sub = command.get_command(ctx, name)
            assert sub is not None, (path, name)
            yield from walk(sub, click.Context(sub, parent=ctx, info_name=name), (*path, name))


def tree() -> dict[str, click.Command]:
    return dict(walk(cli, click.Context(cli, info_name="fleet")))


def test_every_group_and_command_has_help_text() -> None:
    missing = [name or "fleet" for name, cmd in tree().items() if not (cmd.help or "").strip()]
    assert missing == []
    for name, cmd in tree().items():
        for param in cmd.params:
            if isinstance(param, click.Option) and not param.hidden:
                assert (param.help or "").strip(), f"fleet {name} {param.opts[0]}: no help"


def test_every_read_command_takes_the_shared_json_option() -> None:
    from shared.cli import _remember_json

    commands = {n: c for n, c in tree().items() if not isinstance(c, click.Group)}
    assert set(NOT_READ_COMMANDS) <= set(commands), set(NOT_READ_COMMANDS) - set(commands)
    for name, cmd in commands.items():
        options = {p.name: p for p in cmd.params if isinstance(p, click.Option)}
        if name in NOT_READ_COMMANDS:
            continue
        assert "as_json" in options, f"fleet {name}: a read command without --json"
        assert options["as_json"].callback is _remember_json, f"fleet {name}: not json_option"


@pytest.mark.parametrize("verb", ["zakon", "blueprint"])
def test_the_gate_wrappers_offer_the_gates_own_options(
    verb: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from daemons.blueprint_watchdog.gate import blueprint_validate_main, zakon_validate_main

    gate = zakon_validate_main if verb == "zakon" else blueprint_validate_main
    assert gate(["--help"]) == 0
    argparse_help = capsys.readouterr().out
    argparse_options = set(re.findall(r"(?<![\w-])(--[a-z][a-z-]*)", argparse_help)) - {"--help"}
    wrapper = tree()[f"{verb} validate"]
    click_options = {
        opt for p in wrapper.params if isinstance(p, click.Option) for opt in p.opts
    } - {"--help", "-h"}
    assert click_options == argparse_options
    (argument,) = [p for p in wrapper.params if isinstance(p, click.Argument)]
    assert argument.human_readable_name == "FILE"


def test_docs_list_every_exit_code_and_every_read_command() -> None:
    from shared.exitcodes import ExitCode

    text = (Path(__file__).resolve().parents[2] / "docs" / "cli.md").read_text()
    table = set(re.findall(r"^\| (\d+) \|", text, flags=re.M))
    assert table == {str(int(code)) for code in ExitCode}
    listing = text.split("Every read command takes `--json`", 1)[1].split("The commands", 1)[0]
    documented = {" ".join(m.split()) for m in re.findall(r"`([a-z][a-z \n-]*)`", listing)}
    read = {n for n, c in tree().items() if n and not isinstance(c, click.Group)}
    assert documented == read - set(NOT_READ_COMMANDS)


def test_the_gate_wrapper_judges_as_the_gate_does(tmp_path: Path) -> None:
    """The click command (what `python -m fleet.cli zakon validate` runs) hands the same command
    line to the gate: same verdicts, also for a FILE that looks like an option."""
    from click.testing import CliRunner

    from daemons.blueprint_watchdog.gate import zakon_validate_main
    from tests.unit.test_blueprint_fixture_tree import registry_entry, write, write_registry

    root = tmp_path / "root"
    config = write(tmp_path / "fleet.toml", f'[fleet]\nroot = "{root}"\n')
    registered = write(root / "rules/zakon-a.md", "# rule\n")
    registry = write_registry(
        root / "rules/zakon-registry.json",
        [
            registry_entry(
                "ZAKON-A",
                str(registered),
                status="legacy-pre-registry",
                token="GRANDFATHERED-PRE-2026-05-12",
            )
        ],
    )
    rogue = write(root / "rules/-zakon-b.md", "# rule\n")
    for file, registry_path in (
        (registered, registry),
        (rogue, registry),
        (registered, tmp_path / "missing.json"),
    ):
        opts = ["--config", str(config), "--registry", str(registry_path)]
        direct = zakon_validate_main([*opts, "--", str(file)])
        wrapped = CliRunner().invoke(cli, ["zakon", "validate", *opts, "--", str(file)])
        assert wrapped.exit_code == direct, (file, wrapped.output)
    assert {
        zakon_validate_main(["--config", str(config), "--registry", str(r), str(registered)])
        for r in (registry, tmp_path / "missing.json")
    } == {0, 3}
