"""Files holding secrets must be private, like ssh's keys: a ``*_file`` secret, a config file
that sets a secret inline, and the env files the services load (fleet.env, fleet-<daemon>.env)
are refused by the real `fleet check-config` and `fleet run` (exit 78) when group/others can
read them, naming the file and its mode and never the value. Each daemon reads only its own
section's and the shared sections' ``*_file`` secrets; a daemon's secret in the shared fleet.env
is named. The tests run as root, which reads any file: the mode is checked, not access."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import run_fleet

pytestmark = pytest.mark.system

TOKEN = "xoxb-1234567890-NEVER-PRINTED"


def _secret(path: Path, mode: int, value: str = TOKEN) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(value + "\n")
    path.chmod(mode)
    return path


def _config(path: Path, body: str, mode: int = 0o600) -> Path:
    path.write_text(body)
    path.chmod(mode)
    return path


def _env(fleet_env: dict[str, str]) -> dict[str, str]:
    return {**fleet_env, "FLEET_CLAIM_SWEEPER__METRICS_PORT": "0"}


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604])
def test_a_token_file_others_can_read_is_refused_by_check_config_and_run(
    fleet_env: dict[str, str], tmp_path: Path, mode: int
) -> None:
    token = _secret(tmp_path / "secrets" / "slack.token", mode)
    cfg = _config(tmp_path / "fleet.toml", f'[slack]\ntoken_file = "{token}"\n')
    for args in (
        ["check-config", "--config", str(cfg)],
        ["run", "claim-sweeper", "--once", "--config", str(cfg)],
    ):
        res = run_fleet(args, _env(fleet_env), tmp_path)
        out = res.stdout + res.stderr
        assert res.returncode == 78, out
        assert f"slack.token_file: {token} has mode {mode:04o}" in res.stderr
        assert f"chmod 600 {token}" in res.stderr
        assert TOKEN not in out
    token.chmod(0o600)
    assert run_fleet(["check-config", "--config", str(cfg)], fleet_env, tmp_path).returncode == 0
    res = run_fleet(
        ["run", "claim-sweeper", "--once", "--config", str(cfg)], _env(fleet_env), tmp_path
    )
    assert res.returncode == 0, res.stderr


def test_every_secret_file_key_is_checked_including_nested_ones(
    fleet_env: dict[str, str], tmp_path: Path
) -> None:
    paperless = _secret(tmp_path / "s" / "paperless", 0o644)
    hivemind = _secret(tmp_path / "s" / "hivemind", 0o600)
    ping = _secret(tmp_path / "s" / "ping-url", 0o644, "https://hc.example.com/ping/abc")
    cfg = _config(
        tmp_path / "fleet.toml",
        f'[email_reactor]\npaperless_token_file = "{paperless}"\n'
        f'[blueprint_watchdog]\nhivemind_token_file = "{hivemind}"\n'
        f'[heartbeat]\n[[heartbeat.pings]]\nname = "hc"\nurl_file = "{ping}"\n',
    )
    res = run_fleet(["check-config", "--config", str(cfg)], fleet_env, tmp_path)
    assert res.returncode == 78, res.stdout + res.stderr
    assert f"email_reactor.paperless_token_file: {paperless} has mode 0644" in res.stderr
    assert f"heartbeat.pings[0].url_file: {ping} has mode 0644" in res.stderr
    assert "hivemind" not in res.stderr
    assert "hc.example.com" not in res.stderr and TOKEN not in res.stderr


def test_a_config_with_an_inline_secret_must_be_private(
    fleet_env: dict[str, str], tmp_path: Path
) -> None:
    cfg = _config(tmp_path / "fleet.toml", f'[slack]\ntoken = "{TOKEN}"\n', 0o644)
    for args in (
        ["check-config", "--config", str(cfg)],
        ["run", "claim-sweeper", "--once", "--config", str(cfg)],
    ):
        res = run_fleet(args, _env(fleet_env), tmp_path)
        out = res.stdout + res.stderr
        assert res.returncode == 78, out
        assert f"slack.token: set inline, but {cfg} has mode 0644" in res.stderr
        assert "slack.token_file" in res.stderr
        assert TOKEN not in out and "xoxb" not in out
    cfg.chmod(0o600)
    ok = run_fleet(["check-config", "--config", str(cfg)], fleet_env, tmp_path)
    assert ok.returncode == 0, ok.stderr
    # a 0644 config without an inline secret stays fine
    plain = _config(tmp_path / "plain.toml", '[slack]\ntoken = ""\nops_channel = "#ops"\n', 0o644)
    assert run_fleet(["check-config", "--config", str(plain)], fleet_env, tmp_path).returncode == 0


def _env_dir(fleet_env: dict[str, str]) -> Path:
    path = Path(fleet_env["HOME"]) / ".config" / "alai-fleet"
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.mark.parametrize("name", ["fleet.env", "fleet-claim-sweeper.env"])
def test_an_env_file_others_can_read_is_refused(
    fleet_env: dict[str, str], tmp_path: Path, name: str
) -> None:
    env_file = _secret(_env_dir(fleet_env) / name, 0o644, f"FLEET_SLACK__TOKEN={TOKEN}")
    cfg = _config(tmp_path / "fleet.toml", "")
    for args in (
        ["check-config", "--config", str(cfg)],
        ["run", "claim-sweeper", "--once", "--config", str(cfg)],
        # launchd-run loads the env files itself: refused (exit 0 under launchd, with the why)
        [
            "units",
            "launchd-run",
            "claim-sweeper",
            "--config",
            str(cfg),
            "--optional-env-file",
            str(env_file),
        ],
    ):
        res = run_fleet(args, _env(fleet_env), tmp_path)
        out = res.stdout + res.stderr
        assert f"{env_file}" in res.stderr and "mode 0644" in res.stderr, out
        assert res.returncode == (0 if args[0] == "units" else 78), out
        assert TOKEN not in out
    env_file.chmod(0o600)
    res = run_fleet(
        ["run", "claim-sweeper", "--once", "--config", str(cfg)], _env(fleet_env), tmp_path
    )
    assert res.returncode == 0, res.stderr


def test_another_daemons_env_file_does_not_stop_this_one(
    fleet_env: dict[str, str], tmp_path: Path
) -> None:
    _secret(_env_dir(fleet_env) / "fleet-email-reactor.env", 0o644, "FLEET_X=1")
    cfg = _config(tmp_path / "fleet.toml", "")
    res = run_fleet(
        ["run", "claim-sweeper", "--once", "--config", str(cfg)], _env(fleet_env), tmp_path
    )
    assert res.returncode == 0, res.stderr
    check = run_fleet(["check-config", "--config", str(cfg)], fleet_env, tmp_path)
    assert check.returncode == 78 and "fleet-email-reactor.env has mode 0644" in check.stderr


def test_a_daemons_secret_in_the_shared_fleet_env_is_named(
    fleet_env: dict[str, str], tmp_path: Path
) -> None:
    env_dir = _env_dir(fleet_env)
    shared = _secret(
        env_dir / "fleet.env",
        0o600,
        f"FLEET_SLACK__TOKEN={TOKEN}\nFLEET_EMAIL_REACTOR__PAPERLESS_TOKEN=pl-NEVER-PRINTED",
    )
    cfg = _config(tmp_path / "fleet.toml", "")
    res = run_fleet(["check-config", "--config", str(cfg)], fleet_env, tmp_path)
    assert res.returncode == 78, res.stdout + res.stderr
    assert (
        f"{shared}: FLEET_EMAIL_REACTOR__PAPERLESS_TOKEN is a secret of [email_reactor] only"
        in res.stderr
    )
    assert f"move it to {env_dir / 'fleet-email-reactor.env'}" in res.stderr
    assert "FLEET_SLACK__TOKEN" not in res.stderr, "the shared sections' secrets belong there"
    assert "NEVER-PRINTED" not in res.stdout + res.stderr
    _secret(shared, 0o600, f"FLEET_SLACK__TOKEN={TOKEN}")
    _secret(env_dir / "fleet-email-reactor.env", 0o600, "FLEET_EMAIL_REACTOR__PAPERLESS_TOKEN=x")
    ok = run_fleet(["check-config", "--config", str(cfg)], fleet_env, tmp_path)
    assert ok.returncode == 0, ok.stderr


def test_a_daemon_reads_only_its_own_and_the_shared_secret_files(
    fleet_env: dict[str, str], tmp_path: Path
) -> None:
    """claim-sweeper never opens blueprint-watchdog's token file (here: one it could not
    read), so under systemd it needs no access to it; check-config reads them all."""
    missing = tmp_path / "not-for-claim-sweeper" / "hivemind.token"
    cfg = _config(
        tmp_path / "fleet.toml", f'[blueprint_watchdog]\nhivemind_token_file = "{missing}"\n'
    )
    res = run_fleet(
        ["run", "claim-sweeper", "--once", "--config", str(cfg)], _env(fleet_env), tmp_path
    )
    assert res.returncode == 0, res.stderr
    check = run_fleet(["check-config", "--config", str(cfg)], fleet_env, tmp_path)
    assert check.returncode == 78
    assert "blueprint_watchdog.hivemind_token_file: cannot read" in check.stderr
    # `check-config NAME` answers for `fleet run NAME`
    one = run_fleet(["check-config", "claim-sweeper", "--config", str(cfg)], fleet_env, tmp_path)
    assert one.returncode == 0, one.stderr


def test_systemd_credentials_are_trusted_whatever_their_acl_mask(
    fleet_env: dict[str, str], tmp_path: Path
) -> None:
    """systemd copies a LoadCredential= file into $CREDENTIALS_DIRECTORY for the service's
    user alone; with an ACL its group bits show the mask (0440), which is not a leak."""
    creds = tmp_path / "credentials"
    creds.mkdir(mode=0o500)
    _secret(creds / "slack.token", 0o440)
    env = {
        **_env(fleet_env),
        "CREDENTIALS_DIRECTORY": str(creds),
        "FLEET_SLACK__TOKEN_FILE": str(creds / "slack.token"),
    }
    res = run_fleet(["run", "claim-sweeper", "--once"], env, tmp_path)
    assert res.returncode == 0, res.stderr
    outside = _secret(tmp_path / "elsewhere" / "slack.token", 0o440)
    env["FLEET_SLACK__TOKEN_FILE"] = str(outside)
    res = run_fleet(["run", "claim-sweeper", "--once"], env, tmp_path)
    assert res.returncode == 78 and f"{outside} has mode 0440" in res.stderr


def test_check_config_refuses_urls_with_credentials_without_echoing_them(
    fleet_env: dict[str, str], tmp_path: Path
) -> None:
    cfg = _config(
        tmp_path / "fleet.toml",
        '[email_reactor]\nllm_url = "http://admin:S3CRET-PW@127.0.0.1:11435/v1/chat/completions"\n'
        'paperless_url = "https://bot:S3CRET-PW@paperless.example.com/"\n',
    )
    res = run_fleet(["check-config", "--config", str(cfg)], fleet_env, tmp_path)
    assert res.returncode == 78
    assert "email_reactor.llm_url" in res.stderr and "email_reactor.paperless_url" in res.stderr
    assert "must not carry credentials" in res.stderr
    assert "S3CRET" not in res.stdout + res.stderr and "admin" not in res.stdout + res.stderr
