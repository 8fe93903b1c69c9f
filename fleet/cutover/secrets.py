"""The secrets a switched host needs, checked: each secrets environment file a service here
loads (``litestream.env``: present, 0600, this user's, every ``${VAR}`` its YAML references
defined) and the Slack token the outbox sends with (present, a bot/user token's shape, its file
private; optionally accepted by Slack's ``auth.test``).

Findings name files, modes and variable names, never a value. Reading only; ``--online`` makes
the one HTTP request.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from shared.config import FleetConfig
from shared.envfile import parse_env_text
from shared.manifest import DaemonManifest
from shared.units import ServiceSpec

__all__ = [
    "EnvFileState",
    "SlackTokenState",
    "env_file_states",
    "slack_auth_test",
    "slack_token_state",
]


@dataclass(frozen=True)
class EnvFileState:
    """One secrets file and what is wrong with it. ``mode`` is set when only its permission
    bits are (``chmod 600`` fixes that); ``owner`` when another user owns it."""

    path: Path
    services: tuple[str, ...]
    variables: tuple[str, ...]
    exists: bool = False
    defined: frozenset[str] = frozenset()
    mode: int | None = None
    owner: str | None = None
    unreadable: str | None = None
    bad_lines: tuple[str, ...] = ()

    @property
    def missing(self) -> tuple[str, ...]:
        return tuple(v for v in self.variables if v not in self.defined)

    @property
    def ok(self) -> bool:
        return (
            self.exists
            and self.mode is None
            and self.owner is None
            and self.unreadable is None
            and not self.bad_lines
            and not self.missing
        )


def env_file_states(
    config: FleetConfig, manifests: Sequence[DaemonManifest], specs: Sequence[ServiceSpec]
) -> list[EnvFileState]:
    """Every secrets file a service in ``specs`` loads, with the variables the manifests
    declare for it, as found on disk."""
    users: dict[Path, list[str]] = {}
    for spec in specs:
        if spec.environment_file is not None:
            users.setdefault(spec.environment_file, []).append(spec.name)
    variables: dict[Path, list[str]] = {path: [] for path in users}
    for manifest in manifests:
        declared = manifest.secrets_env(config, config.daemon_section(manifest.section_name))
        if declared is not None and declared.path in variables:
            variables[declared.path] += declared.variables
    return [
        _state(path, tuple(names), tuple(dict.fromkeys(variables[path])))
        for path, names in users.items()
    ]


def _state(path: Path, services: tuple[str, ...], variables: tuple[str, ...]) -> EnvFileState:
    base = EnvFileState(path, services, variables)
    try:
        st = path.stat()
    except FileNotFoundError:
        return base
    except OSError as exc:
        return EnvFileState(path, services, variables, True, unreadable=exc.strerror)
    mode = stat.S_IMODE(st.st_mode)
    try:
        values, problems = parse_env_text(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        return EnvFileState(
            path, services, variables, True, unreadable=getattr(exc, "strerror", None) or "not text"
        )
    return EnvFileState(
        path,
        services,
        variables,
        exists=True,
        defined=frozenset(values),
        mode=mode if mode & 0o077 else None,
        owner=None if st.st_uid == os.geteuid() else f"uid {st.st_uid}",
        bad_lines=tuple(problems),
    )


@dataclass(frozen=True)
class SlackTokenState:
    """What keeps the outbox from sending to Slack, if anything. ``token_mode`` is set when
    the token file's only problem is its permission bits."""

    problems: list[str] = field(default_factory=list)
    token_file: Path | None = None
    token_mode: int | None = None

    @property
    def ok(self) -> bool:
        return not self.problems and self.token_mode is None


def slack_token_state(config: FleetConfig) -> SlackTokenState:
    """The token as the daemons will read it (the config loader already read ``token_file``;
    an unreadable one made it refuse with exit 78)."""
    token = config.slack.token.get_secret_value()
    path = config.slack.token_file
    problems: list[str] = []
    mode: int | None = None
    if path is not None:
        path = path.expanduser()
        try:
            st = path.stat()
        except OSError as exc:
            problems.append(f"token file {path}: cannot stat it: {exc.strerror}")
        else:
            if not stat.S_ISREG(st.st_mode):
                problems.append(f"token file {path}: is not a regular file")
            elif st.st_uid != os.geteuid():
                # chmod would not make it ours: by hand
                problems.append(
                    f"token file {path}: owned by uid {st.st_uid}, not by this user "
                    f"(uid {os.geteuid()})"
                )
            elif stat.S_IMODE(st.st_mode) & 0o077:
                mode = stat.S_IMODE(st.st_mode)
    if not token:
        problems.append(
            "no Slack token ([slack] token / token_file, FLEET_SLACK__TOKEN): every push would "
            "wait in the outbox"
        )
    elif not token.startswith(("xoxb-", "xoxp-")):
        problems.append(
            "the Slack token is not a bot (xoxb-) or user (xoxp-) token: Slack would refuse "
            "every push"
        )
    return SlackTokenState(problems, path, mode)


def slack_auth_test(config: FleetConfig) -> str | None:
    """Ask Slack's ``auth.test`` whether it accepts the token; None when it does, else why."""
    import httpx

    token = config.slack.token.get_secret_value()
    url = config.slack.base_url.rstrip("/") + "/auth.test"
    try:
        response = httpx.post(
            url,
            headers={"Authorization": f"Bearer {token}"},
            timeout=config.slack.timeout_s,
        )
        answer = response.json()
    except httpx.HTTPError as exc:
        return f"cannot reach Slack at {config.slack.base_url}: {type(exc).__name__}"
    except ValueError:
        return f"Slack at {config.slack.base_url} answered HTTP {response.status_code}, not JSON"
    if not isinstance(answer, dict) or answer.get("ok") is not True:
        error = answer.get("error") if isinstance(answer, dict) else None
        return f"Slack auth.test refused the token: {error or 'no reason given'}"
    return None
