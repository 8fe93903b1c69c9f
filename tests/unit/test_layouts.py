"""Host layouts (`[fleet] layout`): the default layout keeps today's paths, "alai" puts every
operator-visible file where the seed's runbook commands look, a key set in the file or the
environment always wins over the preset, and an unknown layout names `fleet.layout`. Pure config
loading (no process, no socket); the CLI and the generated services are in
tests/system/test_layouts.py."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, get_args

import pytest

from daemons.blueprint_watchdog.gate_settings import GateConfigError, resolve_gate_settings
from fleet.config import load_config, root_model
from fleet.layout import LAYOUTS, operator_paths, preset_sections
from fleet.registry import LINES
from shared.config import ConfigError, FleetConfig
from shared.sections import Layout


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private $HOME and no FLEET_* from the shell: every `~` below expands into tmp_path."""
    for key in [k for k in os.environ if k.startswith("FLEET_")]:
        monkeypatch.delenv(key)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    return home


def load(tmp_path: Path, toml: str) -> Any:
    path = tmp_path / "fleet.toml"
    path.write_text(toml)
    return load_config(path)


def paths(config: FleetConfig) -> dict[str, Path | None]:
    c: Any = config
    return {
        "fleet.root": c.fleet.root,
        "mission_control.db": c.mission_control.db,
        "email_reactor.inbox_db": c.email_reactor.inbox_db,
        "email_reactor.audit_file": c.email_reactor.audit_file,
        "email_reactor.quarantine_file": c.email_reactor.quarantine_file,
        "email_reactor.digest_state_file": c.email_reactor.digest_state_file,
        "ollama_health.status_file": c.ollama_health.status_file,
        "ollama_health.status_link": c.ollama_health.status_link,
        "ollama_health.override_file": c.ollama_health.override_file,
        "restore_loop.log_file": c.restore_loop.log_file,
        "restore_loop.error_log_file": c.restore_loop.error_log_file,
        "restore_loop.replicate_log_file": c.restore_loop.replicate_log_file,
        "restore_loop.replicate_error_log_file": c.restore_loop.replicate_error_log_file,
    }


TODAY = {
    # (today's defaults, before layouts existed; relative to the default root)
    "mission_control.db": "databases/mission-control.db",
    "email_reactor.inbox_db": "databases/email-inbox.db",
    "email_reactor.audit_file": "state/email-reactor/audit.jsonl",
    "email_reactor.quarantine_file": "state/email-reactor/quarantine.jsonl",
    "email_reactor.digest_state_file": "state/email-reactor/digest-state.json",
    "ollama_health.status_file": "state/ollama-health.json",
    "ollama_health.override_file": "state/ollama-health-override.json",
}


@pytest.mark.parametrize("layout_line", ["", 'layout = "default"'])
def test_the_default_layout_keeps_todays_paths(
    tmp_path: Path, home: Path, layout_line: str
) -> None:
    config = load(tmp_path, f"[fleet]\n{layout_line}\n")
    assert config.fleet.layout == "default"
    got = paths(config)
    root = home / ".local/share/alai-fleet"
    assert got["fleet.root"] == root
    for key, rel in TODAY.items():
        assert got[key] == root / rel, key
    # the services keep their own log names (<root>/logs/<service>.log, or the journal)
    for key in ("log_file", "error_log_file", "replicate_log_file", "replicate_error_log_file"):
        assert got[f"restore_loop.{key}"] is None
    assert got["ollama_health.status_link"] is None  # no legacy link on a new host
    dry_run = config.email_reactor.dry_run_audit_path
    assert dry_run == root / "state/email-reactor/audit.dry-run.jsonl"


def test_the_default_layout_is_the_embedded_defaults(tmp_path: Path, home: Path) -> None:
    explicit = load(tmp_path, '[fleet]\nlayout = "default"\n').model_dump()
    assert explicit == root_model()().model_dump()


def test_the_alai_layout_puts_each_file_where_the_seed_runbook_looks(
    tmp_path: Path, home: Path
) -> None:
    config = load(tmp_path, '[fleet]\nlayout = "alai"\n')
    system = home / "system"
    assert paths(config) == {
        "fleet.root": system,
        "mission_control.db": system / "databases/mission-control.db",
        "email_reactor.inbox_db": system / "databases/email-inbox.db",
        "email_reactor.audit_file": system / "state/inbox-watcher-audit.log",
        "email_reactor.quarantine_file": system / "state/inbox-watcher-quarantine.jsonl",
        "email_reactor.digest_state_file": system / "logs/email-reactor-digest-state.json",
        # the real file stays private; the Node monitor's /tmp path gets the daemon's link
        "ollama_health.status_file": system / "state/ollama-health.json",
        "ollama_health.status_link": Path("/tmp/ollama-health.json"),
        "ollama_health.override_file": Path("/tmp/ollama-health-override.json"),
        "restore_loop.log_file": system / "logs/litestream-restore.log",
        "restore_loop.error_log_file": system / "logs/litestream-restore-error.log",
        "restore_loop.replicate_log_file": system / "logs/litestream.log",
        "restore_loop.replicate_error_log_file": system / "logs/litestream-error.log",
    }
    # the fleet's own state follows the root
    assert config.notify.outbox_db == system / "state/outbox.db"
    assert config.heartbeat_dir == system / "state/heartbeats"
    dry_run = config.email_reactor.dry_run_audit_path
    assert dry_run == system / "state/inbox-watcher-audit.dry-run.log"


def test_the_layout_can_come_from_the_environment(
    tmp_path: Path, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLEET_FLEET__LAYOUT", "alai")
    config = load(tmp_path, "")
    assert config.fleet.layout == "alai"
    assert config.email_reactor.audit_file == home / "system/state/inbox-watcher-audit.log"


def test_an_explicit_key_wins_over_the_preset(
    tmp_path: Path, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    elsewhere = tmp_path / "srv" / "system"
    monkeypatch.setenv("FLEET_OLLAMA_HEALTH__STATUS_FILE", str(tmp_path / "run/ollama.json"))
    config = load(
        tmp_path,
        f'[fleet]\nlayout = "alai"\nroot = "{elsewhere}"\n'
        f'[email_reactor]\nquarantine_file = "{tmp_path / "q.jsonl"}"\ndigest_state_file = ""\n'
        '[restore_loop]\nreplicate_log_file = "<root>/logs/replicate.out"\n'
        'replicate_error_log_file = "<root>/logs/replicate.err"\n',
    )
    got = paths(config)
    assert got["fleet.root"] == elsewhere  # explicit root ...
    # ... and the preset's <root> paths follow it
    assert got["email_reactor.audit_file"] == elsewhere / "state/inbox-watcher-audit.log"
    assert got["mission_control.db"] == elsewhere / "databases/mission-control.db"
    # keys set in the file or the environment win
    assert got["email_reactor.quarantine_file"] == tmp_path / "q.jsonl"
    assert got["ollama_health.status_file"] == tmp_path / "run/ollama.json"
    assert got["restore_loop.replicate_log_file"] == elsewhere / "logs/replicate.out"
    assert got["restore_loop.replicate_error_log_file"] == elsewhere / "logs/replicate.err"
    # an explicit empty value means "the key's own default", not the preset's
    assert got["email_reactor.digest_state_file"] == (
        elsewhere / "state/email-reactor/digest-state.json"
    )
    # untouched preset keys still apply
    assert got["ollama_health.override_file"] == Path("/tmp/ollama-health-override.json")
    assert got["restore_loop.log_file"] == elsewhere / "logs/litestream-restore.log"


def test_an_unknown_layout_names_fleet_layout(tmp_path: Path, home: Path) -> None:
    with pytest.raises(ConfigError) as exc:
        load(tmp_path, '[fleet]\nlayout = "forge"\n[claim_sweeper]\ninterval_s = -1\n')
    keys = [path for path, _msg in exc.value.errors]
    assert "fleet.layout" in keys and "claim_sweeper.interval_s" in keys  # every error, at once
    (msg,) = [m for p, m in exc.value.errors if p == "fleet.layout"]
    assert "'default'" in msg and "'alai'" in msg


def test_half_a_log_pair_is_refused_naming_both_keys(tmp_path: Path, home: Path) -> None:
    with pytest.raises(ConfigError) as exc:
        load(tmp_path, f'[restore_loop]\nlog_file = "{tmp_path / "a/restore.log"}"\n')
    assert any(
        p == "restore_loop" and "log_file" in m and "error_log_file" in m
        for p, m in exc.value.errors
    ), exc.value.errors
    with pytest.raises(ConfigError) as exc:
        load(
            tmp_path,
            f'[restore_loop]\nreplicate_log_file = "{tmp_path / "a/l.log"}"\n'
            f'replicate_error_log_file = "{tmp_path / "b/l.err"}"\n',
        )
    assert any("one directory" in m for _p, m in exc.value.errors), exc.value.errors


def test_every_layout_is_in_the_table_and_every_preset_key_exists() -> None:
    assert set(LAYOUTS) == set(get_args(Layout))
    assert LAYOUTS["default"] == {}
    model = root_model()
    for name, table in LAYOUTS.items():
        for section, key in table:
            section_model = model.model_fields[section].annotation
            assert isinstance(section_model, type)
            assert key in section_model.model_fields, f"{name}: {section}.{key}"


def test_a_preset_skips_sections_a_registry_does_not_have(tmp_path: Path, home: Path) -> None:
    """A registry without email-reactor (a throwaway test registry, a trimmed host) still loads
    the alai layout: the preset keys of absent sections are dropped, not 'extra inputs'."""
    lines = tuple(line for line in LINES if line.name == "claim-sweeper")
    sections = preset_sections("alai", root_model(lines))
    assert set(sections) == {"fleet", "mission_control"}
    path = tmp_path / "fleet.toml"
    path.write_text('[fleet]\nlayout = "alai"\n')
    config = load_config(path, lines)
    assert config.mission_control.db == home / "system/databases/mission-control.db"


def test_operator_paths_say_where_each_value_came_from(tmp_path: Path, home: Path) -> None:
    config = load(
        tmp_path,
        f'[fleet]\nlayout = "alai"\n[email_reactor]\nquarantine_file = "{tmp_path / "q.jsonl"}"\n',
    )
    rows = {row.key: row for row in operator_paths(config)}
    assert rows["email_reactor.audit_file"].path == str(
        home / "system/state/inbox-watcher-audit.log"
    )
    assert rows["email_reactor.audit_file"].source == "layout alai"
    assert rows["email_reactor.quarantine_file"].source == "config"
    assert rows["ollama_health.status_link"].path == "/tmp/ollama-health.json"
    assert rows["ollama_health.status_file"].path == str(home / "system/state/ollama-health.json")
    assert rows["fleet.root"].source == "layout alai"
    default = load(tmp_path, "")
    rows = {row.key: row for row in operator_paths(default)}
    assert rows["fleet.root"].source == "default"  # resolving ~ is not setting it
    assert rows["email_reactor.audit_file"].source == "default"
    assert rows["restore_loop.replicate_log_file"].path.startswith("(service default")
    assert rows["ollama_health.status_link"].path == "(none)"


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_the_hook_gate_finds_what_the_fleet_finds_in_every_layout(
    tmp_path: Path, home: Path, layout: str
) -> None:
    """`fleet zakon validate` resolves its paths without pydantic (before every agent write):
    in each layout it must read the registry and mission-control.db the daemons use."""
    path = tmp_path / "fleet.toml"
    path.write_text(f'[fleet]\nlayout = "{layout}"\n')
    config: Any = load_config(path)
    gate = resolve_gate_settings(system_config=path, home=str(home))
    assert gate.root == config.fleet.root
    assert gate.mission_control_db == config.mission_control.db
    assert gate.registry_file == config.blueprint_watchdog.registry_file
    assert gate.override_log == config.blueprint_watchdog.override_log
    explicit = resolve_gate_settings(root="/srv/r", system_config=path, home=str(home))
    assert explicit.root == Path("/srv/r")  # an explicit --root wins


def test_the_hook_gate_fails_closed_on_an_unknown_layout(tmp_path: Path, home: Path) -> None:
    path = tmp_path / "fleet.toml"
    path.write_text('[fleet]\nlayout = "forge"\n')
    with pytest.raises(GateConfigError, match=r"fleet\.layout"):
        resolve_gate_settings(system_config=path, home=str(home))


def test_the_operations_doc_lists_every_preset() -> None:
    """docs/operations.md "Host layouts" has a row per preset key with the alai value."""
    text = (Path(__file__).resolve().parents[2] / "docs/operations.md").read_text()
    section = text.split("## Host layouts", 1)[1].split("\n## ", 1)[0]
    rows = {
        line.split("|")[1].strip(): line for line in section.splitlines() if line.startswith("| `")
    }
    for (name, key), value in LAYOUTS["alai"].items():
        assert f"`{name}.{key}`" in rows, f"{name}.{key} missing from the Host layouts table"
        assert f"`{value}`" in rows[f"`{name}.{key}`"], f"{name}.{key}: alai value differs"
