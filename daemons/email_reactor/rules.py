"""Pure triage rules: strategic-partner match, the security scan, known-contact matching and
the newsletter/transactional pre-filter. Plain functions over plain data, no I/O.

Email content is hostile input: these functions only read it, never evaluate it, and every
regex here is anchored or bounded so a crafted email cannot make a scan slow.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from daemons.email_reactor.config import HeuristicRules, SecurityRules

__all__ = [
    "Email",
    "Partner",
    "PartnerList",
    "SecurityVerdict",
    "domain_of",
    "heuristic_reason",
    "match_partner",
    "paperless_match",
    "parse_partners",
    "partner_name_spoof",
    "security_scan",
]

_URL_RE = re.compile(r"\b(https?)://([A-Za-z0-9.-]{1,253})(?::\d{1,5})?", re.IGNORECASE)
_AUTH_FAIL_RE = re.compile(r"\b(dkim|spf|dmarc)\s*=\s*(fail|softfail|permerror)\b", re.IGNORECASE)
_SCAN_LIMIT = 200_000  # characters of body scanned; the rest cannot change the verdict


@dataclass(frozen=True)
class Email:
    id: int
    account: str
    from_addr: str
    from_name: str
    to_addr: str
    reply_to: str
    subject: str
    body_text: str
    attachments: tuple[str, ...]
    headers: dict[str, Any]
    classification: str
    status: str
    created_at: str
    mc_task_id: int | None = None
    reactor_pushed_at: str | None = None
    partner_tier: int = 0


@dataclass(frozen=True)
class Partner:
    email: str | None
    domain: str | None
    name: str
    tier: int


@dataclass(frozen=True)
class PartnerList:
    senders: dict[str, Partner] = field(default_factory=dict)  # lower-cased address -> partner
    domains: dict[str, Partner] = field(default_factory=dict)  # lower-cased domain -> partner
    ignored: tuple[str, ...] = ()  # entries refused (free-mail domains), for a warning


@dataclass(frozen=True)
class SecurityVerdict:
    score: int
    signals: tuple[str, ...]
    quarantine: bool
    partner_spoof: bool  # a strategic partner is being impersonated


def domain_of(addr: str) -> str:
    return addr.rpartition("@")[2].strip().lower().rstrip(">").strip()


def _suffix_match(domain: str, suffix: str) -> bool:
    return domain == suffix or domain.endswith("." + suffix)


def parse_partners(data: Any, free_mail: Iterable[str]) -> PartnerList:
    """Validate strategic-partners.json content; raise ValueError saying what is wrong."""
    if not isinstance(data, dict):
        raise ValueError("top level must be an object with senders[] and domains[]")
    free = {d.lower() for d in free_mail}
    senders: dict[str, Partner] = {}
    domains: dict[str, Partner] = {}
    ignored: list[str] = []
    raw_senders = data.get("senders", [])
    raw_domains = data.get("domains", [])
    if not isinstance(raw_senders, list) or not isinstance(raw_domains, list):
        raise ValueError("senders and domains must be lists")
    for i, entry in enumerate(raw_senders):
        if not isinstance(entry, dict) or not isinstance(entry.get("email"), str):
            raise ValueError(f"senders[{i}]: needs an email string")
        addr = entry["email"].strip().lower()
        if "@" not in addr:
            raise ValueError(f"senders[{i}].email: not an address")
        tier = entry.get("tier", 1)
        if not isinstance(tier, int) or tier < 1:
            raise ValueError(f"senders[{i}].tier: must be an integer >= 1")
        senders[addr] = Partner(addr, None, str(entry.get("name") or addr), tier)
    for i, entry in enumerate(raw_domains):
        if isinstance(entry, str):
            entry = {"domain": entry}
        if not isinstance(entry, dict) or not isinstance(entry.get("domain"), str):
            raise ValueError(f"domains[{i}]: needs a domain string")
        dom = entry["domain"].strip().lower().lstrip("@").lstrip(".")
        tier = entry.get("tier", 1)
        if not isinstance(tier, int) or tier < 1:
            raise ValueError(f"domains[{i}].tier: must be an integer >= 1")
        if dom in free or any(_suffix_match(dom, f) for f in free):
            ignored.append(dom)  # a free-mail domain would make every gmail user a partner
            continue
        domains[dom] = Partner(None, dom, str(entry.get("name") or dom), tier)
    return PartnerList(senders, domains, tuple(ignored))


def match_partner(addr: str, partners: PartnerList) -> Partner | None:
    """Exact sender (case-insensitive), else domain suffix on a dot boundary."""
    lowered = addr.strip().lower()
    if lowered in partners.senders:
        return partners.senders[lowered]
    dom = domain_of(lowered)
    for suffix, partner in partners.domains.items():
        if _suffix_match(dom, suffix):
            return partner
    return None


def partner_name_spoof(email: Email, partners: PartnerList) -> Partner | None:
    """A display name that is a partner's name on an address that is not that partner's."""
    name = " ".join(email.from_name.lower().split())
    if not name:
        return None
    for partner in [*partners.senders.values(), *partners.domains.values()]:
        pname = " ".join(partner.name.lower().split())
        if len(pname) >= 4 and pname == name and match_partner(email.from_addr, partners) is None:
            return partner
    return None


def _auth_results(headers: dict[str, Any]) -> str:
    for key, value in headers.items():
        if str(key).lower() == "authentication-results":
            # any JSON the ingest stored: a list of non-strings must not stop the scan
            return " ".join(map(str, value)) if isinstance(value, list) else str(value)
    return ""


def security_scan(
    email: Email, rules: SecurityRules, partners: PartnerList, partner: Partner | None
) -> SecurityVerdict:
    """Score an email. ``partner`` is its strategic-partner match (or None)."""
    strong: list[str] = []
    weak: list[str] = []
    for name in email.attachments:
        lowered = name.lower().strip()
        for ext in rules.risky_attachment_extensions:
            if lowered.endswith(ext.lower()):
                strong.append(f"attachment:{ext.lower()}")
                break
    sender_domain = domain_of(email.from_addr)
    display = email.from_name.lower()
    for brand, allowed in rules.brands.items():
        if brand.lower() in display and not any(
            _suffix_match(sender_domain, d.lower()) for d in allowed
        ):
            strong.append(f"brand_spoof:{brand}")
    text = (email.subject + "\n" + email.body_text)[:_SCAN_LIMIT]
    lowered_text = text.lower()
    http_seen = False
    for scheme, host in _URL_RE.findall(text):
        host = host.lower().rstrip(".")
        for tld in rules.risky_tlds:
            if host.endswith(tld.lower()):
                strong.append(f"risky_tld:{tld.lower()}")
        if scheme.lower() == "http":
            http_seen = True
    if http_seen and rules.plain_http_is_weak:
        weak.append("plain_http_link")
    for phrase in rules.phishing_phrases:
        if phrase.lower() in lowered_text:
            weak.append(f"phrase:{phrase.lower()}")
    partner_spoof = False
    if partner is not None:
        auth = _AUTH_FAIL_RE.findall(_auth_results(email.headers))
        for mech, _result in auth:
            strong.append(f"auth_fail:{mech.lower()}")
            partner_spoof = True
        if (
            email.reply_to
            and domain_of(email.reply_to) != sender_domain
            and match_partner(email.reply_to, partners) is None
        ):
            strong.append("reply_to_mismatch")
            partner_spoof = True
    elif partner_name_spoof(email, partners) is not None:
        strong.append("partner_display_name_spoof")
        partner_spoof = True
    signals = tuple(dict.fromkeys([*strong, *weak]))  # stable, no duplicates
    score = rules.strong_weight * len(set(strong)) + rules.weak_weight * len(set(weak))
    return SecurityVerdict(score, signals, score >= rules.threshold, partner_spoof)


def heuristic_reason(email: Email, rules: HeuristicRules) -> str | None:
    """``transactional_heuristic`` / ``newsletter_heuristic`` or None."""
    local_and_domain = email.from_addr.strip().lower()
    for pattern in rules.transactional_senders:
        if re.search(pattern, local_and_domain):
            return "transactional_heuristic"
    for pattern in rules.newsletter_senders:
        if re.search(pattern, local_and_domain):
            return "newsletter_heuristic"
    head = (email.subject + "\n" + email.body_text[:5000]).lower()
    for phrase in rules.newsletter_subjects:
        if phrase.lower() in head:
            return "newsletter_heuristic"
    return None


def paperless_match(
    email: Email, correspondents: Sequence[dict[str, Any]], free_mail: Iterable[str]
) -> str | None:
    """The name of a Paperless correspondent this sender belongs to: by domain (never a
    free-mail domain) or by exact name."""
    free = {d.lower() for d in free_mail}
    sender_domain = domain_of(email.from_addr)
    sender_name = " ".join(email.from_name.lower().split())
    for c in correspondents:
        name = str(c.get("name") or "")
        lowered = " ".join(name.lower().split())
        if sender_name and len(lowered) >= 4 and lowered == sender_name:
            return name
        if sender_domain and sender_domain not in free:
            match = str(c.get("match") or "").lower()
            tokens = {t.strip().lstrip("@") for t in re.split(r"[\s,]+", match) if t.strip()}
            if sender_domain in tokens or (lowered and lowered == sender_domain):
                return name
    return None
