"""The tier table, the restore plan, the ``[restore_loop]`` section and the standby_dir rule."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from daemons.restore_loop.catalog import CatalogError, load_tier_table, parse_tier_table
from daemons.restore_loop.config import RestoreLoopSection
from daemons.restore_loop.litestream_yaml import parse_restore_config, render_standby
from daemons.restore_loop.plan import build_plan, select_targets
from daemons.restore_loop.state import RestoreTarget
from fleet.config import load_config, standby_dir_conflicts
from shared.config import ConfigError

EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "databases.example.toml"


def test_example_tier_table_holds_the_seed_tables() -> None:
    table = load_tier_table(EXAMPLE)
    assert len(table.databases) == 69
    tiers = [db.tier for db in table.databases]
    assert tiers.count("P0") == 17 and tiers.count("P1") == 42 and tiers.count("P2") == 10
    by_class = {c: [d.name for d in table.databases if d.klass == c] for c in table.classes}
    assert len(by_class["p0-critical"]) == 13 and len(by_class["p0-financial"]) == 4
    assert set(by_class["p0-financial"]) == {"fiken", "invoices", "contracts", "leads"}
    retention = {c: k.retention for c, k in table.classes.items()}
    assert retention == {
        "p0-critical": "168h",
        "p0-financial": "720h",
        "p1": "72h",
        "p2": "24h",
    }
    dbs = table.by_file()
    assert dbs["flywheel.db"].sync_interval == "30s"
    assert dbs["prompt-cache.db"].sync_interval == "10s"
    assert dbs["mission-control.db"].sync_interval == "1s"
    assert dbs["mc.db"].replica_name == "mc-db"
    assert "rag-cache.db" in dbs  # in the seed's table, missing from its YAML
    assert table.replica.type == "abs"
    for value in (table.replica.account_key, table.replica.account_name):
        assert value.startswith("${") and value.endswith("}")


def test_tier_table_errors_name_their_path() -> None:
    data = tomllib.loads(EXAMPLE.read_text())
    data["databases"][3]["class"] = "p9"
    data["databases"][5]["sync_interval"] = "soon"
    data["databases"].append(dict(data["databases"][0]))
    data["classes"]["p1"]["tier"] = "P7"
    data["bogus"] = 1
    with pytest.raises(CatalogError) as info:
        parse_tier_table(data, "t.toml")
    paths = {p for p, _ in info.value.errors}
    assert {
        "databases[3].class",
        "databases[5].sync_interval",
        "databases[69].name",
        "classes.p1.tier",
        "bogus",
    } <= paths
    assert "t.toml" in str(info.value)


def test_missing_or_bad_tier_table_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match=r"fleet litestream tables-example > \S*nope\.toml"):
        load_tier_table(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[classes\n")
    with pytest.raises(CatalogError, match="not valid TOML"):
        load_tier_table(bad)


def test_plan_joins_config_and_table(tmp_path: Path) -> None:
    table = load_tier_table(EXAMPLE)
    standby = tmp_path / "databases"
    section = RestoreLoopSection(standby_dir=standby)
    configured = parse_restore_config(render_standby(table, ["P0", "P1"], standby).text)
    # A DB only in the YAML, one outside standby_dir; and a P0 DB dropped from the YAML.
    extra = parse_restore_config(
        "dbs:\n"
        f"  - path: {standby}/adhoc.db\n    replica: {{type: file, path: /r/adhoc}}\n"
        f"  - path: /elsewhere/other.db\n    replica: {{type: file, path: /r/other}}\n"
    )
    configured = [c for c in configured if c.file != "tasks.db"] + extra
    plan = build_plan(section, table, configured)
    names = {t.name for t in plan.targets}
    assert len(plan.targets) == 59  # 58 of the table + adhoc
    assert "adhoc" in names and "other" not in names and "tasks" not in names
    assert "prompt-cache" not in names  # P2 is not restored
    problems = dict(plan.problems)
    assert "not in the tier table" in problems["adhoc"]
    assert "not directly under standby_dir" in problems["other"]
    assert "not in the litestream restore config" in problems["tasks"]
    mc = plan.by_name()["mission-control"]
    # Intervals come from the budget: P0 polls more often than P1, both within the bounds.
    p0, p1 = plan.derived_intervals["P0"], plan.derived_intervals["P1"]
    assert section.min_follow_interval_s <= p0 < p1 <= section.max_follow_interval_s
    assert (mc.tier, mc.mode, mc.follow_interval_s) == ("P0", "follow", p0)
    assert (mc.rpo_target_s, mc.stale_threshold_s) == (60.0, 60.0)
    contacts = plan.by_name()["contacts"]
    assert (contacts.follow_interval_s, contacts.stale_threshold_s) == (p1, 300.0)
    chosen, unknown = select_targets(plan, ["mission-control.db", "hivemind", "nope"])
    assert [t.name for t in chosen] == ["mission-control", "hivemind"] and unknown == ["nope"]


def test_section_validation() -> None:
    with pytest.raises(ValueError, match="unknown tier"):
        RestoreLoopSection(tiers=["P0", "P5"])
    with pytest.raises(ValueError, match="must be > 0"):
        RestoreLoopSection(follow_interval={"P0": 0})
    with pytest.raises(ValueError, match="stall_after_s"):
        RestoreLoopSection(stall_after_s=5, check_interval_s=10)
    section = RestoreLoopSection()
    assert section.enabled and section.mode == "follow" and section.tiers == ["P0", "P1"]
    assert section.fixed_follow_interval("P0") is None  # derived from the budget
    assert RestoreLoopSection(follow_interval={"P0": 2}).fixed_follow_interval("P0") == 2.0
    assert RestoreLoopSection(budget_eur_month=0).fixed_follow_interval("P1") == 300.0
    with pytest.raises(ValueError, match="min_follow_interval_s"):
        RestoreLoopSection(min_follow_interval_s=10, max_follow_interval_s=5)
    with pytest.raises(ValueError, match="http"):
        RestoreLoopSection(primary_health_url="ftp://example.com/health")
    for name, field in RestoreLoopSection.model_fields.items():
        assert field.description, f"{name} has no description"


def _config(tmp_path: Path, body: str, monkeypatch: pytest.MonkeyPatch) -> Path:
    for key in list(__import__("os").environ):
        if key.startswith("FLEET_"):
            monkeypatch.delenv(key)
    path = tmp_path / "fleet.toml"
    path.write_text(f'[fleet]\nroot = "{tmp_path / "root"}"\n' + body)
    return path


def test_conflicts_quiet_on_default_primary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = load_config(_config(tmp_path, "", monkeypatch))
    # Defaults: role primary, standby_dir = <root>/databases beside mission-control.db.
    assert standby_dir_conflicts(cfg) == []


def test_conflicts_on_a_standby(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    body = (
        'role = "standby"\n'
        "[claim_sweeper]\nauto_release = true\n"
        "[email_reactor]\nenabled = false\n"
        f'[notify]\noutbox_db = "{tmp_path / "root" / "databases" / "outbox.db"}"\n'
    )
    path = _config(tmp_path, body, monkeypatch)
    try:
        cfg = load_config(path)
    except ConfigError as exc:  # once shared/config.py calls the rule, loading itself fails
        messages = [m for p, m in exc.errors if p == "restore_loop.standby_dir"]
        assert any("outbox.db" in m for m in messages)
        return
    errors = standby_dir_conflicts(cfg)
    text = "\n".join(m for _, m in errors)
    assert {p for p, _ in errors} == {"restore_loop.standby_dir"}
    assert "outbox.db" in text
    # claim-sweeper with auto_release is fenced off a standby (`run --all` skips it), so it
    # writes nothing here: mission-control.db is the replica copy it takes over on promotion.
    assert "mission-control.db" not in text and "auto_release" not in text


def test_default_standby_has_no_conflicts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Every daemon enabled: the ones writing replicated DBs are fenced off the standby, as
    # `fleet run --all` decides, so their files in standby_dir are the copies restore-loop keeps.
    cfg = load_config(_config(tmp_path, 'role = "standby"\n', monkeypatch))
    assert standby_dir_conflicts(cfg) == []


def test_conflicts_off_when_disabled_or_dirs_apart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    body = (
        'role = "standby"\n[claim_sweeper]\nauto_release = false\n'
        "[email_reactor]\nenabled = false\n"
        '[blueprint_watchdog]\nhivemind_url = "http://127.0.0.1:9/hivemind"\n'
    )
    cfg = load_config(_config(tmp_path, body, monkeypatch))
    assert standby_dir_conflicts(cfg) == []
    cfg.restore_loop.enabled = False
    cfg.notify.outbox_db = cfg.restore_loop.standby_dir / "outbox.db"
    assert standby_dir_conflicts(cfg) == []


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_follow_intervals_must_be_finite(bad: float) -> None:
    # A nan interval used to reach the follower and kill its supervisor with a ValueError.
    with pytest.raises(ValueError, match="finite"):
        RestoreLoopSection(follow_interval={"P0": bad})
    data = tomllib.loads(EXAMPLE.read_text())
    data["databases"][0]["follow_interval_s"] = bad
    with pytest.raises(CatalogError) as info:
        parse_tier_table(data, "t.toml")
    assert "databases[0].follow_interval_s" in {p for p, _ in info.value.errors}


def test_a_new_replica_url_is_a_new_target(tmp_path: Path) -> None:
    """The replica is part of a target's identity: the daemon restarts a follower whose target
    changed, so a new replica URL is followed from a fresh restore, not from the old copy."""
    table = load_tier_table(EXAMPLE)
    standby = tmp_path / "databases"
    section = RestoreLoopSection(standby_dir=standby)

    def target(replica_path: str) -> RestoreTarget:
        configured = parse_restore_config(
            f"dbs:\n  - path: {standby}/hivemind.db\n"
            f"    replica: {{type: file, path: {replica_path}}}\n"
        )
        return build_plan(section, table, configured).by_name()["hivemind"]

    assert target("/r/one") == target("/r/one")
    assert target("/r/one") != target("/r/two")
