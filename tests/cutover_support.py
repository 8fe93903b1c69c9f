"""A legacy host for the cutover tests, built from the seed's descriptions (names and paths,
never its people or hosts): the old LaunchAgent plists in ``<home>/Library/LaunchAgents`` (real
plist XML), a systemd twin, ``ops-watchdog.json`` listing the inbox watcher, the old
litestream.yml with an error ``fleet litestream lint`` catches, a Slack token file readable by
everyone, and no litestream.env; a fleet config for it; and fake ``launchctl``/``systemctl``
executables that log their argv (one JSON line per call) and keep which jobs are loaded.
"""

from __future__ import annotations

import json
import os
import plistlib
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.fakes.slack import DEFAULT_TOKEN
from tests.units_support import write_config

__all__ = ["LegacyHost", "build_legacy_host", "fake_env", "install_fakes", "logged_calls"]

AZURE_ACCOUNT = "examplebackups"
AZURE_KEY = "ZmFrZS1rZXktZm9yLXRlc3RzLW9ubHk="  # base64 of a fake, never a real key

OLD_LITESTREAM_YML = """\
# the old ANVIL replicate config (litestream 0.3 style)
dbs:
  - path: {db_dir}/mission-control.db
    replicas:
      - name: mc-abs
        type: abs
        bucket: system-db-backups
        path: litestream/mission-control
        retention: 168h
      - type: file
        path: /mnt/backup/mission-control
"""

TIER_TABLE = """\
[classes.p0-critical]
tier = "P0"
retention = "168h"
sync_interval = "1s"

[replica]
type = "abs"
account_name = "${LITESTREAM_AZURE_ACCOUNT}"
account_key = "${LITESTREAM_AZURE_ACCOUNT_KEY}"
bucket = "system-db-backups"
path_prefix = "litestream"

[[databases]]
name = "mission-control"
class = "p0-critical"
"""


@dataclass
class LegacyHost:
    home: Path
    root: Path
    config: Path
    port: int  # heartbeat.health_port: the one health-server.js holds
    token_file: Path

    @property
    def agents(self) -> Path:
        return self.home / "Library" / "LaunchAgents"

    @property
    def system_config(self) -> Path:
        return self.home / "system" / "config"

    @property
    def env_file(self) -> Path:
        return self.root / "config" / "litestream.env"

    def plist(self, name: str) -> Path:
        return self.agents / f"{name}.plist"

    @property
    def launch_daemons(self) -> Path:
        """Where a system-domain cutover installs the fleet's LaunchDaemons in these tests."""
        return self.home.parent / "Library" / "LaunchDaemons"

    def args(self, *more: str, platform: str = "darwin", mode: str = "user") -> list[str]:
        args = [
            *more,
            "--config",
            str(self.config),
            "--home",
            str(self.home),
            "--platform",
            platform,
            "--mode",
            mode,
            "--systemd-system-dir",
            str(self.home / "etc-systemd-system"),
        ]
        if mode == "system":
            args += ["--launchd-system-dir", str(self.launch_daemons)]
        return args


def _plist(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(plistlib.dumps(data))


def build_legacy_host(
    tmp_path: Path,
    port: int,
    *,
    role: str = "primary",
    home: Path | None = None,
    root: Path | None = None,
    fleet: str = "",
) -> LegacyHost:
    """The legacy host under ``tmp_path`` (``home``/``root`` elsewhere for the docs' run:
    docs/cutover.md); ``fleet`` adds [fleet] lines."""
    home = home or tmp_path / "home"
    root = root or tmp_path / "root"
    agents = home / "Library" / "LaunchAgents"
    tools = home / "system" / "tools"
    node = "/usr/local/bin/node"
    _plist(
        agents / "no.alai.inbox-watcher.plist",
        {
            "Label": "no.alai.inbox-watcher",
            "ProgramArguments": [node, str(tools / "inbox-watcher.js")],
            "StartInterval": 300,
        },
    )
    _plist(
        agents / "com.john.email-reactor-digest.plist",
        {
            "Label": "com.john.email-reactor-digest",
            "ProgramArguments": [node, str(tools / "email-reactor-digest.js")],
            "StartCalendarInterval": {"Hour": 8, "Minute": 0},
        },
    )
    _plist(
        agents / "com.alai.litestream.plist",
        {
            "Label": "com.alai.litestream",
            "ProgramArguments": [
                "/opt/homebrew/bin/litestream",
                "replicate",
                "-config",
                str(home / "system" / "config" / "litestream.yml"),
            ],
            "EnvironmentVariables": {
                "LITESTREAM_AZURE_ACCOUNT": AZURE_ACCOUNT,
                "LITESTREAM_AZURE_ACCOUNT_KEY": AZURE_KEY,
            },
            "KeepAlive": True,
        },
    )
    # labels unknown in the seed: recognised by the script they run
    _plist(
        agents / "com.example.health.plist",
        {
            "Label": "com.example.health",
            "ProgramArguments": [node, str(tools / "health-server.js")],
        },
    )
    _plist(
        agents / "com.example.ollama-monitor.plist",
        {
            "Label": "com.example.ollama-monitor",
            "ProgramArguments": ["/bin/sh", "-c", f"{node} {tools}/ollama-health-monitor.js"],
        },
    )
    # the standby's restore loop: on this primary the fleet does not replace it
    _plist(
        agents / "com.alai.litestream-restore.plist",
        {
            "Label": "com.alai.litestream-restore",
            "ProgramArguments": [
                "/bin/bash",
                str(home / "system/scripts/litestream-restore-loop.sh"),
            ],
        },
    )
    _plist(
        agents / "com.example.unrelated.plist",
        {"Label": "com.example.unrelated", "ProgramArguments": ["/usr/bin/true"]},
    )
    (agents / "com.example.broken.plist").write_text("<?xml version='1.0'?><plist><dict><key>")
    units = home / ".config" / "systemd" / "user"
    units.mkdir(parents=True)
    (units / "inbox-watcher.service").write_text(
        f"[Unit]\nDescription=inbox watcher\n\n[Service]\nExecStart={node} "
        f"{tools}/inbox-watcher.js\nEnvironment=NODE_ENV=production\n\n"
        "[Install]\nWantedBy=default.target\n"
    )
    (units / "unrelated.service").write_text("[Service]\nExecStart=/usr/bin/true\n")
    config_dir = home / "system" / "config"
    config_dir.mkdir(parents=True, exist_ok=True)
    (config_dir / "ops-watchdog.json").write_text(
        json.dumps(
            {
                "interval_s": 60,
                "critical_services": [
                    "no.alai.inbox-watcher",
                    {"label": "com.alai.litestream", "restart": True},
                    "no.alai.mehanik",
                ],
            },
            indent=2,
        )
    )
    (config_dir / "litestream.yml").write_text(
        OLD_LITESTREAM_YML.format(db_dir=home / "system" / "databases")
    )
    (root / "config").mkdir(parents=True, exist_ok=True)
    (root / "config" / "databases.toml").write_text(TIER_TABLE)
    token_file = root / "config" / "slack.token"
    token_file.write_text(DEFAULT_TOKEN + "\n")
    token_file.chmod(0o644)
    config = write_config(
        tmp_path / "fleet.toml",
        root,
        enable="all",
        fleet=f'role = "{role}"\n{fleet}',
        body="\n".join(
            [
                "[slack]",
                f'token_file = "{token_file}"',
                'base_url = "http://127.0.0.1:9/api/"',
                "[heartbeat]",
                f"health_port = {port}",
                "metrics_port = 0",
                "[email_reactor]",
                "metrics_port = 0",
                "[ollama_health]",
                "metrics_port = 0",
                "[restore_loop]",
                "metrics_port = 0",
                "[blueprint_watchdog]",
                "metrics_port = 0",
                "[claim_sweeper]",
                "metrics_port = 0",
            ]
        ),
    )
    return LegacyHost(home, root, config, port, token_file)


FAKE = r'''#!{python}
"""A fake {name}: logs argv, keeps the loaded jobs in a JSON state file, fails on demand."""
import json, os, plistlib, sys
name = {name!r}
args = sys.argv[1:]
with open(os.environ["FAKE_CALLS"], "a") as fh:
    fh.write(json.dumps([name, *args]) + "\n")
fail = os.environ.get("FAKE_FAIL", "")
if fail and fail in " ".join([name, *args]):
    print(f"{{name}}: injected failure", file=sys.stderr)
    sys.exit(5)
state_file = os.environ["FAKE_STATE"]
try:
    with open(state_file) as fh:
        loaded = set(json.load(fh))
except FileNotFoundError:
    loaded = set()
def save():
    with open(state_file, "w") as fh:
        json.dump(sorted(loaded), fh)
def label_of(target):
    if target.endswith((".plist", ".service", ".timer")) and os.path.isfile(target):
        if target.endswith(".plist"):
            with open(target, "rb") as fh:
                return plistlib.load(fh)["Label"]
    return target.rsplit("/", 1)[-1]
code = 0
if name == "launchctl":
    verb = args[0] if args else ""
    if verb == "print":
        code = 0 if args[1].rsplit("/", 1)[-1] in loaded else 113
    elif verb == "bootout":
        target = args[2] if len(args) > 2 else args[1]
        label = label_of(target)
        code = 0 if label in loaded else 3
        loaded.discard(label)
    elif verb == "bootstrap":
        label = label_of(args[2])
        code = 5 if label in loaded else 0
        loaded.add(label)
else:
    words = [a for a in args if not a.startswith("-")]
    verb = words[0] if words else ""
    units = words[1:]
    if verb == "is-active":
        code = 0 if any(u in loaded for u in units) else 3  # as systemctl: ANY is active
    elif verb in ("enable", "start", "restart", "try-restart"):
        if verb != "enable" or "--now" in args:
            loaded.update(units)
    elif verb in ("disable", "stop"):
        if verb != "disable" or "--now" in args:
            loaded.difference_update(units)
save()
sys.exit(code)
'''


def install_fakes(bin_dir: Path) -> Path:
    """Write fake launchctl and systemctl into ``bin_dir``; returns it."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    for name in ("launchctl", "systemctl"):
        path = bin_dir / name
        path.write_text(FAKE.format(python=sys.executable, name=name))
        path.chmod(0o755)
    return bin_dir


def fake_env(
    base: dict[str, str], bin_dir: Path, state_dir: Path, loaded: list[str] | None = None
) -> dict[str, str]:
    """``base`` with the fakes first on PATH, their log and state under ``state_dir`` (the
    jobs in ``loaded`` start loaded)."""
    state_dir.mkdir(parents=True, exist_ok=True)
    state = state_dir / "fake-state.json"
    if loaded is not None:
        state.write_text(json.dumps(loaded))
    return {
        **base,
        "PATH": f"{bin_dir}{os.pathsep}{base.get('PATH', os.defpath)}",
        "FAKE_CALLS": str(state_dir / "fake-calls.jsonl"),
        "FAKE_STATE": str(state),
    }


def logged_calls(env: dict[str, str]) -> list[list[str]]:
    path = Path(env["FAKE_CALLS"])
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line]
