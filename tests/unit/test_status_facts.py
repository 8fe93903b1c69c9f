"""`fleet status` reads its config facts without pydantic (fleet/status_facts.py). Whatever the
file and the environment say, the direct read either gives exactly what the full config load
and the manifests' own role rules give, or declines (None) so status loads the whole config.
Also the pure parts of the service-manager view: parsing `systemctl show` / `launchctl print`
and folding a unit's state into the verdict."""

from __future__ import annotations

import itertools
import os
from pathlib import Path
from typing import Any

import pytest

from fleet.config import load_config, root_model
from fleet.registry import LINES, manifests
from fleet.service_state import (
    ServiceState,
    installed_units,
    parse_launchctl_print,
    parse_systemctl_show,
)
from fleet.status import _service_verdict
from fleet.status_facts import DEFAULTS, ROLE_RULES, cheap_facts, from_config, read_facts


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for key in [k for k in os.environ if k.upper().startswith("FLEET_")]:
        monkeypatch.delenv(key)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    return home


def both(tmp_path: Path, toml: str, env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Any:
    """(direct read, full load) for this file and environment."""
    import tomllib

    path = tmp_path / "fleet.toml"
    path.write_text(toml)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    cheap = cheap_facts(tomllib.loads(toml), dict(os.environ))
    full = from_config(load_config(path), manifests())
    for key in env:
        monkeypatch.delenv(key)
    return cheap, full


def test_the_defaults_restated_are_the_models_defaults() -> None:
    model = root_model()
    for (section, key), default in DEFAULTS.items():
        field = model.model_fields[section].annotation.model_fields[key]  # type: ignore[union-attr]
        assert str(field.default) == default, (section, key)
    by_name = {m.name: m for m in manifests()}
    for name, (keys, _rule) in ROLE_RULES.items():
        fields = by_name[name].section.model_fields
        assert fields["enabled"].default is True
        for key, default in keys.items():
            assert fields[key].default == default, (name, key)


def test_every_registered_daemon_is_read_in_registry_order() -> None:
    facts = cheap_facts({}, {})
    assert facts is not None
    assert [d.name for d in facts.daemons] == [line.name for line in LINES]
    assert set(ROLE_RULES) == {line.name for line in LINES}
    assert cheap_facts({}, {}) is not None


# Every combination of the keys status reads, in the file or the environment.
ROLES = ["primary", "standby", None]
SWITCHES: list[dict[str, Any]] = [
    {},
    {"claim_sweeper": {"auto_release": True}},
    {"claim_sweeper": {"auto_release": False}, "email_reactor": {"enabled": False}},
    {"blueprint_watchdog": {"hivemind_url": "http://127.0.0.1:9/api"}},
    {"restore_loop": {"enabled": False}, "heartbeat": {"enabled": True}},
]


def _toml(tables: dict[str, dict[str, Any]]) -> str:
    def value(v: Any) -> str:
        return ("true" if v else "false") if isinstance(v, bool) else f'"{v}"'

    return "".join(
        f"[{name}]\n" + "".join(f"{k} = {value(v)}\n" for k, v in keys.items())
        for name, keys in tables.items()
    )


def _env(tables: dict[str, dict[str, Any]]) -> dict[str, str]:
    return {
        f"FLEET_{name.upper()}__{k.upper()}": (str(v).lower() if isinstance(v, bool) else v)
        for name, keys in tables.items()
        for k, v in keys.items()
    }


@pytest.mark.parametrize(
    ("role", "switches", "layout", "via_env"),
    list(itertools.product(ROLES, SWITCHES, ["default", "alai"], [False, True])),
)
def test_the_direct_read_matches_the_full_load(
    role: str | None,
    switches: dict[str, Any],
    layout: str,
    via_env: bool,
    tmp_path: Path,
    home: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tables: dict[str, dict[str, Any]] = {"fleet": {"layout": layout}, **switches}
    if role is not None:
        tables["fleet"]["role"] = role
    toml, env = (
        (_toml({"fleet": {"layout": layout}}), _env(tables))
        if via_env
        else (
            _toml(tables),
            {},
        )
    )
    cheap, full = both(tmp_path, toml, env, monkeypatch)
    assert cheap == full
    assert cheap.root == (home / "system" if layout == "alai" else full.root)


def test_an_explicit_root_wins_in_file_and_environment(
    tmp_path: Path, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    toml = '[fleet]\nlayout = "alai"\nroot = "~/elsewhere"\n'
    cheap, full = both(tmp_path, toml, {}, monkeypatch)
    assert cheap == full and cheap.root == home / "elsewhere"
    cheap, full = both(tmp_path, toml, {"fleet_fleet__root": str(tmp_path / "r")}, monkeypatch)
    assert cheap == full and cheap.root == tmp_path / "r"
    assert cheap.heartbeat_dir == tmp_path / "r/state/heartbeats"


@pytest.mark.parametrize(
    ("data", "env"),
    [
        ({"fleet": {"role": "leader"}}, {}),  # not a role: the full load names fleet.role
        ({}, {"FLEET_FLEET__ROLE": "Primary"}),
        ({"fleet": {"layout": "nested"}}, {}),
        ({"fleet": {"root": ""}}, {}),
        ({"fleet": {"root": 7}}, {}),
        ({"fleet": "root"}, {}),
        ({"FLEET": {"root": "/x"}}, {}),  # another spelling of a table
        ({"fleet": {"ROOT": "/x"}}, {}),
        ({"claim_sweeper": {"auto_release": 1}}, {}),  # lax ints: the models decide
        ({}, {"FLEET_CLAIM_SWEEPER__AUTO_RELEASE": "maybe"}),
        ({}, {"FLEET_FLEET": '{"root": "/x"}'}),  # a whole table as JSON
        ({}, {"FLEET_FLEET__ROOT": "/a", "fleet_fleet__root": "/b"}),
        ({}, {"FLEET_FLEET__ROOT": "/a\udcff"}),
    ],
)
def test_anything_the_models_must_judge_is_left_to_them(
    data: dict[str, Any], env: dict[str, str]
) -> None:
    assert cheap_facts(data, env) is None


def test_a_config_the_direct_read_declines_is_loaded_in_full(tmp_path: Path, home: Path) -> None:
    path = tmp_path / "fleet.toml"
    path.write_text('[fleet]\nroot = "/r"\nrole = 3\n')
    loaded: list[str | None] = []

    def load(config_path: str | None) -> Any:
        loaded.append(config_path)
        raise SystemExit(78)

    with pytest.raises(SystemExit):
        read_facts(str(path), load)
    assert loaded == [str(path)]
    path.write_text("[fleet\n")  # not TOML: the full load names the file and line
    with pytest.raises(SystemExit):
        read_facts(str(path), load)
    path.write_text('[fleet]\nroot = "/r"\n')
    assert read_facts(str(path), load).root == Path("/r")
    assert len(loaded) == 2


SYSTEMCTL_SHOW = """Id=alai-fleet-claim-sweeper.service
LoadState=loaded
ActiveState=active
SubState=running
MainPID=4242
Result=success

Id=alai-fleet-heartbeat.service
LoadState=loaded
ActiveState=failed
SubState=failed
MainPID=0
Result=exit-code

Id=alai-fleet-gone.service
LoadState=not-found
ActiveState=inactive
SubState=dead
MainPID=0
Result=success
"""


def test_systemctl_show_blocks_are_read_per_unit() -> None:
    units = parse_systemctl_show(SYSTEMCTL_SHOW)
    assert units["alai-fleet-claim-sweeper.service"]["MainPID"] == "4242"
    assert units["alai-fleet-heartbeat.service"]["Result"] == "exit-code"
    assert units["alai-fleet-gone.service"]["LoadState"] == "not-found"


LAUNCHCTL_RUNNING = """gui/501/no.alai.fleet.heartbeat = {
\tactive count = 1
\tpath = /Users/ops/Library/LaunchAgents/no.alai.fleet.heartbeat.plist
\ttype = LaunchAgent
\tstate = running

\tprogram = /opt/alai-fleet/venv/bin/fleet
\tpid = 812
\tlast exit code = (never exited)
\tendpoints = {
\t\tstate = active
\t}
}
"""
LAUNCHCTL_STOPPED = (
    LAUNCHCTL_RUNNING.replace("state = running", "state = not running")
    .replace("\tpid = 812\n", "")
    .replace("(never exited)", "78: EX_CONFIG")
)


def test_launchctl_print_gives_state_pid_and_last_exit() -> None:
    label = "no.alai.fleet.heartbeat"
    running = parse_launchctl_print(label, "launchd-gui", 0, LAUNCHCTL_RUNNING)
    assert (running.state, running.pid, running.detail) == ("active", 812, "")
    stopped = parse_launchctl_print(label, "launchd-gui", 0, LAUNCHCTL_STOPPED)
    assert (stopped.state, stopped.pid) == ("inactive", None)
    assert stopped.detail == "last exit code 78: EX_CONFIG" and stopped.down
    assert parse_launchctl_print(label, "launchd-gui", 113, "").state == "not-loaded"
    assert parse_launchctl_print(label, "launchd-gui", -1, "").state == "unknown"


def test_installed_units_are_found_by_file_for_this_platform(tmp_path: Path) -> None:
    user_dir = tmp_path / "xdg/systemd/user"
    user_dir.mkdir(parents=True)
    (user_dir / "alai-fleet-heartbeat.service").write_text("[Unit]\n")
    agents = tmp_path / "Library/LaunchAgents"
    agents.mkdir(parents=True)
    (agents / "no.alai.fleet.claim-sweeper.plist").write_text("<plist/>")
    env = {"XDG_CONFIG_HOME": str(tmp_path / "xdg")}
    names = ["heartbeat", "claim-sweeper"]
    linux = installed_units(names, platform="linux", home=tmp_path, env=env)
    assert [(u.daemon, u.manager, u.unit) for u in linux] == [
        ("heartbeat", "systemd-user", "alai-fleet-heartbeat.service")
    ]
    mac = installed_units(names, platform="darwin", home=tmp_path, env=env)
    assert [(u.daemon, u.manager, u.unit) for u in mac] == [
        ("claim-sweeper", "launchd-gui", "no.alai.fleet.claim-sweeper")
    ]


def test_a_down_unit_makes_the_daemon_down_unless_it_runs_by_hand() -> None:
    failed = ServiceState("systemd-user", "u.service", "failed", None, "exit-code")
    active = ServiceState("systemd-user", "u.service", "active", 9)
    assert _service_verdict([], "stopped", True, "ok") == (True, "ok")
    assert _service_verdict([active], "running", True, "ok") == (True, "ok")
    ok, reason = _service_verdict([failed], "stopped", True, "no heartbeat file")
    assert not ok and reason == "unit systemd-user failed (exit-code); last: no heartbeat file"
    ok, reason = _service_verdict([failed], "running", True, "ok")
    assert ok and "running outside its unit" in reason
    unknown = ServiceState("systemd-user", "u.service", "unknown")
    assert _service_verdict([unknown], "stopped", True, "starting") == (True, "starting")
