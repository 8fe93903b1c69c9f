"""New history, new path: after a promotion the new primary replicates under a replica path
that names its promotion epoch (``<path_prefix>/epoch-<N>/<db>``), so its LTX history never
mixes with the old primary's under the same path; the standby follows the newest epoch it knows.

Epoch 0 (a primary never promoted, the original install) keeps the plain path, so existing
replicas stay where they are. Pure: a function of the tier table and a number; it must never
read the epoch files itself (``shared.epochs.replication_epoch`` does).
"""

from __future__ import annotations

from dataclasses import replace

from daemons.restore_loop.catalog import TierTable

__all__ = ["epoch_segment", "with_epoch"]


def epoch_segment(epoch: int) -> str:
    """The path segment of ``epoch`` ("" for epoch 0)."""
    return f"epoch-{epoch}" if epoch > 0 else ""


def with_epoch(table: TierTable, epoch: int) -> TierTable:
    """``table`` whose replica paths live under ``epoch``'s segment."""
    segment = epoch_segment(epoch)
    if not segment:
        return table
    prefix = table.replica.path_prefix.rstrip("/")
    new_prefix = f"{prefix}/{segment}" if prefix else segment
    return replace(table, replica=replace(table.replica, path_prefix=new_prefix))
