"""shared.mc_target: which store a verb uses, URL checks, redaction, and the password file
rules (private file, or the service manager's credentials directory)."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared.mc_target import (
    CREDENTIAL_NAME,
    McTarget,
    McTargetError,
    check_url,
    read_password,
    redact_url,
)


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("ALAI_MC_URL", "ALAI_MC_PASSWORD_FILE", "CREDENTIALS_DIRECTORY"):
        monkeypatch.delenv(name, raising=False)


def test_order_db_then_env_then_config_url_then_config_db(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    db = tmp_path / "mc.db"
    cfg_url = "postgresql://fleet@cfg.example.com/mc"
    assert McTarget.resolve(config_db=db) == McTarget(path=db)
    assert McTarget.resolve(config_url=cfg_url, config_db=db).url == cfg_url
    monkeypatch.setenv("ALAI_MC_URL", "postgresql://fleet@env.example.com:5433/mc")
    assert McTarget.resolve(config_url=cfg_url, config_db=db).url == (
        "postgresql://fleet@env.example.com:5433/mc"
    )
    assert McTarget.resolve(explicit=str(db), config_url=cfg_url).path == db
    assert McTarget.resolve(explicit="postgres://u@h/d").is_postgres


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("postgresql://fleet:hunter2@db.example.com/mc", "holds a password"),
        ("postgresql://fleet@db.example.com", "no database name"),
        ("postgresql://fleet@db.example.com:99999/mc", "out of range"),
        ("mysql://fleet@db.example.com/mc", "not a postgresql:// URL"),
    ],
)
def test_bad_urls_are_refused_without_showing_a_password(url: str, why: str) -> None:
    with pytest.raises(McTargetError, match=why) as excinfo:
        check_url(url)
    assert "hunter2" not in str(excinfo.value)


def test_redact_url() -> None:
    assert redact_url("postgresql://u:pw@h:5/d?x=1") == "postgresql://u:***@h:5/d?x=1"
    assert redact_url("postgresql://u@h/d") == "postgresql://u@h/d"


def test_password_file_must_be_private(tmp_path: Path) -> None:
    pw = tmp_path / "pw"
    pw.write_text("s3cret\n")
    pw.chmod(0o600)
    assert read_password(pw) == "s3cret"
    pw.chmod(0o640)
    with pytest.raises(McTargetError, match="chmod 600") as excinfo:
        read_password(pw)
    assert "s3cret" not in str(excinfo.value)
    with pytest.raises(McTargetError, match="cannot read"):
        read_password(tmp_path / "absent")
    assert read_password(None) is None  # nothing configured: libpq's own means


def test_password_from_env_file_and_credentials_dir(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / CREDENTIAL_NAME).write_text("from-systemd")
    (creds / CREDENTIAL_NAME).chmod(0o640)  # systemd's copy may show group bits: trusted
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    assert read_password(None) == "from-systemd"
    env_file = tmp_path / "env.pw"
    env_file.write_text("from-env")
    env_file.chmod(0o600)
    monkeypatch.setenv("ALAI_MC_PASSWORD_FILE", str(env_file))
    assert read_password(None) == "from-env"
