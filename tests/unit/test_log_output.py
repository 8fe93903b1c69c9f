"""Where log lines go and how they look: every record names its ``logger``; a log file the
process owns is reopened on request (SIGHUP) and when its path names another file (newsyslog
renamed it), checked at most once a second; journald gets ``<N>`` priority prefixes only when
the stream really is the one in ``JOURNAL_STREAM``. Real files throughout; the clock that
paces the inode check is injected so "not yet" and "now" are both observable."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import signal
from pathlib import Path
from typing import Any

import pytest

from fleet.config import load_config
from shared.config import ConfigError
from shared.logfile import CHECK_INTERVAL_S, LogFile, LogFileError, log_file_path
from shared.logging import (
    configure_logging,
    get_logger,
    is_journal_stream,
    reopen_log_file,
)
from shared.sdnotify import Notifier
from shared.signals import ProcessSignals


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


@pytest.fixture(autouse=True)
def _back_to_a_buffer() -> Any:
    yield
    configure_logging(host="h1", stream=io.StringIO())  # close the test's file


# logger ------------------------------------------------------------------------------------
def test_every_json_line_names_its_logger() -> None:
    buf = io.StringIO()
    configure_logging(host="h1", daemon="claim-sweeper", stream=buf)
    get_logger().info("from a module")
    get_logger(daemon="x").warning("bound first")
    get_logger(logger="notify.slack").info("named component")
    logging.getLogger("apscheduler.scheduler").error("a library's own record")
    records = [json.loads(x) for x in buf.getvalue().splitlines()]
    assert [r["logger"] for r in records] == [
        __name__,
        __name__,
        "notify.slack",
        "apscheduler.scheduler",
    ]
    assert all(r["event"] and r["host"] == "h1" for r in records)


def test_a_line_logged_by_a_shared_helper_names_the_module_that_called_it() -> None:
    from shared.logging import log_tracebacks

    buf = io.StringIO()
    configure_logging(host="h1", level="debug", stream=buf)
    try:
        raise ValueError("boom")
    except ValueError as exc:
        log_tracebacks(get_logger(), "traceback", exc)
    (rec,) = [json.loads(x) for x in buf.getvalue().splitlines()]
    assert rec["logger"] == __name__  # not shared.logging, not structlog


# the owned log file ------------------------------------------------------------------------
def test_reopen_after_rename_writes_to_the_new_file(tmp_path: Path) -> None:
    path = tmp_path / "logs" / "claim-sweeper.log"
    clock = Clock()
    out = LogFile(path, clock=clock)
    out.write("one\n")
    path.rename(tmp_path / "logs" / "claim-sweeper.log.0")
    out.write("two\n")  # no check due yet: still the renamed file
    assert out.reopen() is True
    out.write("three\n")
    assert (tmp_path / "logs" / "claim-sweeper.log.0").read_text() == "one\ntwo\n"
    assert path.read_text() == "three\n"
    assert oct(path.stat().st_mode & 0o777) == oct(0o600)
    assert oct(path.parent.stat().st_mode & 0o777) == oct(0o700)
    out.close()


def test_inode_change_is_noticed_at_most_once_a_second(tmp_path: Path) -> None:
    path = tmp_path / "d.log"
    clock = Clock()
    out = LogFile(path, clock=clock)
    out.write("a\n")
    path.rename(tmp_path / "d.log.0")
    clock.now += CHECK_INTERVAL_S / 2
    out.write("b\n")  # checked less than a second ago: not looked at
    assert not path.exists()
    clock.now += CHECK_INTERVAL_S
    out.write("c\n")  # due: the path names no file (or another one) -> reopened
    assert (tmp_path / "d.log.0").read_text() == "a\nb\n"
    assert path.read_text() == "c\n"
    # newsyslog makes the new file itself (mode, owner from its rule): used as it is
    path.rename(tmp_path / "d.log.1")
    path.write_text("")
    clock.now += CHECK_INTERVAL_S
    out.write("d\n")
    assert path.read_text() == "d\n" and (tmp_path / "d.log.1").read_text() == "c\n"
    out.close()


def test_an_unusable_log_path_is_an_error_naming_it(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "fifo.log")
    (tmp_path / "dir.log").mkdir()
    (tmp_path / "link.log").symlink_to(tmp_path / "elsewhere.log")
    for name in ("fifo.log", "dir.log", "link.log"):
        with pytest.raises(LogFileError) as err:
            LogFile(tmp_path / name)
        assert str(tmp_path / name) in str(err.value)


def test_a_log_file_another_account_owns_is_refused(tmp_path: Path) -> None:
    planted = tmp_path / "shared.log"
    planted.write_text("")
    try:
        os.chown(planted, os.geteuid() + 1, -1)
    except PermissionError:
        pytest.skip("only root can give a file away")
    with pytest.raises(LogFileError, match="belongs to uid"):
        LogFile(planted)


def test_a_failed_reopen_keeps_writing_to_the_open_file(tmp_path: Path) -> None:
    path = tmp_path / "logs" / "x.log"
    clock = Clock()
    out = LogFile(path, clock=clock)
    path.rename(tmp_path / "x.log.0")
    path.parent.rmdir()
    path.parent.write_text("not a directory")  # the directory cannot be made again
    assert out.reopen() is False
    out.write("still here\n")
    assert (tmp_path / "x.log.0").read_text() == "still here\n"
    out.close()


def test_log_file_path_names_the_daemon() -> None:
    assert log_file_path(Path("/r/logs/{daemon}.log"), "claim-sweeper") == Path(
        "/r/logs/claim-sweeper.log"
    )
    assert log_file_path(Path("/r/logs/all.log"), "heartbeat") == Path("/r/logs/all.log")


def test_sighup_handler_reopens_the_log_file_before_logging(tmp_path: Path) -> None:
    """The reload signal's first line already lands in the new file, whatever the inode
    check's pace (the clock never moves here)."""
    path = tmp_path / "h.log"
    out = LogFile(path, clock=Clock())
    configure_logging(host="h1", daemon="heartbeat", stream=out)
    log = get_logger()
    log.info("before")
    path.rename(tmp_path / "h.log.0")

    async def hup() -> None:
        signals = ProcessSignals(Notifier(""), log, on_dump=lambda _n: None)
        signals._on_reload(signal.SIGHUP)
        assert signals.reload.is_set()

    asyncio.run(hup())
    assert [r["event"] for r in lines(tmp_path / "h.log.0")] == ["before"]
    assert [r["event"] for r in lines(path)] == ["reload requested"]


def test_configure_logging_to_a_file_follows_reopen_for_loggers_bound_earlier(
    tmp_path: Path,
) -> None:
    path = tmp_path / "f.log"
    configure_logging(host="h1", daemon="heartbeat", log_file=path)
    early = get_logger(daemon="heartbeat")
    early.info("first")
    path.rename(tmp_path / "f.log.0")
    assert reopen_log_file() is True
    early.info("second")
    assert [r["event"] for r in lines(path)] == ["second"]
    assert "logger" in lines(path)[0]


# journald ---------------------------------------------------------------------------------
def test_journal_stream_matches_only_the_same_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with (tmp_path / "a").open("w") as a, (tmp_path / "b").open("w") as b:
        st = os.fstat(a.fileno())
        monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
        assert is_journal_stream(a) is True
        assert is_journal_stream(b) is False
        assert is_journal_stream(io.StringIO()) is False
        for bad in ("", "garbage", f"{st.st_dev}:", f":{st.st_ino}", "1:2:3"):
            monkeypatch.setenv("JOURNAL_STREAM", bad)
            assert is_journal_stream(a) is False
        monkeypatch.delenv("JOURNAL_STREAM")
        assert is_journal_stream(a) is False


def test_journal_lines_carry_the_priority_prefix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with (tmp_path / "journal").open("w") as stream:
        st = os.fstat(stream.fileno())
        monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
        configure_logging(host="h1", level="debug", stream=stream)
        log = get_logger()
        log.debug("d")
        log.info("i")
        log.warning("w")
        log.error("e")
        log.critical("c")
        logging.getLogger("some.library").warning("lib")
    got = (tmp_path / "journal").read_text().splitlines()
    assert [line[:3] for line in got] == ["<7>", "<6>", "<4>", "<3>", "<2>", "<4>"]
    assert [json.loads(line[3:])["event"] for line in got] == ["d", "i", "w", "e", "c", "lib"]


# config ------------------------------------------------------------------------------------
def test_log_file_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    for key in list(os.environ):
        if key.startswith("FLEET_"):
            monkeypatch.delenv(key)
    cfg = tmp_path / "fleet.toml"
    cfg.write_text(f'[fleet]\nroot = "{tmp_path}"\nlog_file = "<root>/logs/{{daemon}}.log"\n')
    assert load_config(cfg).fleet.log_file == tmp_path / "logs" / "{daemon}.log"
    cfg.write_text('[fleet]\nlog_file = ""\n')
    assert load_config(cfg).fleet.log_file is None
    cfg.write_text('[fleet]\nlog_file = "logs/x.log"\n')
    with pytest.raises(ConfigError) as err:
        load_config(cfg)
    assert "fleet.log_file" in err.value.render()
    cfg.write_text('[fleet]\nlog_file = "/var/log/{name}.log"\n')
    with pytest.raises(ConfigError) as err:
        load_config(cfg)
    assert "fleet.log_file" in err.value.render() and "{daemon}" in err.value.render()
