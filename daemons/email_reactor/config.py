"""The ``[email_reactor]`` config section (and its ``[email_reactor.security]`` and
``[email_reactor.heuristics]`` tables). Pure data; defaults documented once, here."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import ConfigDict, Field, SecretStr, field_validator, model_validator

from shared.config_values import check_clock_time, check_http_url, check_regexes, check_timezone
from shared.sections import DaemonSection, SettingsModel, empty_table

__all__ = ["STATE_FILE_NAMES", "EmailReactorSection", "HeuristicRules", "SecurityRules"]

# The state files' names inside state_dir when their own key is empty (today's layout).
STATE_FILE_NAMES = {
    "audit_file": "audit.jsonl",
    "quarantine_file": "quarantine.jsonl",
    "digest_state_file": "digest-state.json",
}

FREE_MAIL_DOMAINS = [
    "gmail.com",
    "googlemail.com",
    "outlook.com",
    "hotmail.com",
    "live.com",
    "msn.com",
    "yahoo.com",
    "icloud.com",
    "me.com",
    "mac.com",
    "aol.com",
    "proton.me",
    "protonmail.com",
    "gmx.com",
    "gmx.net",
    "mail.com",
    "yandex.com",
    "online.no",
    "hotmail.no",
]


class SecurityRules(SettingsModel):
    """Rule-based phishing scan. Strong signals quarantine alone; weak ones only together."""

    threshold: int = Field(10, ge=1, description="score at which an email is quarantined")
    strong_weight: int = Field(10, ge=0, description="score of one strong signal")
    weak_weight: int = Field(5, ge=0, description="score of one weak signal")
    risky_attachment_extensions: list[str] = Field(
        [
            ".docm",
            ".xlsm",
            ".pptm",
            ".scr",
            ".exe",
            ".lnk",
            ".msi",
            ".js",
            ".vbs",
            ".bat",
            ".cmd",
            ".iso",
            ".hta",
            ".jar",
        ],
        description="attachment extensions that are a strong signal",
    )
    risky_tlds: list[str] = Field(
        [".tk", ".ml", ".ga", ".cf", ".gq", ".zip", ".mov"],
        description="link TLDs that are a strong signal",
    )
    phishing_phrases: list[str] = Field(
        [
            "urgent password",
            "verify account",
            "verify your account",
            "bitcoin transfer",
            "lottery winner",
            "tax refund",
            "confirm your password",
            "account suspended",
            "unusual sign-in activity",
            "gift card",
        ],
        description="phrases that are a weak signal (case-insensitive)",
    )
    brands: dict[str, list[str]] = Field(
        {
            "paypal": ["paypal.com"],
            "microsoft": ["microsoft.com", "office.com"],
            "apple": ["apple.com"],
            "google": ["google.com"],
            "dnb": ["dnb.no"],
            "vipps": ["vipps.no"],
            "docusign": ["docusign.com", "docusign.net"],
            "amazon": ["amazon.com"],
            "stripe": ["stripe.com"],
        },
        description="brand names in a display name -> the sender domains that may use them",
    )
    plain_http_is_weak: bool = Field(True, description="an http:// link is a weak signal")


class HeuristicRules(SettingsModel):
    """Newsletter / transactional pre-filter before the LLM (saves tokens)."""

    transactional_senders: list[str] = Field(
        [
            r"^no-?reply",
            r"^notifications?[-.@]",
            r"^alerts?[-.@]",
            r"^billing@",
            r"^invoice@",
            r"^receipts?@",
            r"^kontakt@fiken",
            r"^support@stripe",
        ],
        description="regexes on the sender address that mean transactional mail",
    )
    newsletter_senders: list[str] = Field(
        [
            r"^newsletter",
            r"^digest@",
            r"^news@",
            r"^marketing@",
            r"^promo",
            r"tldr",
            r"naeringsliv",
            r"mail-?list",
        ],
        description="regexes on the sender address that mean a newsletter",
    )
    newsletter_subjects: list[str] = Field(
        [
            "this week in",
            "your weekly digest",
            "daily digest",
            "unsubscribe here",
            "view in browser",
            "automated notification",
        ],
        description="subject/body phrases (case-insensitive) that mean a newsletter",
    )

    @field_validator("transactional_senders", "newsletter_senders")
    @classmethod
    def _regexes(cls, value: list[str]) -> list[str]:
        check_regexes(value)  # as rules.heuristic_reason searches them: no flags
        return value


class EmailReactorSection(DaemonSection):
    model_config = ConfigDict(extra="forbid", validate_default=True)

    enabled: bool = Field(True, description="run this daemon on this host")
    interval_s: float = Field(300.0, gt=0, description="seconds between inbox cycles")
    metrics_port: int = Field(9801, ge=0, le=65535, description="Prometheus /metrics port")
    cycle_timeout_s: float = Field(600.0, gt=0, description="a cycle running longer is cancelled")
    inbox_db: Path = Field(
        Path("<root>/databases/email-inbox.db"), description="the ingesting agent's inbox DB"
    )
    partners_file: Path = Field(
        Path("<root>/config/strategic-partners.json"),
        description="strategic partner allowlist (senders[], domains[]), hot-reloaded",
    )
    state_dir: Path = Field(
        Path("<root>/state/email-reactor"), description="audit, quarantine and digest state"
    )
    audit_file: Path | None = Field(
        None,
        description="audit JSONL, one line per decision; empty: <state_dir>/audit.jsonl "
        "(--dry-run writes <name>.dry-run<suffix> beside it)",
    )
    quarantine_file: Path | None = Field(
        None, description="quarantined emails, JSONL; empty: <state_dir>/quarantine.jsonl"
    )
    digest_state_file: Path | None = Field(
        None, description="the daily digest's last-sent state; empty: <state_dir>/digest-state.json"
    )
    recency_days: int = Field(30, ge=1, description="only mail newer than this is triaged")
    max_emails_per_cycle: int = Field(500, ge=1, description="emails decided per cycle at most")
    pushes_per_cycle: int = Field(
        10, ge=1, description="#ceo pushes enqueued per cycle; the rest wait for the next one"
    )
    free_mail_domains: list[str] = Field(
        FREE_MAIL_DOMAINS, description="domains never matched by domain (partners, Paperless)"
    )
    llm_url: str = Field(
        "http://127.0.0.1:11435/v1/chat/completions",
        description="OpenAI-compatible chat completions endpoint (FORGE MLX on the hosts)",
    )
    llm_model: str = Field(
        "mlx-community/Qwen2.5-Coder-32B-Instruct-4bit", description="classifier model"
    )
    llm_api_key: SecretStr = Field(SecretStr(""), description="bearer key, if the server wants one")
    llm_api_key_file: Path | None = Field(None, description="file holding llm_api_key")
    llm_timeout_s: float = Field(15.0, gt=0, description="per-request timeout")
    llm_concurrency: int = Field(4, ge=1, le=64, description="LLM requests in flight at once")
    llm_temperature: float = Field(0.3, ge=0, le=2, description="temperature of the first ask")
    llm_retry_temperature: float = Field(
        0.1, ge=0, le=2, description="temperature of the stricter retry after a malformed answer"
    )
    llm_max_tokens: int = Field(32, ge=1, description="max_tokens per answer")
    llm_max_chars: int = Field(4000, ge=200, description="email text sent to the LLM is cut here")
    llm_max_attempts: int = Field(
        3, ge=1, description="cycles an unreachable LLM is retried before on_unreachable decides"
    )
    on_unreachable: Literal["open", "closed"] = Field(
        "open", description="after llm_max_attempts: open = task + push, closed = llm_no"
    )
    paperless_url: str = Field("", description="Paperless base URL; empty: DB history only")
    paperless_token: SecretStr = Field(SecretStr(""), description="Paperless API token")
    paperless_token_file: Path | None = Field(None, description="file holding paperless_token")
    cf_access_client_id: SecretStr = Field(SecretStr(""), description="Cloudflare Access id")
    cf_access_client_id_file: Path | None = Field(None, description="file holding it")
    cf_access_client_secret: SecretStr = Field(
        SecretStr(""), description="Cloudflare Access secret"
    )
    cf_access_client_secret_file: Path | None = Field(None, description="file holding it")
    paperless_timeout_s: float = Field(10.0, gt=0, description="Paperless request timeout")
    digest_time: str = Field(
        "08:00", description="local time (HH:MM, 00:00-23:59) of the daily #ceo digest"
    )
    timezone: str = Field(
        "Europe/Oslo", description="IANA time zone of digest_time and of the digest's day"
    )
    digest_min_age_h: float = Field(6.0, ge=0, description="unanswered longer than this: digest")
    stale_after_h: float = Field(
        6.0,
        gt=0,
        description="an ACTION email undecided, or a partner email without task or push, longer "
        "than this: one #ceo message per email",
    )
    malformed_alert_share: float = Field(
        0.5,
        ge=0,
        lt=1,
        description="malformed classifier answers in the last hour above this share: one #ops "
        "alert (and one recovery message when the share is back at or below it)",
    )
    malformed_alert_min_answers: int = Field(
        5, ge=1, description="answers in the last hour needed before that share can alert"
    )
    audit_max_bytes: int = Field(20_000_000, gt=0, description="rotate audit JSONL at this size")
    audit_keep: int = Field(10, ge=1, description="rotated audit files kept")
    # Empty tables validated with the section (validate_default; see shared.sections).
    security: SecurityRules = Field(default_factory=empty_table)
    heuristics: HeuristicRules = Field(default_factory=empty_table)

    @field_validator("digest_time")
    @classmethod
    def _clock_time(cls, value: str) -> str:
        return check_clock_time(value)

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str) -> str:
        return check_timezone(value)

    @field_validator("llm_url")
    @classmethod
    def _llm_url(cls, value: str) -> str:
        return check_http_url(value)

    @field_validator("paperless_url")
    @classmethod
    def _paperless_url(cls, value: str) -> str:
        return check_http_url(value) if value else value

    @field_validator("audit_file", "quarantine_file", "digest_state_file", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

    @model_validator(mode="after")
    def _files_default_into_state_dir(self) -> EmailReactorSection:
        # Filled here, not as field defaults, so a state_dir set alone still moves all three
        # (object.__setattr__: a derived value is not a key the operator set).
        for key in STATE_FILE_NAMES:
            object.__setattr__(self, key, self._state_file(key))
        return self

    def _state_file(self, key: str) -> Path:
        value = getattr(self, key)
        return value if isinstance(value, Path) else self.state_dir / STATE_FILE_NAMES[key]

    @property
    def audit_path(self) -> Path:
        return self._state_file("audit_file")

    @property
    def dry_run_audit_path(self) -> Path:
        """Where --dry-run audits: ``audit.jsonl`` -> ``audit.dry-run.jsonl``, beside it."""
        path = self.audit_path
        return path.with_name(f"{path.stem}.dry-run{path.suffix}")

    @property
    def quarantine_path(self) -> Path:
        return self._state_file("quarantine_file")

    @property
    def digest_state_path(self) -> Path:
        return self._state_file("digest_state_file")

    max_tasks_per_cycle: int = Field(
        25,
        ge=1,
        description="Mission Control tasks created per cycle at most (a flood of mail must "
        "not become a flood of tasks); the rest stay undecided until the next cycle, strategic "
        "partners' never wait",
    )
