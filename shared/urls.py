"""URLs compared and shown safely: the origin (scheme, host, port) a URL really points at,
whether a link stays on a configured server, and a URL as it may be printed.

A string prefix is not an origin: ``http://127.0.0.1:3001`` is a prefix of
``http://127.0.0.1:30011/`` and of ``http://127.0.0.1:3001@evil.example/``, and
``https://paperless.example.com`` of ``https://paperless.example.com.evil.net/``. Credentials
travel with requests to the configured origin only. Pure functions; never raises.
"""

from __future__ import annotations

from urllib.parse import SplitResult, urljoin, urlsplit

__all__ = ["Origin", "origin", "redact_url", "same_origin_link"]

Origin = tuple[str, str, int]  # (scheme, lower-case host, port with the scheme's default)
_DEFAULT_PORTS = {"http": 80, "https": 443}


def _split(url: str) -> SplitResult | None:
    if "\\" in url or any(ch.isspace() or ord(ch) < 32 or ord(ch) == 127 for ch in url):
        return None  # where parsers disagree (urllib strips, WHATWG reads "\\" as "/"): refuse
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 -- raises on a port that is not a number in range
    except ValueError:
        return None
    return parts


def origin(url: str) -> Origin | None:
    """The origin of an absolute http(s) URL without credentials; None for anything else
    (another scheme, no host, userinfo, a bad port, control characters)."""
    parts = _split(url)
    if parts is None or parts.scheme.lower() not in _DEFAULT_PORTS or not parts.hostname:
        return None
    if parts.username is not None or parts.password is not None:
        return None
    scheme = parts.scheme.lower()
    return scheme, parts.hostname.lower().rstrip("."), parts.port or _DEFAULT_PORTS[scheme]


def same_origin_link(link: str, base: str) -> str | None:
    """``link`` (absolute, or relative to ``base``) as an absolute URL when it points at
    ``base``'s origin; None when it leaves it or is not a plain http(s) URL."""
    want = origin(base)
    if want is None or _split(link) is None:
        return None
    absolute = urljoin(base, link)
    return absolute if origin(absolute) == want else None


def redact_url(url: str) -> str:
    """``url`` as it may be printed (logs, Slack, errors): scheme, host, port and path;
    never the userinfo, query or fragment, which can hold credentials."""
    parts = _split(url)
    if parts is None or not parts.scheme or parts.hostname is None:
        return "(unparsable URL)"
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"
