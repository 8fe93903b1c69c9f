"""Config loading: defaults, TOML, env overrides, secrets from files, and exit 78 naming every
bad key by its dotted path without echoing secret values."""

from __future__ import annotations

from pathlib import Path

import pytest

from fleet.config import load_config
from shared.config import ConfigError
from tests.conftest import run_fleet


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for key in list(__import__("os").environ):
        if key.startswith("FLEET_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


def test_embedded_defaults_work_on_a_fresh_machine(tmp_path: Path) -> None:
    cfg = load_config()
    assert cfg.fleet.root == tmp_path / "home/.local/share/alai-fleet"
    assert cfg.fleet.bind == "127.0.0.1"
    assert cfg.mission_control.db == cfg.fleet.root / "databases/mission-control.db"
    assert cfg.notify.outbox_db == cfg.fleet.root / "state/outbox.db"
    assert cfg.claim_sweeper.metrics_port == 9806 and cfg.claim_sweeper.interval_s == 60
    assert cfg.claim_sweeper.auto_release is False and cfg.claim_sweeper.alert_after_s == 900


def test_toml_then_env_override(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "fleet.toml"
    path.write_text(
        '[fleet]\nroot = "/srv/fleet"\nrole = "standby"\n'
        "[claim_sweeper]\ninterval_s = 30\nalert_after_s = 60\n"
    )
    cfg = load_config(path)
    assert cfg.fleet.root == Path("/srv/fleet") and cfg.fleet.role == "standby"
    assert cfg.claim_sweeper.interval_s == 30
    assert cfg.mission_control.db == Path("/srv/fleet/databases/mission-control.db")
    monkeypatch.setenv("FLEET_CLAIM_SWEEPER__INTERVAL_S", "5")
    monkeypatch.setenv("FLEET_FLEET__ROLE", "primary")
    cfg = load_config(path)
    assert cfg.claim_sweeper.interval_s == 5 and cfg.claim_sweeper.alert_after_s == 60
    assert cfg.fleet.role == "primary"


def test_config_file_lookup_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "fleet.toml").write_text("[claim_sweeper]\ninterval_s = 7\n")
    assert load_config().claim_sweeper.interval_s == 7
    other = tmp_path / "other.toml"
    other.write_text("[claim_sweeper]\ninterval_s = 8\n")
    monkeypatch.setenv("FLEET_CONFIG", str(other))
    assert load_config().claim_sweeper.interval_s == 8


def test_every_error_named_by_dotted_path(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(
        '[claim_sweeper]\ninterval_s = -5\nbogus_key = 1\n[fleet]\nrole = "leader"\n[nope]\n'
    )
    with pytest.raises(ConfigError) as info:
        load_config(path)
    paths = {p for p, _ in info.value.errors}
    assert {"claim_sweeper.interval_s", "claim_sweeper.bogus_key", "fleet.role", "nope"} <= paths


def test_secret_from_file_and_never_echoed(tmp_path: Path) -> None:
    secret_file = tmp_path / "slack.token"
    secret_file.write_text("xoxb-from-file-123456\n")
    secret_file.chmod(0o600)  # a token file group/others can read is refused
    good = tmp_path / "good.toml"
    good.write_text(f'[slack]\ntoken_file = "{secret_file}"\n')
    cfg = load_config(good)
    assert cfg.slack.token.get_secret_value() == "xoxb-from-file-123456"
    assert "xoxb-from-file" not in repr(cfg) and "xoxb-from-file" not in str(cfg.model_dump())
    bad = tmp_path / "bad.toml"
    bad.write_text('[slack]\ntoken = ["xoxb-leaky-secret-999"]\n')
    with pytest.raises(ConfigError) as info:
        load_config(bad)
    assert "slack.token" in info.value.render()
    assert "xoxb-leaky-secret-999" not in info.value.render()
    missing = tmp_path / "missing.toml"
    missing.write_text('[slack]\ntoken_file = "/nonexistent/token"\n')
    with pytest.raises(ConfigError) as info:
        load_config(missing)
    assert [p for p, _ in info.value.errors] == ["slack.token_file"]


def test_malformed_toml_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "broken.toml"
    path.write_text("[fleet\nroot = ")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert "not valid TOML" in info.value.render()


@pytest.mark.system
def test_cli_exits_78_naming_both_errors(fleet_env: dict[str, str], tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[claim_sweeper]\ninterval_s = -1\nunknown_knob = true\n")
    for args in (
        ["check-config", "--config", str(path)],
        ["run", "claim-sweeper", "--config", str(path)],
    ):
        res = run_fleet(args, fleet_env, tmp_path)
        assert res.returncode == 78, res.stdout + res.stderr
        assert "claim_sweeper.interval_s" in res.stderr
        assert "claim_sweeper.unknown_knob" in res.stderr
    env = {**fleet_env, "FLEET_CLAIM_SWEEPER__INTERVAL_S": "-3"}
    res = run_fleet(["check-config"], env, tmp_path)
    assert res.returncode == 78 and "claim_sweeper.interval_s" in res.stderr
    ok = run_fleet(["check-config"], fleet_env, tmp_path)
    assert ok.returncode == 0 and "embedded defaults" in ok.stdout


def test_cross_section_rules(tmp_path: Path) -> None:
    path = tmp_path / "x.toml"
    path.write_text(
        "[notify]\nsend_lease_s = 10\n[slack]\ntimeout_s = 10\n"
        "[claim_sweeper]\nmetrics_port = 9802\n[ollama_health]\nenabled = true\n"
    )
    with pytest.raises(ConfigError) as info:
        load_config(path)
    paths = [p for p, _ in info.value.errors]
    assert "notify.send_lease_s" in paths
    assert "claim_sweeper.metrics_port" in paths
