"""Which outbox ``[notify]`` selects (``outbox_for``), and the keys that select it: no url ->
the SQLite file exactly as before; a ``postgresql://`` url -> the shared Postgres outbox (built,
not connected: no network here); a url holding a password, or not a Postgres URL, is refused by
the config model naming why, without the password. The password file must be private."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError

from shared.config import ConfigError, load_config
from shared.notify import outbox_for
from shared.notify.outbox_postgres import STORE_NAME, PostgresOutbox
from shared.notify.outbox_sqlite import SqliteOutbox
from shared.sections import NotifySection

URL = "postgresql://fleet@db.example.com:5432/fleet"


def test_no_url_is_the_sqlite_file(tmp_path: Path) -> None:
    ob = outbox_for(NotifySection(outbox_db=tmp_path / "outbox.db"))
    assert isinstance(ob, SqliteOutbox)
    assert ob.path == tmp_path / "outbox.db"
    assert ob.store_name == "outbox.db"


def test_a_postgres_url_is_the_shared_outbox_and_nothing_shows_the_password() -> None:
    ob = outbox_for(NotifySection(url=URL, password=SecretStr("s3cret-pw")))
    assert isinstance(ob, PostgresOutbox)
    assert ob.store_name == STORE_NAME
    assert ob.shown == URL
    assert "s3cret-pw" not in repr(vars(ob).get("shown")) + ob.url


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("postgresql://fleet:s3cret-pw@db.example.com/fleet", "holds a password"),
        ("mysql://fleet@db.example.com/fleet", "not a postgresql:// URL"),
        ("postgresql://fleet@db.example.com/", "no database name"),
    ],
)
def test_a_bad_url_is_refused_naming_why(url: str, why: str) -> None:
    with pytest.raises(ValidationError) as info:
        NotifySection(url=url)
    assert why in str(info.value)
    assert "s3cret-pw" not in str(info.value)


def _write(path: Path, text: str, mode: int) -> Path:
    path.write_text(text)
    os.chmod(path, mode)
    return path


def test_the_password_file_is_read_into_the_section_and_must_be_private(tmp_path: Path) -> None:
    pw = _write(tmp_path / "pg-password", "s3cret-pw\n", 0o600)
    config = _write(
        tmp_path / "fleet.toml",
        f'[fleet]\nroot = "{tmp_path}"\n\n[notify]\nurl = "{URL}"\npassword_file = "{pw}"\n',
        0o600,
    )
    loaded = load_config(config)
    assert loaded.notify.password.get_secret_value() == "s3cret-pw"
    assert isinstance(outbox_for(loaded.notify), PostgresOutbox)

    os.chmod(pw, 0o644)
    with pytest.raises(ConfigError) as info:
        load_config(config)
    assert "notify.password_file" in str(info.value)
    assert "s3cret-pw" not in str(info.value)
