"""The role file holds exactly ``primary`` or ``standby`` (surrounding whitespace trimmed);
anything else is an error that names the file and quotes what it holds, cut short and with
every control character escaped. A FIFO, a device or a directory at the path is refused
without blocking or reading without bound. Unit generation, /health and ``fleet status``
see the same error (the subprocess checks are in tests/system/test_role_file.py)."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from shared.config import FleetConfig
from shared.roles import Role, RoleFileError, effective_role, read_role_file, write_role_file

MiB = 1024 * 1024


def _text(data: str) -> Callable[[Path], None]:
    return lambda p: p.write_text(data, encoding="utf-8")


def _bytes(data: bytes) -> Callable[[Path], None]:
    return lambda p: p.write_bytes(data)


def _dir(p: Path) -> None:
    p.mkdir()


def _fifo(p: Path) -> None:
    os.mkfifo(p)


def _dev_zero(p: Path) -> None:
    p.symlink_to("/dev/zero")


def _dangling(p: Path) -> None:
    p.symlink_to(p.parent / "nowhere")


#: (id, how to make the path): every one of these must be refused
GARBLED: list[tuple[str, Callable[[Path], None]]] = [
    ("typo-stanby", _text("stanby\n")),
    ("typo-primery", _text("primery")),
    ("capitalised", _text("Primary\n")),
    ("upper-case", _text("STANDBY")),
    ("utf8-bom", _bytes(b"\xef\xbb\xbfprimary\n")),
    ("trailing-nul", _bytes(b"primary\x00")),
    ("empty", _text("")),
    ("only-whitespace", _text("  \n\t\n")),
    ("trailing-garbage", _text("primary garbage\n")),
    ("two-roles", _text("primary\nstandby\n")),
    ("punctuation", _text("primary;")),
    ("toml-style", _text('role = "primary"\n')),
    ("not-utf8", _bytes(b"\xff\xfeprimary")),
    ("utf16", _bytes("standby".encode("utf-16"))),
    ("1MiB-junk", _bytes(b"\x07junk\x1b" * (MiB // 6))),
    ("primary-then-1MiB-of-spaces", _bytes(b"primary" + b" " * MiB)),
    ("terminal-escape", _text("\x1b[2J\x1b[31mprimary")),
    ("directory", _dir),
    ("fifo", _fifo),
    ("symlink-to-dev-zero", _dev_zero),
    ("dangling-symlink", _dangling),
]


def _read_bounded(path: Path) -> BaseException | Role | None:
    """read_role_file in a thread: a FIFO opened for blocking reads, or /dev/zero read to the
    end, would never return; the test fails instead of hanging."""
    out: list[BaseException | Role | None] = []

    def go() -> None:
        try:
            out.append(read_role_file(path))
        except BaseException as exc:
            out.append(exc)

    worker = threading.Thread(target=go, daemon=True)
    worker.start()
    worker.join(timeout=20)
    assert not worker.is_alive(), f"reading {path} blocked"
    return out[0]


@pytest.mark.parametrize(("make"), [m for _i, m in GARBLED], ids=[i for i, _m in GARBLED])
def test_a_garbled_role_file_is_an_error_never_primary(
    tmp_path: Path, make: Callable[[Path], None]
) -> None:
    path = tmp_path / "state" / "role"
    path.parent.mkdir()
    make(path)
    result = _read_bounded(path)
    assert isinstance(result, RoleFileError), result
    message = str(result)
    assert str(path) in message
    assert "primary" in message and "standby" in message  # says what is expected
    assert "fleet role set" in message  # and how to fix it
    assert message.isprintable(), repr(message)  # no control character reaches a terminal
    assert len(message) < 500
    assert result.path == path
    with pytest.raises(RoleFileError):
        effective_role("primary", path)  # never falls back to [fleet] role
    with pytest.raises(RoleFileError):
        effective_role("standby", path)


def test_the_message_quotes_the_content_safely(tmp_path: Path) -> None:
    path = tmp_path / "role"
    path.write_bytes(b"stanby\n")
    assert "'stanby\\n'" in str(_read_bounded(path))
    path.write_bytes(b"\xef\xbb\xbfprimary")
    assert "\\ufeffprimary" in str(_read_bounded(path))
    path.write_bytes(b"primary\x00")
    assert "primary\\x00" in str(_read_bounded(path))
    path.write_bytes(b"x" * MiB)
    message = str(_read_bounded(path))
    assert "xxxx" in message and message.count("x") < 100


@pytest.mark.parametrize(
    ("data", "role"),
    [
        (b"primary", Role.PRIMARY),
        (b"standby", Role.STANDBY),
        (b" standby\n", Role.STANDBY),
        (b"primary\n", Role.PRIMARY),
        (b"\tprimary  \r\n", Role.PRIMARY),
    ],
)
def test_exactly_a_role_name_with_whitespace_around_is_accepted(
    tmp_path: Path, data: bytes, role: Role
) -> None:
    path = tmp_path / "role"
    path.write_bytes(data)
    assert read_role_file(path) is role
    other = Role.STANDBY if role is Role.PRIMARY else Role.PRIMARY
    assert effective_role(other, path) is role  # the file wins over [fleet] role


def test_no_role_file_means_the_configured_role(tmp_path: Path) -> None:
    path = tmp_path / "state" / "role"
    assert read_role_file(path) is None
    assert effective_role("standby", path) is Role.STANDBY
    assert effective_role("primary", path) is Role.PRIMARY


def test_write_role_file_is_atomic_and_replaces_a_garbled_one(tmp_path: Path) -> None:
    path = tmp_path / "state" / "role"
    path.parent.mkdir()
    path.write_bytes(b"\xef\xbb\xbfstanby\x00")
    write_role_file(path, Role.STANDBY)
    assert path.read_bytes() == b"standby\n"
    assert read_role_file(path) is Role.STANDBY
    assert path.stat().st_mode & 0o777 == 0o600
    assert [p.name for p in path.parent.iterdir()] == ["role"], "no temp file left behind"


def _config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FleetConfig:
    """Defaults (every daemon enabled, role primary) under tmp_path, no FLEET_* from the shell."""
    from fleet.config import load_config

    for key in list(os.environ):
        if key.startswith("FLEET_"):
            monkeypatch.delenv(key)
    path = tmp_path / "fleet.toml"
    path.write_text(f'[fleet]\nroot = "{tmp_path / "root"}"\nhost = "forge"\nrole = "primary"\n')
    return load_config(path)


def test_unit_generation_refuses_a_garbled_role_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The standby must never get the primary's units because its role file is unreadable."""
    from fleet.registry import manifests
    from shared.units import InstallLayout, generate

    config = _config(tmp_path, monkeypatch)
    config.role_file.parent.mkdir(parents=True)
    config.role_file.write_text("stanby\n")
    layout = InstallLayout(
        mode="user", prefix=tmp_path / "venv", config_file=None, user=None, home=tmp_path
    )
    with pytest.raises(RoleFileError, match="stanby"):
        generate(config, manifests(), "systemd", layout)
    config.role_file.write_text("standby\n")
    files = generate(config, manifests(), "systemd", layout).files
    assert "alai-fleet-email-reactor.service" not in files


def test_health_shows_the_role_file_error_instead_of_a_role(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from daemons.heartbeat.health import HealthView
    from fleet.registry import manifests

    config = _config(tmp_path, monkeypatch)
    config.role_file.parent.mkdir(parents=True)
    config.role_file.write_bytes(b"primary\x00")
    report = HealthView(config, manifests(), cache_s=0).read()
    assert report.ok is False
    assert report.body["status"] == "degraded"
    assert report.body["role"] is None
    assert str(config.role_file) in report.body["role_error"]
    assert "primary\\x00" in report.body["role_error"]
    config.role_file.write_text("standby\n")
    report = HealthView(config, manifests(), cache_s=0).read()
    assert report.body["role"] == "standby" and "role_error" not in report.body
