"""A legacy-host rehearsal built from the seed's descriptions of ANVIL: the Node tools' own
`emails`, `tasks` and HiveMind `messages` tables (extra columns, NOT NULL columns of their own),
Node-format timestamps, partner mail the ingest path already pushed, the old LaunchAgents, a
process holding the heartbeat's port and an ops-watchdog.json that would restart the inbox
watcher. `fleet cutover check` lists every conflict, `apply` (a fake launchctl on PATH) clears
them, and then the fleet runs a day of mail over the host: every partner and LLM-yes email gets
exactly one task and at most one push, no shared table changes its schema, and the seed's
operator queries return the expected rows."""

from __future__ import annotations

import json
import socket
import sqlite3
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.conftest import run_fleet
from tests.cutover_support import build_legacy_host, fake_env, install_fakes
from tests.email_fixtures import PARTNERS
from tests.fakes.llm import FakeLLM
from tests.fakes.slack import FakeSlack

pytestmark = pytest.mark.system

# The Node tools' tables, as they have them: more columns than the fleet knows, each with NOT
# NULL columns of its own (the inbox's and HiveMind's without a default, which the fleet never
# has to fill because it never inserts there; mc.js's `created_by`, which it must fill).
EMAILS = """CREATE TABLE emails (id INTEGER PRIMARY KEY AUTOINCREMENT, account TEXT,
  from_addr TEXT, from_name TEXT, to_addr TEXT, reply_to TEXT, subject TEXT, body_text TEXT,
  attachments TEXT, headers TEXT, classification TEXT, status TEXT DEFAULT 'new',
  created_at TEXT, mc_task_id INTEGER, message_id TEXT NOT NULL, folder TEXT DEFAULT 'INBOX',
  partner_tier INTEGER DEFAULT 0, reactor_pushed_at TEXT)"""
TASKS = """CREATE TABLE tasks (id INTEGER PRIMARY KEY AUTOINCREMENT, title TEXT NOT NULL,
  description TEXT, status TEXT DEFAULT 'open', priority TEXT DEFAULT 'normal', source TEXT,
  source_ref TEXT, created_at TEXT DEFAULT (datetime('now')), updated_at TEXT,
  lease_holder TEXT, lease_until TEXT, created_by TEXT NOT NULL, project TEXT DEFAULT 'ops')"""
MESSAGES = """CREATE TABLE messages (id INTEGER PRIMARY KEY AUTOINCREMENT, ts TEXT NOT NULL,
  source TEXT NOT NULL, topic TEXT NOT NULL, severity TEXT NOT NULL DEFAULT 'info',
  body TEXT NOT NULL, agent TEXT NOT NULL DEFAULT 'hivemind', read INTEGER NOT NULL DEFAULT 0)"""

NOW = datetime.now(UTC).replace(microsecond=0)


def iso(dt: datetime) -> str:
    return dt.strftime("%Y-%m-%dT%H:%M:%S.000Z")


def sql(dt: datetime) -> str:
    return dt.strftime("%Y-%m-%d %H:%M:%S")


def ms(dt: datetime) -> int:
    return int(dt.timestamp() * 1000)


# name -> (from, from_name, subject, classification, created_at as the ingest wrote it,
#          ingest pushed?, the fleet's expected outcome)
Mail = tuple[str, str, str, str, object, bool, str]
DAY: list[list[tuple[str, Mail]]] = [
    [  # before the switch: the ingest ran alone overnight
        (
            "p1",
            (
                "partner.one@example.com",
                "Petra Partner",
                "Partnership next steps",
                "ACTION",
                iso(NOW - timedelta(hours=5)),
                True,
                "task",
            ),
        ),
        (
            "p2",
            (
                "someone@snow.example.org",
                "Snow IT",
                "Renewal",
                "ACTION",
                ms(NOW - timedelta(hours=4)),
                False,
                "task+push",
            ),
        ),
        (
            "y1",
            (
                "buyer@acme.example.net",
                "Acme Buyer",
                "Contract proposal for Q1",
                "",
                sql(NOW - timedelta(hours=3)),
                False,
                "task+push",
            ),
        ),
        (
            "n1",
            (
                "newsletter@news.example.net",
                "News",
                "This week in SEO",
                "",
                sql(NOW - timedelta(hours=3)),
                False,
                "none",
            ),
        ),
        (
            "n2",
            (
                "stranger@example.net",
                "Stranger",
                "Hello there",
                "",
                iso(NOW - timedelta(hours=2)),
                False,
                "none",
            ),
        ),
    ],
    [  # after the first cycle: more mail, one partner mail pushed by the ingest itself
        (
            "p3",
            (
                "partner.one@example.com",
                "Petra Partner",
                "Signed copy",
                "ACTION",
                iso(NOW - timedelta(minutes=50)),
                True,
                "task",
            ),
        ),
        (
            "y2",
            (
                "cfo@bigco.example.com",
                "Big Co CFO",
                "Proposal: annual contract",
                "",
                str(int((NOW - timedelta(minutes=40)).timestamp())),
                False,
                "task+push",
            ),
        ),
        (
            "q1",
            (
                "security@paypa1.example.net",
                "PayPal",
                "verify account now",
                "",
                sql(NOW - timedelta(minutes=30)),
                False,
                "none",
            ),
        ),
    ],
]


def table_infos(home: Path) -> dict[str, list[tuple[object, ...]]]:
    out = {}
    for db, table in (
        ("email-inbox.db", "emails"),
        ("mission-control.db", "tasks"),
        ("hivemind.db", "messages"),
    ):
        conn = sqlite3.connect(home / "system/databases" / db)
        out[table] = conn.execute(f"PRAGMA table_info({table})").fetchall()
        conn.close()
    return out


def ingest(home: Path, batch: list[tuple[str, Mail]]) -> dict[str, int]:
    """What email-agent.js does: insert the row, and for a partner's ACTION mail set
    partner_tier and push it itself (reactor_pushed_at, mc_task_id left NULL)."""
    ids = {}
    conn = sqlite3.connect(home / "system/databases/email-inbox.db")
    for name, (addr, who, subject, cls, created, pushed, _want) in batch:
        cur = conn.execute(
            "INSERT INTO emails(account, from_addr, from_name, to_addr, subject, body_text,"
            " attachments, headers, classification, status, created_at, message_id)"
            " VALUES ('ceo@example.com', ?, ?, 'ceo@example.com', ?, ?, '[]', '{}', ?, 'new',"
            " ?, ?)",
            (addr, who, subject, f"{subject}. Regards, {who}", cls, created, f"<{name}@mx>"),
        )
        ids[name] = int(cur.lastrowid or 0)
        if pushed:
            conn.execute(
                "UPDATE emails SET partner_tier = 1, reactor_pushed_at = ? WHERE id = ?",
                (iso(NOW - timedelta(minutes=1)), ids[name]),
            )
    conn.commit()
    conn.close()
    return ids


@pytest.fixture
def legacy_host(tmp_path: Path):  # type: ignore[no-untyped-def]
    home = tmp_path / "home"
    system = home / "system"
    dbs = system / "databases"
    dbs.mkdir(parents=True)
    for db, schema in (
        ("email-inbox.db", EMAILS),
        ("mission-control.db", TASKS),
        ("hivemind.db", MESSAGES),
    ):
        conn = sqlite3.connect(dbs / db)
        conn.execute(schema)
        conn.commit()
        conn.close()
    # mc.js's rows: a lease in ISO form that expired this morning, one held into the evening
    conn = sqlite3.connect(dbs / "mission-control.db")
    conn.execute(
        "INSERT INTO tasks(title, created_by, lease_holder, lease_until) VALUES"
        " ('Old ISO lease', 'mc.js', 'mehanik:s1', ?), ('Live lease', 'mc.js', 'codecraft:s2', ?)",
        (iso(NOW - timedelta(hours=2)), iso(NOW + timedelta(hours=6))),
    )
    conn.commit()
    conn.close()
    (system / "config").mkdir()
    (system / "config/strategic-partners.json").write_text(json.dumps(PARTNERS))
    return home


def seed_query(home: Path, db: str, sql_text: str) -> list[tuple[object, ...]]:
    conn = sqlite3.connect(home / "system/databases" / db)
    try:
        return conn.execute(sql_text).fetchall()
    finally:
        conn.close()


def test_switch_a_legacy_host_then_run_a_day_of_mail(
    legacy_host: Path, fleet_env: dict[str, str], tmp_path: Path
) -> None:
    home = legacy_host
    system = home / "system"
    holder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)  # health-server.js on its port
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    port = int(holder.getsockname()[1])
    host = build_legacy_host(tmp_path, port, home=home, root=system, fleet='layout = "alai"')
    env = fake_env(
        {**fleet_env, "FLEET_FLEET__ROOT": str(system)},
        install_fakes(tmp_path / "bin"),
        tmp_path / "fakes",
        ["no.alai.inbox-watcher", "com.alai.litestream", "com.example.health"],
    )
    schemas = table_infos(home)

    # 1. check lists every conflict, with its fix, and exits non-zero
    res = run_fleet(host.args("cutover", "check", "--json"), env, tmp_path)
    assert res.returncode == 1, res.stderr
    report = json.loads(res.stdout)
    kinds = {(c["kind"], c["subject"]) for c in report["conflicts"]}
    text = json.dumps(report["conflicts"])
    for label in ("no.alai.inbox-watcher", "com.alai.litestream", "com.john.email-reactor-digest"):
        assert label in text, label
    assert "health-server.js" in text or "com.example.health" in text
    assert str(port) in text and "ops-watchdog.json" in text
    assert "litestream.env" in text and "slack" in text.lower()
    assert all(c.get("fix") for c in report["conflicts"]), kinds
    # the legacy token file everyone can read: every other command refuses the config (78)
    # until apply makes it private
    db = run_fleet(["db", "check", "--config", str(host.config)], env, tmp_path)
    assert db.returncode == 78 and "slack.token_file" in db.stderr, db.stdout + db.stderr
    assert "mode 0644" in db.stderr

    # 2. apply refuses while the port is held; once health-server.js is gone it clears the rest
    assert run_fleet(host.args("cutover", "apply", "--yes"), env, tmp_path).returncode == 1
    holder.close()
    res = run_fleet(host.args("cutover", "apply", "--yes"), env, tmp_path)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    res = run_fleet(host.args("cutover", "check", "--json"), env, tmp_path)
    assert res.returncode == 0 and json.loads(res.stdout)["clean"], res.stdout
    watchdog = json.loads((system / "config/ops-watchdog.json").read_text())
    assert "no.alai.inbox-watcher" not in json.dumps(watchdog["critical_services"])
    env_file = system / "config/litestream.env"
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
    # the shared-table contracts: mc.js's NOT NULL created_by refuses task creation
    db = run_fleet(["db", "check", "--config", str(host.config)], env, tmp_path)
    assert db.returncode == 78 and "created_by" in db.stdout, db.stdout + db.stderr
    with host.config.open("a") as fh:  # the operator's answer to `fleet db check`
        fh.write('\n[mission_control]\ntask_defaults = { created_by = "email-reactor" }\n')
    db = run_fleet(["db", "check", "--config", str(host.config)], env, tmp_path)
    assert db.returncode == 0, db.stdout + db.stderr

    # 3. a day of mail: the ingest keeps writing between the fleet's cycles
    want: dict[str, str] = {}
    ids: dict[str, int] = {}
    with FakeLLM() as llm, FakeSlack() as slack:
        run_env = {
            **env,
            "FLEET_EMAIL_REACTOR__LLM_URL": llm.url,
            "FLEET_SLACK__BASE_URL": slack.base_url,
            "FLEET_EMAIL_REACTOR__DIGEST_TIME": "00:00",
        }
        for batch in [*DAY, []]:  # a last cycle confirms the deliveries
            ids |= ingest(home, batch)
            want |= {name: mail[6] for name, mail in batch}
            res = run_fleet(
                ["run", "email-reactor", "--once", "--config", str(host.config)],
                run_env,
                tmp_path,
                timeout=120,
            )
            assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
        ceo = slack.texts("#ceo")

    # every partner and LLM-yes mail: exactly one task; none for the others
    tasks = seed_query(
        home,
        "mission-control.db",
        "SELECT source_ref, created_by FROM tasks WHERE source = 'email'",
    )
    refs = [int(str(r[0])) for r in tasks]
    for name, outcome in want.items():
        count = refs.count(ids[name])
        assert count == (1 if outcome.startswith("task") else 0), (name, count)
    assert {r[1] for r in tasks} == {"email-reactor"}
    # at most one push each; none for mail the ingest already pushed
    for name, (_a, _w, subject, *_rest) in [m for batch in DAY for m in batch]:
        pushes = [t for t in ceo if subject in t]
        assert len(pushes) == (1 if want[name] == "task+push" else 0), (name, pushes)
    # the shared tables keep the schema their owners gave them
    assert table_infos(home) == schemas
    # the seed's operator queries
    partners = seed_query(
        home,
        "email-inbox.db",
        "SELECT id, from_addr, subject, partner_tier, reactor_pushed_at FROM emails"
        " WHERE partner_tier > 0 ORDER BY reactor_pushed_at DESC LIMIT 20",
    )
    assert {r[0] for r in partners} == {ids["p1"], ids["p2"], ids["p3"]}
    assert all(r[4] for r in partners)
    assert (
        seed_query(
            home,
            "email-inbox.db",
            "SELECT id, from_addr, subject, classification FROM emails"
            " WHERE partner_tier > 0 AND reactor_pushed_at IS NULL",
        )
        == []
    )
    pending = seed_query(
        home,
        "email-inbox.db",
        "SELECT id FROM emails WHERE mc_task_id IS NULL AND status = 'new'"
        " AND created_at > datetime('now', '-7 days') ORDER BY created_at DESC LIMIT 20",
    )
    assert {r[0] for r in pending} == {ids["n1"], ids["n2"], ids["q1"]}

    # 4. Mission Control as the hooks and Mehanik use it, over mc.js's rows
    task = seed_query(
        home, "mission-control.db", f"SELECT id FROM tasks WHERE source_ref = '{ids['y1']}'"
    )[0][0]
    claim = run_fleet(
        [
            "mc",
            "claim",
            str(task),
            "--actor",
            "codecraft",
            "--session",
            "s9",
            "--db",
            str(system / "databases/mission-control.db"),
        ],
        env,
        tmp_path,
    )
    assert claim.returncode == 0, claim.stdout + claim.stderr
    sweep = run_fleet(
        [
            "mc",
            "claim-sweep",
            "--auto-release",
            "--json",
            "--db",
            str(system / "databases/mission-control.db"),
        ],
        env,
        tmp_path,
    )
    assert sweep.returncode == 0, sweep.stdout + sweep.stderr
    assert [e["id"] for e in json.loads(sweep.stdout)["expired"]] == [1]  # the ISO lease
    live = seed_query(
        home,
        "mission-control.db",
        "SELECT id, title, lease_holder, lease_until FROM tasks"
        " WHERE lease_holder IS NOT NULL AND lease_until > datetime('now')",
    )
    # the fleet's lease and mc.js's live one; the expired ISO lease is released (the seed's text
    # query would still have listed it: 'T' > ' ')
    assert {r[0] for r in live} == {task, 2}
    assert table_infos(home) == schemas
