"""The registry and the root config composed from it."""

from __future__ import annotations

import pytest

from fleet.config import _model, root_model
from fleet.registry import LINES, RegistryLine, by_name, fast_paths, manifests
from shared.manifest import DaemonManifest
from shared.metrics import NOTIFY_METRICS, RUNTIME_METRICS
from shared.sections import DaemonSection


def test_every_line_loads_the_manifest_it_names() -> None:
    loaded = manifests()
    assert [m.name for m in loaded] == [line.name for line in LINES]
    assert set(by_name()) == {line.name for line in LINES}
    model = root_model()
    for manifest in loaded:
        assert model.model_fields[manifest.section_name].annotation is manifest.section


def test_a_line_naming_the_wrong_manifest_is_refused() -> None:
    wrong = (RegistryLine("heartbeat", "daemons.claim_sweeper.manifest:MANIFEST"),)
    with pytest.raises(ValueError, match="loads the manifest of 'claim-sweeper'"):
        manifests(wrong)


def test_a_section_cannot_shadow_a_shared_one_or_another_daemon() -> None:
    def fake(name: str) -> DaemonManifest:
        return DaemonManifest(name=name, section=DaemonSection, daemon="x:Y")

    with pytest.raises(ValueError, match=r"section \[slack\] is already taken"):
        _model((fake("slack"),))
    with pytest.raises(ValueError, match=r"section \[dup\] is already taken"):
        _model((fake("dup"), fake("dup")))


def test_metric_names_are_unique_and_prefixed() -> None:
    names = [spec.name for spec in (*RUNTIME_METRICS, *NOTIFY_METRICS)]
    for manifest in manifests():
        names += [spec.name for spec in manifest.metrics]
    assert len(names) == len(set(names)), "a metric is declared twice"
    assert all(name.startswith("fleet_") for name in names)


def test_fast_paths_point_at_stdlib_gate_functions() -> None:
    paths = fast_paths()
    assert paths[("zakon", "validate")].startswith("daemons.blueprint_watchdog.gate:")
    assert paths[("blueprint", "validate")].startswith("daemons.blueprint_watchdog.gate:")
