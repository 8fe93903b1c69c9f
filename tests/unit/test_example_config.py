"""config/fleet.example.toml is exactly what the models render (the app's root model: the shared
sections and every registered daemon's), and loads to the defaults."""

from __future__ import annotations

from pathlib import Path

import pytest

from fleet.config import example_toml, load_config, root_model

EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "fleet.example.toml"


def test_example_matches_models() -> None:
    assert EXAMPLE.read_text() == example_toml(), (
        "config/fleet.example.toml drifted: regenerate with "
        "`fleet config example > config/fleet.example.toml`"
    )


def test_example_loads_to_the_defaults(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    for key in list(__import__("os").environ):
        if key.startswith("FLEET_"):
            monkeypatch.delenv(key)
    from_example = load_config(EXAMPLE).model_dump()
    defaults = root_model()().model_dump()
    assert from_example == defaults


def test_every_key_is_documented() -> None:
    from pydantic import BaseModel

    def check(model: type[BaseModel]) -> None:
        for key, field in model.model_fields.items():
            sub = field.annotation
            if isinstance(sub, type) and issubclass(sub, BaseModel):
                check(sub)
                continue
            assert field.description, f"{model.__name__}.{key} has no description"

    sections = root_model().model_fields
    assert {"fleet", "claim_sweeper"} <= set(sections)  # shared and daemon sections alike
    for section in sections.values():
        assert isinstance(section.annotation, type)
        check(section.annotation)
