"""A primary host for restore-loop tests: SQLite DBs in WAL mode replicated by a real
`litestream replicate` process (file replicas, or abs on Azurite), written continuously by a
separate writer process, plus the standby's tier table and restore config.

Rows are ``(id INTEGER PRIMARY KEY, ts REAL, payload TEXT)``, one insert per transaction, so a
standby copy must always hold a prefix of the primary's rows. Every process started here is
bounded (the writer stops by itself) and stopped by ``close()``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from daemons.restore_loop.catalog import parse_tier_table
from daemons.restore_loop.litestream import find_litestream
from daemons.restore_loop.litestream_yaml import render_primary, render_standby

__all__ = ["AZURITE_KEY", "Primary", "litestream_bin", "process_exists"]

AZURITE_ACCOUNT = "devstoreaccount1"
# The public, well-known Azurite development key (documented by Microsoft; not a secret).
AZURITE_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)

WRITER = textwrap.dedent(
    """
    import sqlite3, sys, time
    rate, max_s = float(sys.argv[1]), float(sys.argv[2])
    stop_file, paths = sys.argv[3], sys.argv[4:]
    conns = [sqlite3.connect(p, timeout=10, isolation_level=None) for p in paths]
    for c in conns:
        c.execute("PRAGMA busy_timeout=10000")
    start = time.monotonic(); n = 0
    while time.monotonic() - start < max_s:
        try:
            open(stop_file).close()
            break
        except OSError:
            pass
        for c in conns:
            c.execute("INSERT INTO t(ts, payload) VALUES (?, ?)", (time.time(), f"row-{n}"))
        n += 1
        time.sleep(max(0.0, start + n / rate - time.monotonic()))
    """
)


def litestream_bin() -> Path:
    return find_litestream("")


def process_exists(pid: int) -> bool:
    """True while ``pid`` runs (a zombie counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with contextlib.suppress(OSError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat.rsplit(")", 1)[1].split()[0] == "Z":
            return False
    return True


class Primary:
    """``names`` DBs under ``root/primary``, replicated to ``root/replicas`` (file) or to an
    abs container (``abs_endpoint``)."""

    def __init__(
        self,
        root: Path,
        names: list[str],
        *,
        sync_interval: str = "200ms",
        abs_endpoint: str | None = None,
        container: str = "backups",
        tiers: dict[str, str] | None = None,
    ) -> None:
        self.root = root
        self.names = names
        self.db_dir = root / "primary"
        self.replica_dir = root / "replicas"
        self.sync_interval = sync_interval
        self.abs_endpoint = abs_endpoint
        self.container = container
        self.tiers = tiers or {}
        self.replicates: list[subprocess.Popen[bytes]] = []
        self.writer: subprocess.Popen[bytes] | None = None
        self.stop_file = root / "writer.stop"
        self.db_dir.mkdir(parents=True, exist_ok=True)
        self.replica_dir.mkdir(parents=True, exist_ok=True)
        self.table = parse_tier_table(self.tier_table())

    # files -----------------------------------------------------------------------------------
    def tier_table(self) -> dict[str, Any]:
        if self.abs_endpoint:
            replica: dict[str, Any] = {
                "type": "abs",
                "account_name": AZURITE_ACCOUNT,
                "account_key": "${LITESTREAM_AZURE_ACCOUNT_KEY}",
                "endpoint": self.abs_endpoint,
                "bucket": self.container,
                "path_prefix": "litestream",
            }
        else:
            replica = {"type": "file", "path_prefix": str(self.replica_dir)}
        classes = {
            "p0-critical": {"tier": "P0", "retention": "168h", "sync_interval": self.sync_interval},
            "p1": {"tier": "P1", "retention": "72h", "sync_interval": self.sync_interval},
            "p2": {"tier": "P2", "retention": "24h", "sync_interval": self.sync_interval},
        }
        klass = {"P0": "p0-critical", "P1": "p1", "P2": "p2"}
        return {
            "classes": classes,
            "replica": replica,
            "databases": [{"name": n, "class": klass[self.tiers.get(n, "P0")]} for n in self.names],
        }

    def write_tier_table(self, path: Path) -> None:
        lines = []
        data = self.tier_table()
        for cname, body in data["classes"].items():
            lines.append(f'[classes."{cname}"]')
            lines += [f'{k} = "{v}"' for k, v in body.items()]
        lines.append("[replica]")
        lines += [f'{k} = "{v}"' for k, v in data["replica"].items()]
        for db in data["databases"]:
            lines.append("[[databases]]")
            lines += [f'{k} = "{v}"' for k, v in db.items()]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(lines) + "\n")

    def write_standby_config(self, path: Path, standby_dir: Path, tiers: list[str]) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(render_standby(self.table, tiers, standby_dir).text)

    def primary_config_paths(self, only: list[str] | None = None) -> list[Path]:
        table = self.table
        if only is not None:
            table = replace(table, databases=tuple(d for d in table.databases if d.name in only))
        paths = []
        for generated in render_primary(table, self.db_dir):
            path = self.root / generated.name
            path.write_text(generated.text)
            paths.append(path)
        return paths

    def db_path(self, name: str) -> Path:
        return self.db_dir / f"{name}.db"

    def create(self, only: list[str] | None = None) -> Primary:
        for name in only if only is not None else self.names:
            conn = sqlite3.connect(self.db_path(name))
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(
                "CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, ts REAL, payload TEXT)"
            )
            conn.execute("INSERT INTO t(ts, payload) VALUES (?, 'seed')", (time.time(),))
            conn.commit()
            conn.close()
        return self

    # processes -------------------------------------------------------------------------------
    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["LITESTREAM_AZURE_ACCOUNT_KEY"] = AZURITE_KEY
        return env

    def start_replicate(self, only: list[str] | None = None) -> None:
        """One `litestream replicate` per retention class, as on the real primary."""
        for config in self.primary_config_paths(only):
            with (self.root / "replicate.log").open("ab") as log:
                self.replicates.append(
                    subprocess.Popen(
                        [str(litestream_bin()), "replicate", "-config", str(config)],
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        env=self.env(),
                    )
                )

    def stop_replicate(self) -> None:
        procs, self.replicates = self.replicates, []
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def start_writer(
        self, rate_per_s: float = 10.0, max_s: float = 300.0, only: list[str] | None = None
    ) -> None:
        self.stop_file.unlink(missing_ok=True)
        self.writer = subprocess.Popen(
            [
                sys.executable,
                "-c",
                WRITER,
                str(rate_per_s),
                str(max_s),
                str(self.stop_file),
                *[str(self.db_path(n)) for n in (only if only is not None else self.names)],
            ]
        )

    def stop_writer(self) -> None:
        proc, self.writer = self.writer, None
        if proc is not None:
            self.stop_file.touch()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def die(self) -> None:
        """The primary host dies: its writer and its `litestream replicate` processes are
        SIGKILLed at once (what was not uploaded yet is lost, as in a real crash)."""
        procs = [p for p in (self.writer, *self.replicates) if p is not None]
        self.writer, self.replicates = None, []
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
        for proc in procs:
            proc.wait()

    def close(self) -> None:
        self.stop_writer()
        self.stop_replicate()

    def __enter__(self) -> Primary:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # reads -----------------------------------------------------------------------------------
    def rows(self, name: str) -> list[tuple[int, float, str]]:
        conn = sqlite3.connect(f"file:{self.db_path(name)}?mode=ro", uri=True, timeout=10)
        try:
            return conn.execute("SELECT id, ts, payload FROM t ORDER BY id").fetchall()
        finally:
            conn.close()


def read_rows(path: Path) -> list[tuple[int, float, str]]:
    """Rows of a standby copy, opened read-only."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    try:
        return conn.execute("SELECT id, ts, payload FROM t ORDER BY id").fetchall()
    finally:
        conn.close()


def count_rows(path: Path) -> int:
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
    except sqlite3.Error:
        return -1
    try:
        return int(conn.execute("SELECT count(*) FROM t").fetchone()[0])
    except sqlite3.Error:
        return -1
    finally:
        conn.close()


def metric_value(text: str, name: str, **labels: str) -> float | None:
    """The value of one series in Prometheus exposition text (None if absent)."""
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        head, _, value = line.rpartition(" ")
        if head == name or (
            head.startswith(name + "{") and all(f'{k}="{v}"' in head for k, v in labels.items())
        ):
            return float(value)
    return None


class Standby:
    """The warm standby in a test: a fleet root with role standby, the tier table and restore
    config of ``primary``, and `fleet run restore-loop` as a real process."""

    def __init__(
        self,
        fleet_env: dict[str, str],
        fleet_root: Path,
        cwd: Path,
        primary: Primary,
        *,
        tiers: tuple[str, ...] = ("P0", "P1"),
        **settings: str,
    ) -> None:
        self.root = fleet_root
        self.cwd = cwd
        self.primary = primary
        self.standby_dir = fleet_root / "databases"
        self.proc: subprocess.Popen[str] | None = None
        self.env = {
            **fleet_env,
            "LITESTREAM_AZURE_ACCOUNT_KEY": AZURITE_KEY,
            "FLEET_RESTORE_LOOP__INTERVAL_S": "0.2",
            "FLEET_RESTORE_LOOP__CHECK_INTERVAL_S": "0.5",
            "FLEET_RESTORE_LOOP__STALL_AFTER_S": "10",
            "FLEET_RESTORE_LOOP__VERIFY_INTERVAL_S": "2",
            "FLEET_RESTORE_LOOP__FOLLOW_INTERVAL": '{"P0": 0.2, "P1": 0.2, "P2": 0.2}',
            "FLEET_RESTORE_LOOP__RESTART_BACKOFF_MAX_S": "1",
            "FLEET_RESTORE_LOOP__BACKOFF_MAX_S": "1",
            "FLEET_RESTORE_LOOP__CALL_TIMEOUT_S": "5",
            "FLEET_RESTORE_LOOP__RESTORE_TIMEOUT_S": "20",
            **{f"FLEET_RESTORE_LOOP__{k.upper()}": v for k, v in settings.items()},
        }
        (fleet_root / "state").mkdir(parents=True, exist_ok=True)
        (fleet_root / "state" / "role").write_text("standby\n")
        primary.write_tier_table(fleet_root / "config" / "databases.toml")
        primary.write_standby_config(
            fleet_root / "config" / "litestream-restore.yml", self.standby_dir, list(tiers)
        )

    def copy(self, name: str) -> Path:
        return self.standby_dir / f"{name}.db"

    def start(self, notify_path: str, metrics_port: int) -> subprocess.Popen[str]:
        env = {
            **self.env,
            "NOTIFY_SOCKET": notify_path,
            "FLEET_RESTORE_LOOP__METRICS_PORT": str(metrics_port),
        }
        self.proc = subprocess.Popen(
            [str(Path(sys.executable).parent / "fleet"), "run", "restore-loop"],
            env=env,
            cwd=self.cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        return self.proc

    def stop(self, timeout: float = 60.0) -> tuple[int, str]:
        """SIGTERM, then its exit code and output; ``timeout`` only bounds a hung shutdown."""
        proc, self.proc = self.proc, None
        assert proc is not None
        proc.send_signal(signal.SIGTERM)
        try:
            out, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
            raise AssertionError(
                f"restore-loop did not exit within {timeout}s of SIGTERM"
            ) from None
        return proc.returncode, out

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate()
        self.proc = None

    def status(self) -> dict[str, Any]:
        import json

        try:
            return dict(json.loads((self.root / "state/restore-loop/status.json").read_text()))
        except (OSError, ValueError):
            return {}

    def row(self, name: str) -> dict[str, Any]:
        for row in self.status().get("databases") or []:
            if row.get("db") == name:
                return dict(row)
        return {}

    def outbox(self) -> list[tuple[str, str, str]]:
        path = self.root / "state" / "outbox.db"
        if not path.exists():
            return []
        conn = sqlite3.connect(path, timeout=10)
        try:
            return conn.execute(
                "SELECT channel, dedup_key, text FROM outbox ORDER BY id"
            ).fetchall()
        except sqlite3.Error:
            return []
        finally:
            conn.close()
