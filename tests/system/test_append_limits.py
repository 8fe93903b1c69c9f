"""JSONL appends against real limits, in real processes: a file-size limit (RLIMIT_FSIZE, as
``ulimit -f`` sets it) with SIGXFSZ ignored (as Python ignores it) is an AppendError naming
EFBIG with no torn line; with SIGXFSZ at the kernel's default the process is killed mid-line,
and the next process's first append repairs the torn line. A 256 KiB tmpfs filled up is
ENOSPC, named, with no torn line; once space is freed a "restarted" writer appends again and
every line in the file is whole JSON. Nothing here depends on timing."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.system

LIMIT = 8192  # bytes RLIMIT_FSIZE allows
WRITER = textwrap.dedent(
    """
    import json, resource, signal, sys
    from pathlib import Path
    from shared.files import AppendError, append_jsonl
    path, limit, ignore, start = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
    if limit:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))
    # Python itself ignores SIGXFSZ; "default" restores the kernel's kill, as in a C writer
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN if ignore == "ignore" else signal.SIG_DFL)
    n = start
    try:
        while n < start + 100000:
            append_jsonl(path, {"i": n, "pad": "z" * 97}, max_bytes=10**9, keep=2)
            n += 1
    except AppendError as exc:
        print(json.dumps({"appended": n - start, "errno": exc.errno, "error": str(exc)}))
        sys.exit(3)
    print(json.dumps({"appended": n - start}))
    """
)


def _writer(
    path: Path, *, limit: int, sigxfsz: str, start: int, count: int | None = None
) -> subprocess.CompletedProcess[str]:
    script = WRITER if count is None else WRITER.replace("start + 100000", f"start + {count}")
    return subprocess.run(
        [sys.executable, "-c", script, str(path), str(limit), sigxfsz, str(start)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).resolve().parents[2],
    )


def _whole_lines(path: Path) -> list[int]:
    data = path.read_bytes()
    assert data.endswith(b"\n"), f"torn last line: {data[-60:]!r}"
    return [int(json.loads(line)["i"]) for line in data.splitlines()]


def test_a_file_size_limit_is_efbig_with_no_torn_line(tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    res = _writer(log, limit=LIMIT, sigxfsz="ignore", start=0)
    assert res.returncode == 3, res.stdout + res.stderr
    report = json.loads(res.stdout)
    assert "EFBIG" in report["error"] and str(log) in report["error"]
    assert report["appended"] == len(_whole_lines(log)) > 0
    assert log.stat().st_size <= LIMIT
    # "Restart" without the limit: the appends go on, every line whole.
    again = _writer(log, limit=0, sigxfsz="default", start=1000, count=5)
    assert again.returncode == 0, again.stderr
    assert _whole_lines(log) == [*range(report["appended"]), *range(1000, 1005)]


def test_a_writer_killed_mid_line_is_repaired_by_the_next_append(tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    res = _writer(log, limit=LIMIT, sigxfsz="kill", start=0)
    assert res.returncode == -signal.SIGXFSZ, res.stdout + res.stderr  # killed mid-write
    data = log.read_bytes()
    assert not data.endswith(b"\n"), "the limit cut a line: a torn line is left behind"
    whole = data[: data.rfind(b"\n") + 1].count(b"\n")
    again = _writer(log, limit=0, sigxfsz="default", start=1000, count=3)
    assert again.returncode == 0, again.stderr
    assert _whole_lines(log) == [*range(whole), 1000, 1001, 1002], "nothing merged"
    (torn,) = [json.loads(x) for x in log.with_name("audit.jsonl.torn").read_text().splitlines()]
    assert torn["data"].startswith('{"i":') and torn["bytes"] > 0


@pytest.fixture
def tiny_tmpfs(tmp_path: Path) -> Iterator[Path]:
    mnt = tmp_path / "audit"
    mnt.mkdir()
    if shutil.which("mount") is None or os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root and mount(8); the RLIMIT_FSIZE tests cover it")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k,mode=0700", "tmpfs", str(mnt)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip()}); RLIMIT_FSIZE covers it")
    try:
        yield mnt
    finally:
        with contextlib.suppress(subprocess.SubprocessError):
            subprocess.run(["umount", "-l", str(mnt)], capture_output=True, timeout=30)


def test_a_full_tmpfs_is_enospc_and_a_restart_after_freeing_space_appends_whole_lines(
    tiny_tmpfs: Path,
) -> None:
    log = tiny_tmpfs / "audit.jsonl"
    filler = tiny_tmpfs / "filler"
    with filler.open("wb") as fh, contextlib.suppress(OSError):
        fh.write(b"\0" * (256 * 1024 - 12 * 1024))  # leaves ~12 KiB for the log
    res = _writer(log, limit=0, sigxfsz="default", start=0)
    assert res.returncode == 3, res.stdout + res.stderr
    report = json.loads(res.stdout)
    assert "ENOSPC" in report["error"], report
    assert report["appended"] == len(_whole_lines(log)) > 0
    filler.unlink()  # space freed
    again = _writer(log, limit=0, sigxfsz="default", start=1000, count=20)
    assert again.returncode == 0, again.stderr
    assert _whole_lines(log) == [*range(report["appended"]), *range(1000, 1020)]
