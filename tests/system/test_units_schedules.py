"""Scheduled jobs in the generated units: on a standby (where restore-loop runs) `fleet units`
generates the monthly `fleet dr drill` as a systemd oneshot with a Persistent timer, checked by
`systemd-analyze verify`, and as a launchd job with StartCalendarInterval; install enables the
timer, never starts the drill itself; a primary gets neither."""

from __future__ import annotations

import plistlib
from pathlib import Path

import pytest

from fleet.install import install_plan
from shared.units import is_generated_file
from shared.units.launchd import LaunchAgentPlist
from tests.units_support import directives, gen, layout, load, one, verify, write_config

pytestmark = pytest.mark.system


def _config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, role: str):  # type: ignore[no-untyped-def]
    cfg = write_config(
        tmp_path / "fleet.toml", tmp_path / "root", enable="restore_loop", fleet=f'role = "{role}"'
    )
    return load(cfg, monkeypatch), cfg


def test_standby_gets_the_monthly_drill(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config, cfg = _config(tmp_path, monkeypatch, "standby")
    lay = layout("user", config_file=cfg)
    units = gen(config, "systemd", lay).files
    service = units["alai-fleet-dr-drill.service"].decode()
    timer = units["alai-fleet-dr-drill.timer"].decode()
    d = directives(service)
    assert one(d, "Service.Type") == "oneshot"
    assert one(d, "Service.ExecStart").endswith(f"fleet dr drill --config {cfg}")
    assert "Service.Restart" not in d and "Install.WantedBy" not in d
    t = directives(timer)
    assert one(t, "Timer.OnCalendar") == "*-*-01 04:30:00"
    assert one(t, "Timer.Persistent") == "true"
    assert one(t, "Timer.Unit") == "alai-fleet-dr-drill.service"
    assert one(t, "Install.WantedBy") == "timers.target"
    out = tmp_path / "units"
    out.mkdir()
    for name, data in units.items():
        (out / name).write_bytes(data)
    verify([out / "alai-fleet-dr-drill.service", out / "alai-fleet-dr-drill.timer"])
    assert is_generated_file(out / "alai-fleet-dr-drill.timer")

    steps = install_plan("systemd", "user", out, list(units), [], [], [])
    enabled = next(s.argv for s in steps if s.argv and "enable" in s.argv)
    assert "alai-fleet-dr-drill.timer" in enabled
    assert "alai-fleet-dr-drill.service" not in enabled  # the timer starts it, not install
    assert "alai-fleet-restore-loop.service" in enabled

    plists = gen(config, "launchd", lay).files
    raw = plistlib.loads(plists["no.alai.fleet.dr-drill.plist"])
    assert raw["StartCalendarInterval"] == {"Day": 1, "Hour": 4, "Minute": 30}
    assert raw["RunAtLoad"] is False and "KeepAlive" not in raw
    assert raw["ProgramArguments"][-4:] == ["dr", "drill", "--config", str(cfg)]
    LaunchAgentPlist.model_validate(raw)
    (out / "no.alai.fleet.dr-drill.plist").write_bytes(plists["no.alai.fleet.dr-drill.plist"])
    assert is_generated_file(out / "no.alai.fleet.dr-drill.plist")
    # a service keeps KeepAlive and no calendar
    service_plist = plistlib.loads(plists["no.alai.fleet.restore-loop.plist"])
    assert "StartCalendarInterval" not in service_plist and service_plist["RunAtLoad"] is True


def test_a_primary_gets_no_drill(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config, cfg = _config(tmp_path, monkeypatch, "primary")
    files = gen(config, "systemd", layout("user", config_file=cfg)).files
    assert not [n for n in files if "dr-drill" in n]


def test_a_plist_with_both_or_neither_schedule_is_not_ours() -> None:
    base = {
        "Label": "no.alai.fleet.x",
        "ProgramArguments": ["/bin/true"],
        "RunAtLoad": False,
        "ThrottleInterval": 10,
        "ExitTimeOut": 10,
        "EnvironmentVariables": {},
        "StandardOutPath": "/tmp/x.log",
        "StandardErrorPath": "/tmp/x.err.log",
        "WorkingDirectory": "/",
        "Umask": 63,
        "ProcessType": "Background",
    }
    with pytest.raises(ValueError):
        LaunchAgentPlist.model_validate(base)
    both = {
        **base,
        "KeepAlive": {"SuccessfulExit": False},
        "StartCalendarInterval": {"Day": 1, "Hour": 4, "Minute": 30},
    }
    with pytest.raises(ValueError):
        LaunchAgentPlist.model_validate(both)
