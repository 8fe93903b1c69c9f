"""Where Mission Control lives: a SQLite file (today's default) or a PostgreSQL URL, and the
Postgres password (from a private file or the service manager's credentials).

Order: ``--db`` (a path or a ``postgresql://`` URL) > ``$ALAI_MC_URL`` (the seed's switch) >
``[mission_control] url`` > ``[mission_control] db``. The password is never in a URL: a URL with
one is refused (``McTargetError``), and it is read from ``[mission_control] password_file``,
``$ALAI_MC_PASSWORD_FILE``, or ``$CREDENTIALS_DIRECTORY/mc-postgres-password`` (systemd's
LoadCredential). A file group/others can read is refused. Standard library only (the hook verbs
import it before anything else); it must never print or log a password.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import unquote, urlsplit

from shared.envfile import secret_mode_problem

__all__ = [
    "CONNECT_OPTIONS",
    "CREDENTIAL_NAME",
    "PASSWORD_FILE_ENV",
    "URL_ENV",
    "McTarget",
    "McTargetError",
    "check_url",
    "is_postgres_url",
    "read_password",
    "redact_url",
]

URL_ENV = "ALAI_MC_URL"
PASSWORD_FILE_ENV = "ALAI_MC_PASSWORD_FILE"
CREDENTIAL_NAME = "mc-postgres-password"
_SCHEMES = ("postgresql", "postgres")
#: libpq connection keywords every Mission Control connection sets (psycopg in
#: shared.mc_postgres and the hook fast path's libpq alike): UTC session times, a name in
#: pg_stat_activity
CONNECT_OPTIONS = {"options": "-c TimeZone=UTC", "application_name": "alai-fleet"}


class McTargetError(ValueError):
    """A Mission Control URL or password file that must not be used; the message names it
    (without any password) and says why."""


def is_postgres_url(value: str) -> bool:
    return value.split("://", 1)[0].lower() in _SCHEMES and "://" in value


def _query_has_password(query: str) -> bool:
    """libpq takes ``?password=`` (its keys percent-decoded) as well as ``user:password@``."""
    return any(_is_password_key(part.partition("=")[0]) for part in query.split("&"))


def _is_password_key(name: str) -> bool:
    return unquote(name).strip().lower() == "password"


def redact_url(url: str) -> str:
    """The URL with any password (in the user part or the query) replaced by ``***`` (what
    may be printed or logged)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable url>"
    if _query_has_password(parts.query):
        query = "&".join(
            f"{name}=***" if _is_password_key(name) else f"{name}={value}" if sep else name
            for name, sep, value in (part.partition("=") for part in parts.query.split("&"))
        )
        parts = parts._replace(query=query)
    if parts.password is None:
        return parts.geturl()
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return parts._replace(netloc=f"{user}:***@{netloc}").geturl()


def check_url(url: str) -> str:
    """The URL if it is a usable ``postgresql://user@host[:port]/db`` without a password;
    raises McTargetError naming what is wrong."""
    if not is_postgres_url(url):
        raise McTargetError(f"{redact_url(url)}: not a postgresql:// URL")
    try:
        parts = urlsplit(url)
        _ = parts.port  # raises ValueError on a bad port
    except ValueError as exc:
        raise McTargetError(f"{redact_url(url)}: {exc}") from None
    if parts.password is not None or _query_has_password(parts.query):
        raise McTargetError(
            f"{redact_url(url)}: the URL holds a password; put it in a file only you can "
            f"read ([mission_control] password_file or ${PASSWORD_FILE_ENV}) and remove it "
            "from the URL"
        )
    if not parts.hostname and "host=" not in parts.query:
        raise McTargetError(f"{redact_url(url)}: no host")
    if not unquote(parts.path.lstrip("/")):
        raise McTargetError(f"{redact_url(url)}: no database name")
    return url


def _password_source(configured: Path | None) -> tuple[Path | None, bool]:
    """(file, trusted): trusted files are the service manager's private copies."""
    if configured is not None:
        creds = os.environ.get("CREDENTIALS_DIRECTORY")
        trusted = bool(creds) and Path(os.path.abspath(configured)).is_relative_to(
            os.path.abspath(creds or "/")
        )
        return configured, trusted
    env = os.environ.get(PASSWORD_FILE_ENV)
    if env:
        return Path(env).expanduser(), False
    creds = os.environ.get("CREDENTIALS_DIRECTORY")
    if creds and (Path(creds) / CREDENTIAL_NAME).exists():
        return Path(creds) / CREDENTIAL_NAME, True
    return None, False


def read_password(configured: Path | None = None) -> str | None:
    """The Postgres password, or None when no file is configured (then libpq's own means
    apply: a unix socket with peer/trust auth, ~/.pgpass). Raises McTargetError when the file
    is missing, unreadable, or readable by group/others."""
    path, trusted = _password_source(configured)
    if path is None:
        return None
    try:
        problem = None if trusted else secret_mode_problem(path)
        if problem is not None:
            raise McTargetError(f"password file {problem}")
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise McTargetError(f"password file {path}: cannot read: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise McTargetError(f"password file {path}: not UTF-8 text") from None
    return text.strip() or None


class McTarget:
    """One Mission Control store: ``path`` (SQLite) or ``url`` (Postgres, no password).
    Immutable, compared and hashed by its three fields (a plain class, not a dataclass: the
    hook verbs import this module, and ``dataclasses`` costs them ~10 ms of cold start)."""

    __slots__ = ("password_file", "path", "url")
    path: Path | None
    url: str | None
    password_file: Path | None

    def __init__(
        self, path: Path | None = None, url: str | None = None, password_file: Path | None = None
    ) -> None:
        object.__setattr__(self, "path", path)
        object.__setattr__(self, "url", url)
        object.__setattr__(self, "password_file", password_file)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"McTarget is immutable: cannot set {name}")

    def _key(self) -> tuple[Path | None, str | None, Path | None]:
        return (self.path, self.url, self.password_file)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, McTarget) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        return (
            f"McTarget(path={self.path!r}, url={self.url!r}, password_file={self.password_file!r})"
        )

    @property
    def is_postgres(self) -> bool:
        return self.url is not None

    def shown(self) -> str:
        return redact_url(self.url) if self.url is not None else str(self.path)

    @classmethod
    def from_value(cls, value: str, password_file: Path | None = None) -> McTarget:
        """A ``--db`` value: a ``postgresql://`` URL (checked) or a file path."""
        if is_postgres_url(value):
            return cls(url=check_url(value), password_file=password_file)
        return cls(path=Path(value).expanduser())

    @classmethod
    def resolve(
        cls,
        *,
        explicit: str | None = None,
        config_url: str = "",
        config_db: Path | None = None,
        password_file: Path | None = None,
    ) -> McTarget:
        """Apply the order in the module docstring."""
        if explicit:
            return cls.from_value(explicit, password_file)
        env = os.environ.get(URL_ENV, "").strip()
        if env:
            return cls(url=check_url(env), password_file=password_file)
        if config_url:
            return cls(url=check_url(config_url), password_file=password_file)
        if config_db is None:
            raise McTargetError("no Mission Control store configured")
        return cls(path=config_db)
