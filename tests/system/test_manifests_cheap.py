"""Manifests are cheap: reading every manifest and composing the root config (what `fleet
status`, `/health` and the generators do) imports no daemon runtime code and none of the heavy
client libraries."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_reading_manifests_imports_no_daemon_runtime_and_no_http_stack(tmp_path: Path) -> None:
    code = (
        "import json, sys\n"
        "from fleet.registry import manifests\n"
        "from fleet.config import load_config\n"
        "config = load_config(None)\n"
        "for m in manifests():\n"
        "    m.fenced(config.daemon_section(m.section_name), 'primary')\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    env = {"HOME": str(tmp_path), "FLEET_FLEET__ROOT": str(tmp_path / "root"), "PATH": "/bin"}
    res = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        cwd=str(tmp_path),
    )
    assert res.returncode == 0, res.stderr
    modules = set(json.loads(res.stdout.strip().splitlines()[-1]))
    heavy = {"aiohttp", "httpx", "slack_sdk", "aiosqlite", "prometheus_client", "structlog"}
    assert not heavy & {m.split(".")[0] for m in modules}
    runtime = {m for m in modules if m.startswith("daemons.") and m.endswith(".daemon")}
    assert runtime == set(), runtime
    assert "shared.runtime" not in modules
