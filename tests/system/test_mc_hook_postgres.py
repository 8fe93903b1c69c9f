"""The hook fast path of `fleet mc claim-status` against a real Postgres (fleet/mc_hook.py over
libpq): it loads none of psycopg, click, pydantic or asyncio, and it answers exactly as the
click verb does (stdout, stderr, exit code) for a free, held, expired and missing task, with and
without --json, through --db and $ALAI_MC_URL, and for a missing table, a dead server, a frozen
server, a table lock nobody lets go, a server shut down mid-query and a password file others can
read; and both end, exit 3 with the same text, when the backend freezes mid-query (as do
claim, claim-extend and claim-release, which share the click verb's store)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest

from shared.mission_control import McTarget, open_store
from tests.conftest import FLEET_BIN, free_port, run_fleet
from tests.pg_support import PgDatabase

pytestmark = pytest.mark.system

HEAVY = ("psycopg", "click", "pydantic", "asyncio")
#: runs the console script's entry point, then reports on stderr which heavy modules it loaded
FAST = (
    "import sys\n"
    "from fleet.entry import main\n"
    "try:\n"
    "    main(sys.argv[1:])\n"
    "finally:\n"
    f"    print('LOADED', [m for m in {HEAVY!r} if m in sys.modules], file=sys.stderr)\n"
)
#: the click verb itself (what the fast path must match)
ATTEMPTS = re.compile(r"\d+ attempts")
CLICK = "import sys\nfrom fleet.cli import main\nmain(sys.argv[1:])\n"


def run(code: str, env: dict[str, str], cwd: Path, *args: str) -> tuple[int, str, str, str]:
    """(exit code, stdout, stderr without the probe's line, the probe's line)."""
    r = subprocess.run(
        [sys.executable, "-c", code, "mc", "claim-status", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )
    lines = r.stderr.splitlines(keepends=True)
    probe = lines.pop().strip() if lines and lines[-1].startswith("LOADED") else ""
    return r.returncode, r.stdout, "".join(lines), probe


def both(env: dict[str, str], cwd: Path, *args: str) -> tuple[int, str, str]:
    """Run the fast path and the click verb; assert the fast path loaded nothing heavy and
    both said the same thing (attempt counts aside: they depend on timing); return it."""
    fast = run(FAST, env, cwd, *args)
    slow = run(CLICK, env, cwd, *args)
    assert fast[3] == "LOADED []", (args, fast)
    assert fast[0] == slow[0], (args, fast, slow)
    for mine, theirs in zip(fast[1:3], slow[1:3], strict=True):
        assert ATTEMPTS.sub("N attempts", mine) == ATTEMPTS.sub("N attempts", theirs), (
            args,
            fast,
            slow,
        )
    return fast[0], fast[1], fast[2]


@pytest.fixture
def seeded(pg_db: PgDatabase) -> PgDatabase:
    """Task 1 free, task 2 held for 10 more minutes, task 3 expired 5 minutes ago."""
    target = McTarget(url=pg_db.url, password_file=pg_db.password_file)
    with open_store(target) as store:
        for i in range(1, 4):
            store.create_task(f"task {i}")
        store.claim(2, "john", "s2", ttl_minutes=10)
    then = (datetime.now(UTC) - timedelta(minutes=15)).timestamp()
    with open_store(target, clock=lambda: then) as store:
        store.claim(3, "pi-orch", "s3", ttl_minutes=10)
    return pg_db


def test_the_postgres_hook_path_answers_as_the_click_verb_without_loading_it(
    seeded: PgDatabase, fleet_env: dict[str, str], tmp_path: Path
) -> None:
    env = {**fleet_env, "ALAI_MC_PASSWORD_FILE": str(seeded.password_file)}
    url_env = {**env, "ALAI_MC_URL": seeded.url}
    assert both(env, tmp_path, "1", "--db", seeded.url) == (0, "available\n", "")
    code, out, _ = both(env, tmp_path, "2", "--db", seeded.url)
    assert code == 0 and re.fullmatch(r"held by john:s2 until \S+Z\n", out), out
    code, out, _ = both(url_env, tmp_path, "3")
    assert code == 0 and out.startswith("held by pi-orch:s3 until ") and "(expired)" in out
    for task in ("1", "2", "3"):
        code, out, _ = both(url_env, tmp_path, task, "--json")
        assert code == 0 and out.startswith(f'{{"id": {task}, "holder": '), out
    assert both(env, tmp_path, f"--db={seeded.url}", "99") == (2, "", "error: no such task: 99\n")
    code, out, _ = both(url_env, tmp_path, "--json", "99")
    assert (code, out) == (2, '{"error": "no such task: 99", "code": 2}\n')


def test_the_postgres_hook_path_fails_as_the_click_verb(
    pg_db: PgDatabase, fleet_env: dict[str, str], tmp_path: Path
) -> None:
    env = {**fleet_env, "ALAI_MC_PASSWORD_FILE": str(pg_db.password_file)}
    # an empty database: no tasks table (the hook verbs never create it)
    code, _, err = both(env, tmp_path, "1", "--db", pg_db.url)
    assert code == 3 and "no table tasks" in err and "fleet mc migrate" in err, err
    # nothing listens: a store error after the hook's reconnects, never "held by"
    dead = f"postgresql://fleet@127.0.0.1:{free_port()}/mc"
    code, _, err = both(env, tmp_path, "1", "--db", dead)
    assert code == 3 and "mission control store unavailable" in err, err
    # a password file others can read: exit 78, the password never shown
    loose = tmp_path / "loose.password"
    loose.write_text(pg_db.server.password)
    loose.chmod(0o644)
    code, out, err = both(
        {**env, "ALAI_MC_PASSWORD_FILE": str(loose)}, tmp_path, "1", "--db", pg_db.url
    )
    assert code == 78 and pg_db.server.password not in out + err, err
    # a password in the URL: exit 78 before any connection
    code, _, err = both(env, tmp_path, "1", "--db", "postgresql://fleet:hunter2@127.0.0.1/mc")
    assert code == 78 and "hunter2" not in err, err


def test_forms_the_fast_path_does_not_know_go_to_click(
    pg_db: PgDatabase, fleet_env: dict[str, str], tmp_path: Path
) -> None:
    env = {**fleet_env, "ALAI_MC_PASSWORD_FILE": str(pg_db.password_file)}
    for args in (["x", "--db", pg_db.url], ["1", "--bogus", "--db", pg_db.url], []):
        code, _, err, probe = run(FAST, env, tmp_path, *args)
        assert code == 64 and "Usage:" in err, (args, err)
        assert "'click'" in probe, probe


def postmaster_pid(pg: PgDatabase) -> int:
    return int((pg.server.data_dir / "postmaster.pid").read_text().split()[0])


def test_a_frozen_postmaster_fails_the_hook_path_as_the_click_verb(
    seeded: PgDatabase, fleet_env: dict[str, str], tmp_path: Path
) -> None:
    """The server accepts TCP (the kernel's backlog) but never answers the startup packet
    (its postmaster SIGSTOPped, a frozen VM): each connection attempt ends at its 3 s
    timeout, and both paths exit 3 with the same text after their reconnects."""
    env = {**fleet_env, "ALAI_MC_PASSWORD_FILE": str(seeded.password_file)}
    pid = postmaster_pid(seeded)
    os.kill(pid, signal.SIGSTOP)
    try:
        code, out, err = both(env, tmp_path, "1", "--db", seeded.url)
    finally:
        os.kill(pid, signal.SIGCONT)
    assert (code, out) == (3, ""), err
    assert err.startswith("error: mission control store unavailable: "), err
    assert "connection timeout expired (gave up after" in err, err
    assert both(env, tmp_path, "1", "--db", seeded.url) == (0, "available\n", "")


def test_a_table_lock_never_let_go_fails_the_hook_path_as_the_click_verb(
    seeded: PgDatabase, fleet_env: dict[str, str], tmp_path: Path
) -> None:
    """A session holds ``LOCK TABLE tasks`` open (a migration, an operator's psql): the
    server cancels each read after the hook's statement_timeout (3 s) on both paths, and the
    fast path's own deadline (later) does not fire first: same exit 3, same text."""
    env = {**fleet_env, "ALAI_MC_PASSWORD_FILE": str(seeded.password_file)}
    with psycopg.connect(seeded.dsn) as locker:  # not autocommit: the lock stays
        locker.execute("LOCK TABLE tasks IN ACCESS EXCLUSIVE MODE")
        code, out, err = both(env, tmp_path, "1", "--db", seeded.url)
        locker.rollback()
    assert (code, out) == (3, ""), err
    assert "canceling statement due to statement timeout (gave up after" in err, err


#: what a call on a backend frozen mid-query ends with, on every path (exit 3)
FROZEN = "no answer from the server within 4 s (gave up after"
#: every fleet backend waiting on a lock: mid-query (then frozen, no server timeout can fire)
LOCK_WAITERS = (
    "SELECT pid FROM pg_stat_activity WHERE datname = %s"
    " AND application_name = 'alai-fleet' AND wait_event_type = 'Lock'"
)


def run_frozen(
    pg: PgDatabase, env: dict[str, str], cwd: Path, commands: list[list[str]]
) -> list[tuple[int, str, str]]:
    """Run ``commands`` at once while a session holds ``LOCK TABLE tasks`` and every backend
    that serves them is SIGSTOPped while it waits on that lock (each reconnect's too); each
    must end within 30 s. Returns (exit code, stdout, stderr) per command; the frozen
    backends are terminated and continued after."""
    frozen: list[int] = []
    with psycopg.connect(pg.dsn) as locker:  # not autocommit: the lock stays
        locker.execute("LOCK TABLE tasks IN ACCESS EXCLUSIVE MODE")
        procs = [
            subprocess.Popen(
                cmd, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
            )
            for cmd in commands
        ]
        try:
            with psycopg.connect(pg.dsn, autocommit=True) as watcher:
                deadline = time.monotonic() + 30
                while any(p.poll() is None for p in procs):
                    assert time.monotonic() < deadline, "a verb still waiting after 30 s"
                    for (pid,) in watcher.execute(LOCK_WAITERS, (pg.name,)).fetchall():
                        if pid not in frozen:
                            os.kill(pid, signal.SIGSTOP)
                            frozen.append(pid)
                    time.sleep(0.01)
            results = [(p.returncode, *p.communicate(timeout=30)) for p in procs]
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
                    p.communicate()
            for pid in frozen:  # ended first: no frozen write may complete once resumed
                os.kill(pid, signal.SIGTERM)
                os.kill(pid, signal.SIGCONT)
        locker.rollback()
    assert len(frozen) >= len(commands), "not every verb was caught mid-query"
    return results


def test_a_backend_frozen_mid_query_ends_claim_status_as_a_lost_store_on_both_paths(
    seeded: PgDatabase, fleet_env: dict[str, str], tmp_path: Path
) -> None:
    """Every backend that serves `fleet mc claim-status` (the hook fast path and the click
    verb) is SIGSTOPped mid-query: both must end, exit 3 naming the deadline after their
    reconnects, with the same text (the click verb waited forever), and answer again once
    the server is back."""
    env = {**fleet_env, "ALAI_MC_PASSWORD_FILE": str(seeded.password_file)}
    args = ["mc", "claim-status", "1", "--db", seeded.url]
    fast, slow = run_frozen(
        seeded, env, tmp_path, [[sys.executable, "-c", code, *args] for code in (FAST, CLICK)]
    )
    fast_lines = fast[2].splitlines()
    assert fast_lines.pop() == "LOADED []", fast
    assert (fast[:2], slow[:2]) == ((3, ""), (3, "")), (fast, slow)
    assert fast_lines[0].startswith("error: mission control store unavailable: "), fast
    assert FROZEN in fast_lines[0], fast
    assert ATTEMPTS.sub("N", "\n".join(fast_lines) + "\n") == ATTEMPTS.sub("N", slow[2]), (
        fast,
        slow,
    )
    assert seeded.server.password not in fast[2] + slow[2]
    assert both(env, tmp_path, "1", "--db", seeded.url) == (0, "available\n", "")


def test_a_backend_frozen_mid_query_ends_the_lease_changing_verbs_as_a_lost_store(
    seeded: PgDatabase, fleet_env: dict[str, str], tmp_path: Path
) -> None:
    """`fleet mc claim`, `claim-extend` and `claim-release` (the click verbs, run before
    every write) on backends SIGSTOPped mid-statement: each ends, exit 3 with the fast path's
    text, never the URL's password (they waited forever), and works once the server is back."""
    env = {**fleet_env, "ALAI_MC_PASSWORD_FILE": str(seeded.password_file)}
    who = ["--actor", "john", "--session", "s2", "--db", seeded.url]
    verbs = [["claim", "1"], ["claim-extend", "2"], ["claim-release", "2"]]
    results = run_frozen(
        seeded, env, tmp_path, [[str(FLEET_BIN), "mc", *verb, *who] for verb in verbs]
    )
    shown = McTarget(url=seeded.url).shown()
    for verb, (code, out, err) in zip(verbs, results, strict=True):
        assert (code, out) == (3, ""), (verb, err)
        assert ATTEMPTS.sub("N attempts", err) == (
            f"error: mission control store unavailable: {shown}: {FROZEN} N attempts)\n"
        ), (verb, err)
        assert seeded.server.password not in err, verb
    for verb in verbs:
        r = run_fleet(["mc", *verb, *who], env, tmp_path)
        assert r.returncode == 0, (verb, r.stderr)


def test_a_server_shut_down_mid_query_fails_the_hook_path_as_the_click_verb(
    seeded: PgDatabase, fleet_env: dict[str, str], tmp_path: Path
) -> None:
    """Both paths wait on a table lock when the server shuts down at once (``-m immediate``:
    it sends each client a WARNING first). Both exit 3 with the same single line: the
    server's warning is not printed (libpq's default notice processor would)."""
    env = {**fleet_env, "ALAI_MC_PASSWORD_FILE": str(seeded.password_file)}
    args = ["mc", "claim-status", "1", "--db", seeded.url]
    locker = psycopg.connect(seeded.dsn)  # not autocommit: the lock stays until the shutdown
    locker.execute("LOCK TABLE tasks IN ACCESS EXCLUSIVE MODE")
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, *args],
            env=env,
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for code in (FAST, CLICK)
    ]
    try:
        with psycopg.connect(seeded.dsn, autocommit=True) as watcher:
            deadline = time.monotonic() + 30
            while len(
                watcher.execute(
                    "SELECT pid FROM pg_stat_activity WHERE datname = %s"
                    " AND application_name = 'alai-fleet' AND wait_event_type = 'Lock'",
                    (seeded.name,),
                ).fetchall()
            ) < len(procs):
                assert time.monotonic() < deadline, "the two reads never reached the lock"
                time.sleep(0.01)
        seeded.server.stop("immediate")
        (fast_out, fast_err), (slow_out, slow_err) = [p.communicate(timeout=30) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.communicate()
        locker.close()
        seeded.server.ensure_running()
    fast_lines = fast_err.splitlines()
    assert fast_lines.pop() == "LOADED []", fast_err
    assert [p.returncode for p in procs] == [3, 3], (fast_err, slow_err)
    assert (fast_out, slow_out) == ("", "")
    assert len(fast_lines) == 1, fast_err
    assert fast_lines[0].startswith("error: mission control store unavailable: "), fast_err
    assert ATTEMPTS.sub("N", fast_lines[0] + "\n") == ATTEMPTS.sub("N", slow_err), (
        fast_err,
        slow_err,
    )
