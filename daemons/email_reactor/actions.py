"""``EmailAction``: what email-reactor decided for one email. Its values are the ``action``
column of ``reactor_decisions``, the ``action`` of audit lines and the ``action`` label of
``fleet_email_decisions_total``; a StrEnum, so each compares equal to (and serializes as) that
string. Values are stored and exported: never rename one. Plain data, standard library only.
"""

from __future__ import annotations

import enum

__all__ = ["TASK_ACTIONS", "EmailAction"]


class EmailAction(enum.StrEnum):
    LINKED = "linked"  # a known sender (partner, Paperless, DB history): task + push
    LLM_YES = "llm_yes"  # the classifier (or on_unreachable=open) said revenue-relevant
    LLM_NO = "llm_no"  # silent: classifier no, malformed answer, or a newsletter pre-filter
    SECURITY_QUARANTINE = "security_quarantine"  # phishing signals: quarantined, no task
    RELINKED_VIA_DEDUP = "relinked_via_dedup"  # the task already existed (or legacy handling)
    SKIPPED_CUTOVER = "skipped_cutover"  # older than the cutover: never triaged
    DRY_RUN = "dry_run"  # --dry-run audit lines and metrics only; never stored


#: decisions whose email went to #ceo as a task: the digest lists these while unanswered
TASK_ACTIONS = (EmailAction.LINKED, EmailAction.LLM_YES)
