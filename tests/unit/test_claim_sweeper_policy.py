"""The claim-sweeper's alert texts for leases other tools wrote."""

from __future__ import annotations

from daemons.claim_sweeper.policy import unreadable_message
from shared.leases import UnreadableLease


def test_an_unreadable_lease_alert_quotes_a_bounded_value_and_keys_on_its_digest() -> None:
    blob = "<!channel> " + "x" * 50_000
    lease = UnreadableLease(7, "Deploy", "john:abc123", blob, "not a timestamp")
    msg = unreadable_message(lease, channel="#ops", host="anvil")
    assert len(msg.text) < 600 and "fleet mc claim-release 7 --force" in msg.text
    assert len(msg.dedup_key) < 80 and msg.dedup_key.startswith("claim-unreadable:7:john:abc123:")
    other = UnreadableLease(7, "Deploy", "john:abc123", blob + "y", "not a timestamp")
    assert unreadable_message(other, channel="#ops", host="anvil").dedup_key != msg.dedup_key
    short = UnreadableLease(8, "t", "a:1", "next tuesday", "not a timestamp")
    assert "'next tuesday'" in unreadable_message(short, channel="#ops", host="anvil").text
