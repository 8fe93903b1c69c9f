"""shared.config_values: the checks the section models share, table-driven. The errors never
carry the value (a URL can hold a password)."""

from __future__ import annotations

import pytest

from shared.config_values import (
    MAX_DURATION_S,
    check_bind_address,
    check_clock_time,
    check_duration,
    check_http_url,
    check_regexes,
    check_timezone,
    duration_unit_s,
)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:11435/v1/chat/completions",
        "https://paperless.example.com",
        "http://[::1]:8099/health",
        "https://slack.com/api/",
    ],
)
def test_good_urls(url: str) -> None:
    assert check_http_url(url) == url


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("ftp://127.0.0.1/", "http:// or https://"),
        ("127.0.0.1:8099", "http:// or https://"),
        ("http://", "with a host"),
        ("http://127.0.0.1:99999/", "port"),
        ("http://127.0.0.1:0/", "port"),
        ("http://127.0.0.1:SECRETPORT/", "port"),
        ("http://127.0.0.1/a b", "whitespace"),
        ("http://admin:SECRET@127.0.0.1/", "credentials"),
        ("ftp://admin:SECRET@127.0.0.1/", "http:// or https://"),
        ("http://[::1/", "not a valid URL"),
        ("http://127.0.0.1:x/", "port between 1 and 65535"),
    ],
)
def test_bad_urls_say_why_without_the_value(url: str, why: str) -> None:
    with pytest.raises(ValueError, match=why) as info:
        check_http_url(url)
    assert "SECRET" not in str(info.value) and "admin" not in str(info.value)


def test_a_secret_url_may_carry_credentials() -> None:
    url = "https://user:pw@hc-ping.example.com/uuid"
    assert check_http_url(url, allow_credentials=True) == url


@pytest.mark.parametrize("tz", ["Europe/Oslo", "UTC", "Etc/GMT-3", "America/New_York"])
def test_known_timezones(tz: str) -> None:
    assert check_timezone(tz) == tz


@pytest.mark.parametrize("tz", ["Mars/Olympus", "", "../../etc/passwd", "/etc/localtime", "Oslo"])
def test_unknown_timezones(tz: str) -> None:
    with pytest.raises(ValueError, match="time zone"):
        check_timezone(tz)


@pytest.mark.parametrize("t", ["00:00", "08:00", "23:59", "12:30"])
def test_clock_times(t: str) -> None:
    assert check_clock_time(t) == t


@pytest.mark.parametrize("t", ["25:99", "7:5", "24:00", "12:60", "8:00", "08:00:00", " 08:00", ""])
def test_bad_clock_times(t: str) -> None:
    with pytest.raises(ValueError, match="HH:MM"):
        check_clock_time(t)


def test_regexes_name_the_entry() -> None:
    check_regexes(["^no-?reply", r"^alerts?[-.@]"])
    with pytest.raises(ValueError, match=r"entry \[1\] is not a valid regex"):
        check_regexes(["^ok", "[unclosed"])


@pytest.mark.parametrize("bind", ["127.0.0.1", "::1", "0.0.0.0", "localhost", "anvil.tail1.ts.net"])
def test_bind_addresses(bind: str) -> None:
    assert check_bind_address(bind) == bind


@pytest.mark.parametrize("bind", ["999.1.1.1", "not a host", "", "-bad-", "a..b", "1.2.3"])
def test_bad_bind_addresses(bind: str) -> None:
    with pytest.raises(ValueError, match="IP address or a host name"):
        check_bind_address(bind)


def test_durations_by_key_suffix() -> None:
    assert duration_unit_s("interval_s") == 1.0
    assert duration_unit_s("health_timeout_ms") == 0.001
    assert duration_unit_s("stale_after_h") == 3600.0
    assert duration_unit_s("recency_days") == 86400.0
    assert duration_unit_s("exclude_dirs") is None and duration_unit_s("tiers") is None
    check_duration(3650, 86400.0)
    for bad in (float("inf"), float("nan")):
        with pytest.raises(ValueError, match="finite"):
            check_duration(bad, 1.0)
    with pytest.raises(ValueError, match="ten years"):
        check_duration(MAX_DURATION_S / 3600 + 1, 3600.0)
