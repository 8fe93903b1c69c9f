"""The ollama-health status file without a daemon: a reader polling during 500 atomic writes
only ever parses whole files, and a status or override file under a shared /tmp makes the unit
keep /tmp shared (the routers on the host read it there)."""

from __future__ import annotations

import json
import threading
from pathlib import Path

from daemons.ollama_health.config import OllamaHealthSection
from daemons.ollama_health.manifest import MANIFEST
from daemons.ollama_health.policy import format_iso
from daemons.ollama_health.status_file import write_status
from fleet.config import RootConfig as FleetConfig
from shared.files import under_shared_tmp

T0 = 1_795_000_000.0


def test_unit_profile_shares_tmp_only_for_the_link_and_override(tmp_path: Path) -> None:
    assert under_shared_tmp(Path("/tmp/ollama-health.json"))
    assert under_shared_tmp(Path("/private/tmp/ollama-health-override.json"))
    assert not under_shared_tmp(Path("/home/x/system/state/ollama-health.json"))
    assert not under_shared_tmp(Path("/tmp-not/x.json"))
    hosts = FleetConfig(
        fleet={"root": str(tmp_path)},
        ollama_health={
            "status_link": "/tmp/ollama-health.json",
            "override_file": "/tmp/ollama-health-override.json",
        },
    )
    section = hosts.section(OllamaHealthSection)
    assert section.status_file == tmp_path / "state/ollama-health.json"  # stays private
    profile = MANIFEST.unit_profile(hosts, section)
    # /tmp is written for the link alone; the status file stays in the state dir
    assert profile.shared_tmp
    assert profile.write_paths == (tmp_path / "state", Path("/tmp"))
    # The embedded defaults keep everything under [fleet] root: PrivateTmp stays on.
    defaults = FleetConfig(fleet={"root": "/srv/alai-fleet-test"})
    local = MANIFEST.unit_profile(defaults, defaults.section(OllamaHealthSection))
    assert not local.shared_tmp
    assert local.write_paths == (Path("/srv/alai-fleet-test/state"),)
    assert defaults.section(OllamaHealthSection).status_link is None
    empty = FleetConfig(fleet={"root": "/srv/x"}, ollama_health={"status_link": ""})
    assert empty.section(OllamaHealthSection).status_link is None


def test_reader_never_sees_a_half_written_status_file(tmp_path: Path) -> None:
    """A reader polling in a tight loop during 500 writes only ever parses whole files."""
    path = tmp_path / "tmp" / "ollama-health.json"
    big_models = [f"model-{i}:{'q' * 40}" for i in range(200)]
    docs = [
        {f"host{h}": {"healthy": (n + h) % 3 != 0, "models": big_models, "n": n} for h in range(20)}
        | {"_generated_at": format_iso(T0 + n), "_n": n}
        for n in range(500)
    ]
    write_status(path, docs[0])
    stop = threading.Event()
    reads: list[int] = []
    bad: list[str] = []

    def reader() -> None:
        while not stop.is_set():
            try:
                text = path.read_text()
            except FileNotFoundError:
                bad.append("file missing between writes")
                continue
            try:
                reads.append(json.loads(text)["_n"])
            except (ValueError, KeyError) as exc:
                bad.append(f"{type(exc).__name__} at {len(text)} bytes")

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for doc in docs:
            write_status(path, doc)
    finally:
        stop.set()
        thread.join(timeout=10)
    assert not thread.is_alive()
    assert bad == []
    assert len(reads) > 50, "the reader must have raced the writer"
    assert len(set(reads)) > 10, "the reader must have seen many versions"
    assert reads == sorted(reads), "a reader never sees an older version after a newer one"
    assert json.loads(path.read_text())["_n"] == 499
