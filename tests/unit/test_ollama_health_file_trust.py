"""daemons.ollama_health.file_trust on real files in tmp_path: which override/memory files are
read (never a link, FIFO, directory, loose mode, stranger's file or oversized one; never
blocking), which directories count as private, and the legacy-path symlink (published when
the path is free or ours, reported and untouched otherwise). Files of another uid are made
with os.chown, so those cases need root; the cross-process versions (setpriv) are in
tests/system/test_ollama_health_shared_tmp.py. The alert-channel rule is in the policy tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from daemons.ollama_health.file_trust import (
    UntrustedFile,
    inspect_link,
    publish_link,
    read_trusted,
    unsafe_dir,
    unsafe_setup,
)

STRANGER = 4243
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="chown to another uid needs root")


def mkfile(path: Path, text: str = "{}", mode: int = 0o644) -> Path:
    path.write_text(text)
    path.chmod(mode)
    return path


def test_a_regular_private_file_is_read_and_a_missing_one_is_none(tmp_path: Path) -> None:
    assert read_trusted(mkfile(tmp_path / "o.json", '{"a": 1}'), 64) == b'{"a": 1}'
    assert read_trusted(mkfile(tmp_path / "r.json", "x", 0o600), 64) == b"x"
    assert read_trusted(tmp_path / "missing.json", 64) is None


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda p: p.symlink_to(mkfile(p.with_name("real.json"))), "symbolic link"),
        (lambda p: os.mkfifo(p, 0o644), "not a regular file (a FIFO)"),
        (lambda p: p.mkdir(mode=0o755), "not a regular file (a directory)"),
        (lambda p: mkfile(p, mode=0o666), "writable by group or others (mode 666"),
        (lambda p: mkfile(p, mode=0o664), "writable by group or others (mode 664"),
        (lambda p: mkfile(p, "x" * 65), "larger than 64 bytes (65)"),
    ],
    ids=["symlink", "fifo", "directory", "world-writable", "group-writable", "too-big"],
)
def test_anything_but_a_small_private_regular_file_is_refused(
    tmp_path: Path, make: object, reason: str
) -> None:
    path = tmp_path / "override.json"
    make(path)  # type: ignore[operator]
    with pytest.raises(UntrustedFile) as exc:
        read_trusted(path, 64)  # a FIFO without a writer: refused at once, never waited on
    assert reason in str(exc.value)


@needs_root
def test_a_strangers_file_is_refused_and_roots_only_when_allowed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = mkfile(tmp_path / "override.json")
    os.chown(path, STRANGER, STRANGER)
    with pytest.raises(UntrustedFile, match=f"owned by uid {STRANGER}"):
        read_trusted(path, 64)
    os.chown(path, 0, 0)
    monkeypatch.setattr("daemons.ollama_health.file_trust.os.geteuid", lambda: 1000)
    assert read_trusted(path, 64) == b"{}"  # root's file: an admin may write the override
    with pytest.raises(UntrustedFile, match=r"owned by uid 0, not this daemon's uid 1000$"):
        read_trusted(path, 64, root_may_own=False)  # the memory file: ours alone


def test_private_and_shared_directories(tmp_path: Path) -> None:
    private = tmp_path / "state"
    private.mkdir(mode=0o700)
    assert unsafe_dir(private) is None
    assert unsafe_dir(private / "not" / "yet") is None  # created later, inside a private one
    sticky = tmp_path / "tmp"
    sticky.mkdir()
    sticky.chmod(0o1777)
    assert "writable by other users (mode 1777)" in (unsafe_dir(sticky) or "")
    # not there yet, inside a shared dir: someone else could create it first
    assert "mode 1777" in (unsafe_dir(sticky / "alai") or "")
    mine = sticky / "alai"
    mine.mkdir(mode=0o700)
    assert unsafe_dir(mine) is None  # ours, in a sticky dir: no one else can swap it
    loose = tmp_path / "loose"
    loose.mkdir()
    loose.chmod(0o777)
    child = loose / "state"
    child.mkdir(mode=0o700)
    assert f"{loose} is writable by other users (mode 777)" == unsafe_dir(child)
    (tmp_path / "via").symlink_to(sticky)
    assert "mode 1777" in (unsafe_dir(tmp_path / "via") or "")  # judged where it leads


@needs_root
def test_a_directory_of_another_uid_is_not_private(tmp_path: Path) -> None:
    theirs = tmp_path / "theirs"
    theirs.mkdir(mode=0o755)
    os.chown(theirs, STRANGER, STRANGER)
    assert f"owned by uid {STRANGER}" in (unsafe_dir(theirs / "state") or "")


def test_unsafe_setup_names_the_key_and_the_fix(tmp_path: Path) -> None:
    state = tmp_path / "root" / "state"
    status = state / "ollama-health.json"
    assert unsafe_setup(status, state, tmp_path / "tmp" / "ollama-health.json") is None
    shared = tmp_path / "tmp"
    shared.mkdir()
    shared.chmod(0o1777)
    problem = unsafe_setup(shared / "ollama-health.json", state, None) or ""
    assert problem.startswith("ollama_health.status_file: ")
    assert f'status_link = "{shared / "ollama-health.json"}"' in problem
    assert "fleet.root" in (unsafe_setup(status, shared, None) or "")
    assert "names the status file itself" in (unsafe_setup(status, state, status) or "")


def test_the_link_is_published_when_the_path_is_free_or_ours(tmp_path: Path) -> None:
    target = mkfile(tmp_path / "s.json")
    shared = tmp_path / "tmp"
    shared.mkdir()
    shared.chmod(0o1777)
    link = shared / "ollama-health.json"
    assert inspect_link(link, target).replaceable
    state = publish_link(link, target)
    assert state.published and state.error is None
    assert os.readlink(link) == str(target) and link.read_text() == "{}"
    assert publish_link(link, target).published  # idempotent
    # our old regular file (the Node monitor's, same user) and a stale link of ours: replaced
    link.unlink()
    mkfile(link, "old")
    assert "our own file" in (inspect_link(link, target).error or "")
    assert publish_link(link, target).published and os.readlink(link) == str(target)
    link.unlink()
    link.symlink_to(tmp_path / "elsewhere.json")
    assert publish_link(link, target).published and os.readlink(link) == str(target)
    assert sorted(p.name for p in shared.iterdir()) == ["ollama-health.json"]  # no temp left
    assert inspect_link(link, target).to_json() == {
        "path": str(link),
        "target": str(target),
        "published": True,
        "error": None,
    }


def test_a_directory_in_the_way_is_reported(tmp_path: Path) -> None:
    target = mkfile(tmp_path / "s.json")
    link = tmp_path / "ollama-health.json"
    link.mkdir()
    state = publish_link(link, target)
    assert not state.published and "directory is in the way" in (state.error or "")
    assert link.is_dir()


@needs_root
@pytest.mark.parametrize("kind", ["file", "symlink"])
def test_a_strangers_entry_is_reported_and_left_alone(tmp_path: Path, kind: str) -> None:
    target = mkfile(tmp_path / "s.json")
    link = tmp_path / "ollama-health.json"
    if kind == "file":
        mkfile(link, '{"forged": true}')
        os.chown(link, STRANGER, STRANGER)
    else:
        link.symlink_to(mkfile(tmp_path / "forged.json", '{"forged": true}'))
        os.lchown(link, STRANGER, STRANGER)
    state = publish_link(link, target)
    assert not state.published and not state.replaceable
    assert f"owned by uid {STRANGER} is in the way" in (state.error or "")
    assert link.lstat().st_uid == STRANGER and link.read_text() == '{"forged": true}'
    assert link.is_symlink() == (kind == "symlink")
