"""The ``[blueprint_watchdog]`` config section. Pure data; defaults documented once, here.

The document-schema defaults come from schema.py (standard library) so the pydantic model and
the fast hook path (gate.py, which reads the TOML itself) can never disagree. The HiveMind
sink (shared/hivemind.py) reads its ``hivemind_*`` keys from this section too.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import ConfigDict, Field, SecretStr, field_validator, model_validator

from daemons.blueprint_watchdog.schedule import schedule_period_s
from daemons.blueprint_watchdog.schema import (
    DEFAULT_DOC_TYPES,
    SECTION_PATTERN_FLAGS,
    DocType,
    SchemaError,
    doc_types_from_settings,
    glob_regex,
)
from shared.config_values import check_http_url, check_regexes
from shared.sections import DaemonSection

__all__ = ["DEFAULT_OVERRIDE_LOG", "DEFAULT_REGISTRY_FILE", "BlueprintWatchdogSection"]

DEFAULT_REGISTRY_FILE = "<root>/rules/zakon-registry.json"
DEFAULT_OVERRIDE_LOG = "<root>/logs/blueprint-override.jsonl"
_BLUEPRINT, _DEPLOY_MAP, _ZAKON = DEFAULT_DOC_TYPES


class BlueprintWatchdogSection(DaemonSection):
    model_config = ConfigDict(extra="forbid", validate_default=True)

    enabled: bool = Field(True, description="run the nightly blueprint/ZAKON scan on this host")
    interval_s: float = Field(
        86400.0,
        gt=0,
        description="schedule period: grace for a missed run and retry base after a failure",
    )
    metrics_port: int = Field(9805, ge=0, le=65535, description="Prometheus /metrics port")
    cycle_timeout_s: float = Field(900.0, gt=0, description="a scan running longer is cancelled")
    schedule: str = Field("0 2 * * *", description="crontab (UTC) of the nightly scan")
    roots: list[Path] = Field([Path("<root>")], description="directories scanned")
    exclude_dirs: list[str] = Field(
        [".git", "node_modules", ".venv", "venv", "__pycache__"],
        description="directory names never descended into",
    )
    follow_symlinks: bool = Field(
        True, description="descend into symlinked directories (loops are detected and reported)"
    )
    max_file_bytes: int = Field(
        1_000_000, gt=0, description="a matched file larger than this is a finding, not read"
    )
    max_walk_entries: int = Field(
        1_000_000, gt=0, description="stop (and report) after this many directory entries"
    )
    blueprint_globs: list[str] = Field(
        list(_BLUEPRINT.globs),
        description="blueprint files, globs relative to each root",
    )
    blueprint_sections: list[str] = Field(
        list(_BLUEPRINT.sections),
        description="required headings (regex at heading start, any level from ##, no case)",
    )
    blueprint_max_age_days: int = Field(
        _BLUEPRINT.max_age_days, ge=0, description="max Last-Verified age (0: not required)"
    )
    deploy_map_globs: list[str] = Field(
        list(_DEPLOY_MAP.globs),
        description="DEPLOY-MAP files, globs relative to each root",
    )
    deploy_map_sections: list[str] = Field(
        list(_DEPLOY_MAP.sections),
        description="required headings of a DEPLOY-MAP",
    )
    deploy_map_max_age_days: int = Field(
        _DEPLOY_MAP.max_age_days, ge=0, description="max Last-Verified age (0: not required)"
    )
    zakon_globs: list[str] = Field(
        list(_ZAKON.globs),
        description="ZAKON rule files (checked against the registry)",
    )
    zakon_sections: list[str] = Field(
        list(_ZAKON.sections),
        description="required headings of a ZAKON rule (default: none)",
    )
    zakon_max_age_days: int = Field(
        _ZAKON.max_age_days, ge=0, description="max Last-Verified age (0: not required)"
    )
    registry_file: Path = Field(
        Path(DEFAULT_REGISTRY_FILE), description="the ZAKON registry (JSON, the seed's schema)"
    )
    report_file: Path = Field(
        Path("<root>/state/blueprint-watchdog/report.json"),
        description="the last scan's report, written atomically",
    )
    override_log: Path = Field(
        Path(DEFAULT_OVERRIDE_LOG),
        description="audit JSONL of BLUEPRINT_OVERRIDE uses (append-only, 0600)",
    )
    alert_max_files: int = Field(
        10, ge=1, le=100, description="files listed in the one alert per run"
    )
    hivemind_db: Path = Field(
        Path("<root>/databases/hivemind.db"),
        description="HiveMind messages DB (used when hivemind_url is empty; primary only)",
    )
    hivemind_url: str = Field(
        "", description="HiveMind HTTP endpoint for a JSON POST; empty: write hivemind_db"
    )
    hivemind_token: SecretStr = Field(
        SecretStr(""), description="bearer token for hivemind_url (or hivemind_token_file)"
    )
    hivemind_token_file: Path | None = Field(
        None, description="file holding the HiveMind token (wins over hivemind_token)"
    )
    hivemind_topic: str = Field(
        "blueprint-liveness", min_length=1, description="HiveMind topic of the run's message"
    )
    hivemind_timeout_s: float = Field(
        10.0, gt=0, le=120, description="HiveMind HTTP request timeout"
    )
    follow_symlinks_outside_roots: bool = Field(
        False,
        description="follow symlinks (files and directories) whose target is outside every root",
    )

    @field_validator("schedule")
    @classmethod
    def _check_schedule(cls, value: str) -> str:
        # The parser the runner schedules with (APScheduler's CronTrigger), and an expression
        # that parses but never fires ("0 0 30 2 *") is refused too.
        try:
            schedule_period_s(value)
        except ValueError as exc:
            raise ValueError(
                f"is not a usable 5-field crontab expression (UTC), e.g. '0 2 * * *': {exc}"
            ) from None
        return value

    @field_validator("blueprint_sections", "deploy_map_sections", "zakon_sections")
    @classmethod
    def _check_section_patterns(cls, value: list[str]) -> list[str]:
        check_regexes(value, SECTION_PATTERN_FLAGS)
        return value

    @field_validator("blueprint_globs", "deploy_map_globs", "zakon_globs")
    @classmethod
    def _check_globs(cls, value: list[str]) -> list[str]:
        for i, pattern in enumerate(value):
            try:
                glob_regex(pattern)
            except SchemaError as exc:
                raise ValueError(f"entry [{i}]: {exc}") from None
        return value

    @field_validator("hivemind_url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        return check_http_url(value) if value else value

    @model_validator(mode="after")
    def _check_schemas(self) -> BlueprintWatchdogSection:
        try:
            self.doc_types()
        except SchemaError as exc:
            raise ValueError(str(exc)) from None
        return self

    def doc_types(self) -> tuple[DocType, ...]:
        # The fields as they are (lists, ints): no serializer built for a config model.
        return doc_types_from_settings(dict(self))
