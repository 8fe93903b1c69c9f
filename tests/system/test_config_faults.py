"""`fleet check-config` catches what `fleet run` would trip over (issue 14, "accepts config that
fails at run time"): bad time zones, clock times, regexes, cron expressions, URLs, durations and
bind addresses, an unreadable or undecodable TOML file, bad JSON or a wrong type in a `FLEET_*`
variable. Each exits 78 naming the key (or the variable, or the file), never with a traceback
and never echoing a secret."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from tests.conftest import run_fleet

pytestmark = pytest.mark.system

USERINFO_URL = "http://admin:SECRET-pw-4711@127.0.0.1/"


def check(env: dict[str, str], tmp_path: Path, toml: str | None = None) -> tuple[int, str]:
    args = ["check-config"]
    if toml is not None:
        if toml.startswith("[slack]"):
            # fleet_env's variable would win over the file; check-config sends nothing anyway
            env = {k: v for k, v in env.items() if k != "FLEET_SLACK__BASE_URL"}
        path = tmp_path / "fleet.toml"
        path.write_text(toml)
        args += ["--config", str(path)]
    res = run_fleet(args, env, tmp_path)
    assert "Traceback" not in res.stderr + res.stdout, res.stderr[-3000:]
    return res.returncode, res.stdout + res.stderr


# Each case: the TOML, and the dotted key the error must name.
BAD_VALUES = {
    "timezone": ('[email_reactor]\ntimezone = "Mars/Olympus"\n', "email_reactor.timezone"),
    "timezone-path": ('[email_reactor]\ntimezone = "../../etc/passwd"\n', "email_reactor.timezone"),
    "digest-25:99": ('[email_reactor]\ndigest_time = "25:99"\n', "email_reactor.digest_time"),
    "digest-7:5": ('[email_reactor]\ndigest_time = "7:5"\n', "email_reactor.digest_time"),
    "digest-24:00": ('[email_reactor]\ndigest_time = "24:00"\n', "email_reactor.digest_time"),
    "digest-12:60": ('[email_reactor]\ndigest_time = "12:60"\n', "email_reactor.digest_time"),
    "regex-transactional": (
        '[email_reactor.heuristics]\ntransactional_senders = ["^ok@", "[unclosed"]\n',
        "email_reactor.heuristics.transactional_senders",
    ),
    "regex-newsletter": (
        '[email_reactor.heuristics]\nnewsletter_senders = ["[unclosed"]\n',
        "email_reactor.heuristics.newsletter_senders",
    ),
    "regex-blueprint": (
        '[blueprint_watchdog]\nblueprint_sections = ["[unclosed"]\n',
        "blueprint_watchdog.blueprint_sections",
    ),
    "regex-deploy-map": (
        '[blueprint_watchdog]\ndeploy_map_sections = ["(open"]\n',
        "blueprint_watchdog.deploy_map_sections",
    ),
    "regex-zakon": (
        '[blueprint_watchdog]\nzakon_sections = ["[unclosed"]\n',
        "blueprint_watchdog.zakon_sections",
    ),
    "glob-blueprint": (
        '[blueprint_watchdog]\nblueprint_globs = ["docs/[z-a].md"]\n',
        "blueprint_watchdog.blueprint_globs",
    ),
    "cron-hour-25": (
        '[blueprint_watchdog]\nschedule = "0 25 * * *"\n',
        "blueprint_watchdog.schedule",
    ),
    "cron-never": (
        '[blueprint_watchdog]\nschedule = "0 0 30 2 *"\n',
        "blueprint_watchdog.schedule",
    ),
    "cron-weekday": (
        '[blueprint_watchdog]\nschedule = "0 2 * * funday"\n',
        "blueprint_watchdog.schedule",
    ),
    "ftp-slack": ('[slack]\nbase_url = "ftp://127.0.0.1/api/"\n', "slack.base_url"),
    "ftp-llm": ('[email_reactor]\nllm_url = "ftp://127.0.0.1/v1"\n', "email_reactor.llm_url"),
    "ftp-paperless": (
        '[email_reactor]\npaperless_url = "ftp://127.0.0.1/"\n',
        "email_reactor.paperless_url",
    ),
    "ftp-hivemind": (
        '[blueprint_watchdog]\nhivemind_url = "ftp://127.0.0.1/"\n',
        "blueprint_watchdog.hivemind_url",
    ),
    "ftp-ollama": (
        '[ollama_health.hosts.anvil]\nurl = "ftp://127.0.0.1:11434"\n',
        "ollama_health.hosts.anvil.url",
    ),
    "ftp-peer": (
        '[[heartbeat.peers]]\nname = "forge"\nurl = "ftp://127.0.0.1:8099/health"\n',
        "heartbeat.peers[0].url",
    ),
    "url-bad-port": (
        '[email_reactor]\nllm_url = "http://127.0.0.1:99999/v1"\n',
        "email_reactor.llm_url",
    ),
    "duration-inf": ("[claim_sweeper]\ninterval_s = inf\n", "claim_sweeper.interval_s"),
    "duration-nan": ("[notify]\nstale_alert_s = nan\n", "notify.stale_alert_s"),
    "duration-huge": ("[email_reactor]\nstale_after_h = 1e12\n", "email_reactor.stale_after_h"),
    "duration-days": ("[email_reactor]\nrecency_days = 100000000\n", "email_reactor.recency_days"),
    "bind": ('[fleet]\nbind = "999.1.1.1"\n', "fleet.bind"),
    "health-bind": ('[heartbeat]\nhealth_bind = "not a host"\n', "heartbeat.health_bind"),
    "nul-path": ('[notify]\noutbox_db = "/tmp/out\\u0000box.db"\n', "notify.outbox_db"),
}


@pytest.mark.parametrize("case", sorted(BAD_VALUES))
def test_check_config_rejects_a_value_run_would_fail_on(
    case: str, fleet_env: dict[str, str], tmp_path: Path
) -> None:
    toml, key = BAD_VALUES[case]
    code, out = check(fleet_env, tmp_path, toml)
    assert code == 78, out
    assert f"{key}:" in out, out


def test_good_values_still_pass(fleet_env: dict[str, str], tmp_path: Path) -> None:
    toml = (
        '[fleet]\nbind = "::1"\n'
        '[email_reactor]\ntimezone = "America/New_York"\ndigest_time = "23:59"\n'
        'paperless_url = "https://paperless.example.com"\n'
        "recency_days = 365\n"
        "[email_reactor.heuristics]\n"
        'newsletter_senders = ["^news(letter)?@", "[a-z]+@lists\\\\."]\n'
        '[blueprint_watchdog]\nschedule = "30 3 * * mon-fri"\nhivemind_url = ""\n'
        '[heartbeat]\nhealth_bind = "localhost"\n'
    )
    code, out = check(fleet_env, tmp_path, toml)
    assert code == 0, out


@pytest.mark.parametrize(
    "key",
    [
        "slack.base_url",
        "email_reactor.llm_url",
        "email_reactor.paperless_url",
        "blueprint_watchdog.hivemind_url",
        "ollama_health.hosts.anvil.url",
    ],
)
def test_a_url_with_credentials_is_refused_without_echoing_them(
    key: str, fleet_env: dict[str, str], tmp_path: Path
) -> None:
    *tables, name = key.split(".")
    code, out = check(fleet_env, tmp_path, f'[{".".join(tables)}]\n{name} = "{USERINFO_URL}"\n')
    assert code == 78 and f"{key}:" in out, out
    assert "SECRET-pw-4711" not in out and "admin" not in out


def test_run_refuses_the_same_values(fleet_env: dict[str, str], tmp_path: Path) -> None:
    # `run` shares the validators: the daemon never starts to find out at 08:00.
    path = tmp_path / "fleet.toml"
    path.write_text('[email_reactor]\ntimezone = "Mars/Olympus"\ndigest_time = "7:5"\n')
    res = run_fleet(["run", "email-reactor", "--once", "--config", str(path)], fleet_env, tmp_path)
    assert res.returncode == 78, res.stdout[-2000:] + res.stderr[-2000:]
    assert "email_reactor.timezone:" in res.stderr and "email_reactor.digest_time:" in res.stderr
    assert "Traceback" not in res.stderr


# Unreadable or undecodable input --------------------------------------------------------------
def test_a_binary_toml_file_exits_78_naming_the_file(
    fleet_env: dict[str, str], tmp_path: Path
) -> None:
    rng = random.Random(14)
    path = tmp_path / "garbage.toml"
    path.write_bytes(
        b'[fleet]\nhost = "a\xff\xfe"\n' + bytes(rng.randrange(256) for _ in range(4096))
    )
    for args in (["check-config"], ["run", "claim-sweeper", "--once"]):
        res = run_fleet([*args, "--config", str(path)], fleet_env, tmp_path)
        assert res.returncode == 78, res.stderr[-3000:]
        assert "Traceback" not in res.stderr
        assert str(path) in res.stderr and "UTF-8" in res.stderr


def test_random_bytes_never_give_a_traceback(fleet_env: dict[str, str], tmp_path: Path) -> None:
    rng = random.Random(1414)
    path = tmp_path / "noise.toml"
    for _ in range(3):
        path.write_bytes(bytes(rng.randrange(256) for _ in range(rng.randrange(1, 2048))))
        res = run_fleet(["check-config", "--config", str(path)], fleet_env, tmp_path)
        assert res.returncode == 78 and "Traceback" not in res.stderr, res.stderr[-3000:]
        assert str(path) in res.stderr


def test_a_toml_syntax_error_exits_78_naming_the_file(
    fleet_env: dict[str, str], tmp_path: Path
) -> None:
    code, out = check(fleet_env, tmp_path, '[fleet]\nroot = "/srv\n[slack\n')
    assert code == 78 and "not valid TOML" in out and str(tmp_path / "fleet.toml") in out, out


def test_a_binary_secret_file_exits_78_naming_its_key(
    fleet_env: dict[str, str], tmp_path: Path
) -> None:
    token = tmp_path / "slack.token"
    token.write_bytes(b"xoxb-\xff\xfe-binary")
    token.chmod(0o600)  # private, so the one problem is its content
    env = {**fleet_env, "FLEET_SLACK__TOKEN_FILE": str(token)}
    code, out = check(env, tmp_path)
    assert code == 78 and "slack.token_file:" in out and "xoxb" not in out, out


@pytest.mark.parametrize(
    ("var", "value"),
    [
        ("FLEET_EMAIL_REACTOR__FREE_MAIL_DOMAINS", "[bad json"),
        ("FLEET_EMAIL_REACTOR__FREE_MAIL_DOMAINS", "gmail.com"),  # a list wants JSON
        ("FLEET_HEARTBEAT__PEERS", '[{"name": "forge", '),
        ("FLEET_MISSION_CONTROL__TASK_DEFAULTS", "{created_by: x}"),
        ("FLEET_EMAIL_REACTOR", "{"),
    ],
)
def test_bad_json_in_a_fleet_variable_exits_78_naming_it(
    var: str, value: str, fleet_env: dict[str, str], tmp_path: Path
) -> None:
    code, out = check({**fleet_env, var: value}, tmp_path)
    assert code == 78 and var in out and "JSON" in out, out


def test_a_secret_in_bad_json_is_never_echoed(fleet_env: dict[str, str], tmp_path: Path) -> None:
    env = {**fleet_env, "FLEET_SLACK": '{"token": "xoxb-SECRET-in-json'}
    code, out = check(env, tmp_path)
    assert code == 78 and "FLEET_SLACK" in out, out
    assert "xoxb-SECRET" not in out


@pytest.mark.parametrize(
    ("var", "value", "key"),
    [
        ("FLEET_FLEET__LOG_KEEP", "many", "fleet.log_keep"),
        ("FLEET_EMAIL_REACTOR__FREE_MAIL_DOMAINS", '{"a": 1}', "email_reactor.free_mail_domains"),
        ("FLEET_CLAIM_SWEEPER__AUTO_RELEASE", "perhaps", "claim_sweeper.auto_release"),
        ("FLEET_HEARTBEAT__PEERS", "[1]", "heartbeat.peers[0]"),
    ],
)
def test_a_fleet_variable_of_the_wrong_type_names_key_and_variable(
    var: str, value: str, key: str, fleet_env: dict[str, str], tmp_path: Path
) -> None:
    code, out = check({**fleet_env, var: value}, tmp_path)
    assert code == 78 and f"{key}:" in out and var in out, out


def test_a_fleet_variable_that_is_not_utf8_exits_78(
    fleet_env: dict[str, str], tmp_path: Path
) -> None:
    env = {**fleet_env, "FLEET_FLEET__HOST": os.fsdecode(b"anvil\xff")}
    code, out = check(env, tmp_path)
    assert code == 78 and "FLEET_FLEET__HOST" in out and "UTF-8" in out, out
