"""The keyed log hash of addresses (shared.logging): an HMAC-SHA256 under a per-host key that
is made 0600 at the first start, reused afterwards, refused when others can read it; never the
bare sha256 a dictionary of addresses reverses."""

from __future__ import annotations

import hashlib
import hmac
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

import shared.logging as fleet_logging
from shared.logging import HashKeyError, hash_email, load_hash_key, use_hash_key


@pytest.fixture(autouse=True)
def _restore_key() -> Iterator[None]:
    saved = fleet_logging._hash_key
    yield
    use_hash_key(saved)


def test_the_key_is_made_private_once_and_reused(tmp_path: Path) -> None:
    path = tmp_path / "root" / "state" / "log-hash.key"
    assert load_hash_key(path, create=False) is None
    assert not path.exists(), "create=False makes nothing"
    key = load_hash_key(path)
    assert key is not None and len(key) == 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert load_hash_key(path) == key, "a restart keeps the key"
    assert load_hash_key(path, create=False) == key
    assert [p.name for p in path.parent.iterdir()] == ["log-hash.key"], "no temp file left"


def test_the_hash_is_keyed_not_bare_sha256(tmp_path: Path) -> None:
    key = load_hash_key(tmp_path / "log-hash.key")
    assert key is not None
    use_hash_key(key)
    address = "Partner@Example.org "
    bare = hashlib.sha256(b"partner@example.org").hexdigest()[:8]
    keyed = hmac.new(key, b"partner@example.org", hashlib.sha256).hexdigest()[:8]
    assert hash_email(address) == keyed != bare
    assert hash_email("partner@example.org") == keyed, "trimmed and case-folded"
    use_hash_key(b"\x01" * 32)
    assert hash_email(address) != keyed, "another host's key gives another hash"


def test_before_a_host_key_is_used_the_hash_is_still_keyed() -> None:
    bare = hashlib.sha256(b"ceo@example.com").hexdigest()[:8]
    assert hash_email("ceo@example.com") != bare


@pytest.mark.parametrize(
    ("mode", "content", "message"),
    [
        (0o644, "ab" * 32, "mode 0644"),
        (0o640, "ab" * 32, "mode 0640"),
        (0o600, "not hex", "32-byte hex key"),
        (0o600, "ab" * 16, "32-byte hex key"),
    ],
)
def test_a_key_file_that_cannot_be_trusted_is_refused(
    tmp_path: Path, mode: int, content: str, message: str
) -> None:
    path = tmp_path / "log-hash.key"
    path.write_text(content + "\n")
    path.chmod(mode)
    with pytest.raises(HashKeyError) as info:
        load_hash_key(path)
    assert message in str(info.value) and str(path) in str(info.value)
    assert info.value.permanent
    assert content not in str(info.value) or content == "not hex"


def test_a_key_that_cannot_be_made_is_a_transient_error(tmp_path: Path) -> None:
    blocker = tmp_path / "state"
    blocker.write_text("a file where the state dir should be")
    with pytest.raises(HashKeyError) as info:
        load_hash_key(blocker / "log-hash.key")
    assert not info.value.permanent and "cannot create" in str(info.value)
