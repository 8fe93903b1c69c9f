"""The email-reactor daemon: each cycle triages new inbox mail into Mission Control tasks and
#ceo pushes (through the outbox), quarantines phishing, keeps newsletters silent, and sends the
daily digest.

Order of effects per email, so a kill -9 anywhere loses nothing and doubles nothing: quarantine
line (if any) -> Mission Control task (idempotent on source/ref) -> decision committed in
``reactor_decisions`` (the source of truth) -> push enqueued (dedup key ``email:<id>``) ->
audit line -> marked audited. At start, decisions whose audit line is missing are appended.
File I/O runs in worker threads (the partners file is re-read only when its (mtime, size)
changed); an audit, quarantine or digest-state write finishes even when a stop interrupts it.
It must never run on a standby (it writes replicated databases).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import replace
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

from daemons.email_reactor import poison, reminders
from daemons.email_reactor.actions import EmailAction
from daemons.email_reactor.budget import CycleBudget
from daemons.email_reactor.config import EmailReactorSection
from daemons.email_reactor.llm import LLMClient, LLMError, build_messages
from daemons.email_reactor.llm_health import (
    STATE_FILE,
    LLMHealth,
    config_message,
    event_message,
)
from daemons.email_reactor.manifest import MANIFEST
from daemons.email_reactor.paperless import PaperlessClient, PaperlessError
from daemons.email_reactor.pipeline import (
    TriageInputs,
    llm_decision,
    spoof_text,
    triage,
    unreachable_decision,
)
from daemons.email_reactor.rules import Email, PartnerList, domain_of, parse_partners
from daemons.email_reactor.store import Decision, InboxStore, StoredDecision
from shared.files import (
    append_jsonl,
    append_jsonl_many,
    atomic_write_json,
    complete_in_thread,
    read_json,
)
from shared.logging import hash_email
from shared.mission_control import LeaseStore, McTarget, format_sql_ts, open_store
from shared.notify import Message
from shared.notify.escape import slack_text
from shared.runtime import CycleResult, Daemon, DaemonContext, RefusedToStart
from shared.schema_contract import ContractReport, ContractViolation

__all__ = ["EmailReactor"]


def _sql_now(now: float) -> str:
    return format_sql_ts(datetime.fromtimestamp(now, UTC))


class EmailReactor(Daemon[EmailReactorSection]):
    manifest = MANIFEST

    def __init__(self, ctx: DaemonContext[EmailReactorSection]) -> None:
        super().__init__(ctx)
        self.s = self.section
        self.store: InboxStore | None = None
        self.mc: LeaseStore | None = None
        self.llm: LLMClient | None = None
        self.paperless: PaperlessClient | None = None
        self.partners = PartnerList()
        self._partners_key: tuple[int, int] | None = None  # (mtime_ns, size) last read
        self._partners_bad = False
        self._mc_lock = asyncio.Lock()
        self._audit_lock = asyncio.Lock()
        metrics = self.own_metrics()
        self.m_decisions = metrics.counter("fleet_email_decisions_total")
        self.m_llm = metrics.counter("fleet_email_llm_requests_total")
        self.m_llm_duration = metrics.histogram("fleet_email_llm_duration_seconds")
        self.m_backlog = metrics.gauge("fleet_email_backlog")
        self.m_oldest = metrics.gauge("fleet_email_oldest_undecided_age_seconds")
        self.m_paperless_errors = metrics.counter("fleet_email_paperless_errors_total")
        self.m_stale = metrics.gauge("fleet_email_stale")
        self.m_stale_alerts = metrics.counter("fleet_email_stale_alerts_total")
        self.m_malformed_share = metrics.gauge("fleet_email_llm_malformed_share")
        self.llm_health = LLMHealth(self.s.llm_model)  # replaced by the saved state in open()

    # paths ---------------------------------------------------------------------------------
    @property
    def audit_path(self) -> Path:
        return self.s.dry_run_audit_path if self.ctx.dry_run else self.s.audit_path

    @property
    def quarantine_path(self) -> Path:
        return self.s.quarantine_path

    @property
    def digest_state_path(self) -> Path:
        return self.s.digest_state_path

    # lifecycle -----------------------------------------------------------------------------
    async def open(self) -> None:
        dry = self.ctx.dry_run
        if dry and not await asyncio.to_thread(self.s.inbox_db.exists):
            raise FileNotFoundError(f"--dry-run needs an existing inbox: {self.s.inbox_db}")
        mc_conf = self.ctx.config.mission_control
        try:
            self.store = await InboxStore(self.s.inbox_db).open(migrate=not dry)
            if not dry:  # --dry-run never touches Mission Control
                target = McTarget.resolve(  # [mission_control] url / $ALAI_MC_URL: Postgres
                    config_url=mc_conf.url,
                    config_db=mc_conf.db,
                    password_file=mc_conf.password_file,
                )
                self.mc = await asyncio.to_thread(
                    lambda: open_store(
                        target,
                        clock=self.ctx.clock,
                        creates_tasks=True,
                        task_defaults=mc_conf.task_defaults,
                    )
                )
        except ContractViolation as exc:
            raise RefusedToStart(f"{self.name}: {exc}") from None
        for report in (self.store.report, self.mc.report if self.mc else None):
            self._say_degraded(report)
        self.llm = LLMClient(
            self.s.llm_url,
            self.s.llm_model,
            timeout_s=self.s.llm_timeout_s,
            max_tokens=self.s.llm_max_tokens,
            api_key=self.s.llm_api_key.get_secret_value(),
        )
        if self.s.paperless_url:
            self.paperless = PaperlessClient(
                self.s.paperless_url,
                token=self.s.paperless_token.get_secret_value(),
                cf_id=self.s.cf_access_client_id.get_secret_value(),
                cf_secret=self.s.cf_access_client_secret.get_secret_value(),
                timeout_s=self.s.paperless_timeout_s,
            )
        if not self.ctx.dry_run:
            await self.reconcile_audit()
            saved = await asyncio.to_thread(read_json, self.s.state_dir / STATE_FILE)
            self.llm_health = LLMHealth.from_json(saved, self.s.llm_model)

    async def close(self) -> None:
        for closer in (self.llm, self.paperless):
            if closer is not None:
                await closer.close()
        if self.store is not None:
            await self.store.close()
        if self.mc is not None:
            await asyncio.to_thread(self.mc.close)

    # audit ---------------------------------------------------------------------------------
    def _append_audit(self, record: dict[str, Any]) -> None:
        append_jsonl(
            self.audit_path, record, max_bytes=self.s.audit_max_bytes, keep=self.s.audit_keep
        )

    def _audited_ids_in_tail(self) -> set[int]:
        """Email ids in the current and previous audit file (where a line written just
        before a crash would be)."""
        ids: set[int] = set()
        for path in (self.audit_path, self.audit_path.with_name(self.audit_path.name + ".1")):
            try:
                text = path.read_text(encoding="utf-8", errors="replace")
            except FileNotFoundError:
                continue
            for line in text.splitlines():
                try:
                    ids.add(int(json.loads(line)["email_id"]))
                except (ValueError, KeyError, TypeError):
                    continue  # a torn last line from a crash: the decision is re-appended
        return ids

    async def reconcile_audit(self) -> int:
        """Append the audit line of every committed decision that lacks one."""
        assert self.store is not None
        missing = await self.store.unaudited()
        if not missing:
            return 0
        present = await asyncio.to_thread(self._audited_ids_in_tail)
        records = [d.audit_record() for d in missing if d.email_id not in present]
        appended = await complete_in_thread(
            append_jsonl_many,
            self.audit_path,
            records,
            max_bytes=self.s.audit_max_bytes,
            keep=self.s.audit_keep,
        )
        await self.store.mark_all_audited([d.email_id for d in missing])
        if appended:
            self.log.info("audit lines restored from reactor_decisions", count=appended)
        return appended

    # shared-table contracts ------------------------------------------------------------------
    def _say_degraded(self, report: ContractReport | None) -> None:
        """Log, once per change of layout, what works worse for a missing optional column."""
        if report is None:
            return
        for line in report.degraded():
            self.log.warning("shared table lacks an optional column; degraded", detail=line)
        for line in report.notes():
            self.log.info("shared table note", detail=line)

    async def _check_contracts(self) -> None:
        """Re-check the shared tables when their schema moved (another tool migrated them).
        A table the reactor can no longer use fails the cycle, with one #ops alert per
        distinct problem (the outbox dedup key carries it)."""
        assert self.store is not None
        try:
            self._say_degraded(await self.store.recheck())
            if self.mc is not None:
                async with self._mc_lock:
                    self._say_degraded(await asyncio.to_thread(self.mc.recheck))
        except ContractViolation as exc:
            report = exc.report
            await self.ctx.notify(
                Message(
                    channel=self.ctx.config.slack.ops_channel,
                    text="[email-reactor] cannot use a shared table, triage is stopped: "
                    f"{slack_text(exc, 500)}. Run `fleet db check` on this host.",
                    dedup_key=f"schema-contract:{report.use.contract.table}:{report.fingerprint()}",
                    daemon=self.name,
                )
            )
            raise

    # partners --------------------------------------------------------------------------------
    async def _reload_partners(self) -> None:
        """Re-read the partners file when its (mtime, size) changed; every file access runs
        in a worker thread."""
        path = self.s.partners_file
        try:
            st = await asyncio.to_thread(path.stat)
        except FileNotFoundError:
            if self._partners_key is not None:
                self.log.warning("strategic partners file disappeared; keeping last list")
            return
        mtime = st.st_mtime
        key = (st.st_mtime_ns, st.st_size)
        if key == self._partners_key:
            return
        self._partners_key = key
        try:
            data = json.loads(await asyncio.to_thread(path.read_text, encoding="utf-8"))
            partners = parse_partners(data, self.s.free_mail_domains)
        except (OSError, ValueError) as exc:
            if not self._partners_bad:
                self._partners_bad = True
                self.log.error(
                    "strategic partners file invalid; keeping last good list", error=str(exc)
                )
                await self.ctx.notify(
                    Message(
                        channel=self.ctx.config.slack.ops_channel,
                        text=f"[email-reactor] {slack_text(path.name, 80)} is invalid "
                        f"({slack_text(exc, 300)}); still using the last good partner list. "
                        "Fix the file; it is re-read every cycle.",
                        dedup_key=f"partners-invalid:{mtime}",
                        daemon=self.name,
                    )
                )
            return
        if self._partners_bad:
            self.log.info("strategic partners file valid again")
        self._partners_bad = False
        self.partners = partners
        if partners.ignored:
            self.log.warning(
                "free-mail domains ignored in partners file", domains=list(partners.ignored)
            )

    # cycle ---------------------------------------------------------------------------------
    def _since(self, now: float) -> str:
        return _sql_now(now - self.s.recency_days * 86400)

    async def _inputs(self) -> TriageInputs:
        assert self.store is not None
        correspondents = None
        if self.paperless is not None:
            try:
                correspondents = await self.paperless.correspondents()
            except PaperlessError as exc:
                self.m_paperless_errors.inc()
                self.log.warning("paperless lookup failed; using DB history only", error=str(exc))
        return TriageInputs(
            settings=self.s,
            partners=self.partners,
            own_recipients=frozenset(await self.store.own_recipients()),
            correspondents=correspondents,
            ceo_channel=self.ctx.config.slack.ceo_channel,
        )

    async def cycle(self) -> CycleResult:
        assert self.store is not None
        now = self.ctx.clock()
        await self._check_contracts()
        await self._reload_partners()
        pushes = CycleBudget(self.s.pushes_per_cycle)
        tasks = CycleBudget(self.s.max_tasks_per_cycle)
        if not self.ctx.dry_run:
            await self._confirm_delivered()
            await self._flush_deferred(pushes)
            await poison.release_fixed(self)
        read = await self.store.new_emails(self._since(now), self.s.max_emails_per_cycle)
        await poison.set_aside(self, read.poison)
        emails = read.emails
        inputs = await self._inputs() if emails else None
        triaged = [(email, triage(email, inputs)) for email in emails] if inputs else []
        needs_llm = [email for email, result in triaged if result.decision is None]
        # The LLM calls (the slow part) start at once; rule-decided mail commits meanwhile.
        llm_work = (
            asyncio.create_task(self._classify_all(needs_llm, inputs, pushes, tasks))
            if needs_llm and inputs is not None
            else None
        )
        try:
            for email, result in triaged:
                if result.decision is None:
                    continue
                if result.decision.action is EmailAction.SECURITY_QUARANTINE:
                    await self._quarantine(email, result.decision, result.verdict)
                await self._commit(email, result.decision, pushes, tasks)
        except BaseException:
            # Failed or cancelled (cycle timeout, shutdown): the LLM work goes with the cycle.
            if llm_work is not None:
                llm_work.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await llm_work
            raise
        if llm_work is not None:
            await llm_work
        if tasks.refused:
            self.log.info("task budget spent; mail waits for the next cycle", waiting=tasks.refused)
        if not self.ctx.dry_run:
            await self._alert_stale(now)
            await self._check_llm_health()
            await self._maybe_digest(now)
        count, oldest = await self.store.backlog(self._since(now))
        self.m_backlog.set(count)
        age = (
            now - datetime.fromisoformat(oldest).replace(tzinfo=UTC).timestamp() if oldest else 0.0
        )
        self.m_oldest.set(max(0.0, age))
        # A full read runs the next cycle at once, unless the task budget ran out: the mail
        # waiting for it would otherwise get its tasks cycle after cycle, uncapped.
        full = len(emails) + len(read.poison) >= self.s.max_emails_per_cycle
        return CycleResult(
            more=full and not tasks.refused,
            detail={"emails": len(emails), "llm": len(needs_llm)},
        )

    async def _quarantine(self, email: Email, decision: Decision, verdict: Any) -> None:
        signals = list(verdict.signals) if verdict is not None else []
        record = {
            "ts": _sql_now(self.ctx.clock()),
            "email_id": email.id,
            "sender": hash_email(email.from_addr),
            "sender_domain": domain_of(email.from_addr),
            "reason": decision.reason,
            "signals": signals,
            "score": verdict.score if verdict is not None else None,
        }
        if self.ctx.dry_run:
            return
        await complete_in_thread(
            append_jsonl,
            self.quarantine_path,
            record,
            max_bytes=self.s.audit_max_bytes,
            keep=self.s.audit_keep,
        )
        if decision.reason == "partner_spoof":
            await self.ctx.notify(
                Message(
                    channel=self.ctx.config.slack.ops_channel,
                    text=spoof_text(email, signals),
                    dedup_key=f"partner-spoof:{email.id}",
                    daemon=self.name,
                )
            )

    async def _commit(
        self, email: Email, decision: Decision, pushes: CycleBudget, tasks: CycleBudget
    ) -> None:
        """Apply one decision's effects in the crash-safe order (see module doc). A task over
        ``max_tasks_per_cycle`` leaves the email undecided for the next cycle (a strategic
        partner's takes a slot if one is left but never waits)."""
        assert self.store is not None
        now = self.ctx.clock()
        sender = hash_email(email.from_addr)
        if self.ctx.dry_run:
            record = {
                "ts": _sql_now(now),
                "email_id": email.id,
                "action": EmailAction.DRY_RUN,
                "would_be": decision.action,
                "reason": decision.reason,
                "source": decision.source,
                "mc_task_id": None,
                "sender": sender,
            }
            async with self._audit_lock:
                await complete_in_thread(self._append_audit, record)
            self.m_decisions.labels(EmailAction.DRY_RUN, decision.source).inc()
            return
        mc_task_id: int | None = None
        action = decision.action
        if decision.creates_task:
            partner = decision.partner_tier > 0
            took = tasks.take() if tasks.left > 0 or not partner else False
            if not took and not partner:
                return
            mc = self.mc
            assert mc is not None
            try:
                async with self._mc_lock:
                    ref = await asyncio.to_thread(
                        mc.create_task,
                        decision.task_title,
                        description=decision.task_description,
                        priority=decision.priority,
                        source="email",
                        source_ref=str(email.id),
                    )
            except BaseException:
                if took:
                    tasks.give_back()
                raise
            mc_task_id = ref.id
            if not ref.created:
                action = EmailAction.RELINKED_VIA_DEDUP
        final = replace(decision, action=action)
        push_key = f"email:{email.id}" if decision.push_text else None
        recorded = await self.store.record(
            email,
            final,
            mc_task_id=mc_task_id,
            decided_at=_sql_now(now),
            sender_hash=sender,
            push_key=push_key,
        )
        if not recorded.inserted:
            return  # decided by an earlier run; its effects are already recorded
        self.m_decisions.labels(action, decision.source).inc()
        if recorded.push and push_key and decision.push_text:  # else deferred (budget.py)
            channel = decision.push_channel or ""
            await pushes.spend(
                partial(self._enqueue_push, email.id, push_key, channel, decision.push_text)
            )
        record = StoredDecision(
            email.id, action, decision.reason, decision.source, mc_task_id, _sql_now(now), sender
        ).audit_record()
        async with self._audit_lock:
            await complete_in_thread(self._append_audit, record)
        await self.store.mark_audited(email.id)

    async def _enqueue_push(self, email_id: int, key: str, channel: str, text: str) -> None:
        assert self.store is not None
        await self.ctx.notify(
            Message(
                channel=channel or self.ctx.config.slack.ceo_channel,
                text=text,
                dedup_key=key,
                kind="push",
                daemon=self.name,
            )
        )
        await self.store.mark_push_enqueued(email_id, _sql_now(self.ctx.clock()))

    async def _flush_deferred(self, pushes: CycleBudget) -> None:
        """Enqueue pushes decided earlier but held back by pushes_per_cycle (partners first)."""
        assert self.store is not None
        if pushes.left <= 0:
            return
        for email_id, key, channel, text in await self.store.deferred_pushes(pushes.left):
            if not await pushes.spend(partial(self._enqueue_push, email_id, key, channel, text)):
                return

    async def _confirm_delivered(self) -> None:
        """Write reactor_pushed_at (the seed's DB gate) for pushes the outbox delivered."""
        assert self.store is not None
        outbox = self.ctx.outbox
        if outbox is None:
            return
        pending = await self.store.unconfirmed_pushes()
        if not pending:
            return
        delivered = await outbox.sent_at([key for _id, key in pending])
        for email_id, key in pending:
            if key in delivered:
                await self.store.mark_pushed(
                    email_id, datetime.fromtimestamp(delivered[key], UTC).isoformat()
                )

    async def _alert_stale(self, now: float) -> None:
        await reminders.alert_stale(self, now)

    async def _check_llm_health(self) -> None:
        """One #ops alert per incident of malformed LLM answers, one recovery (llm_health.py)."""
        now, health, s = self.ctx.clock(), self.llm_health, self.s
        event = health.evaluate(now, s.malformed_alert_share, s.malformed_alert_min_answers)
        self.m_malformed_share.set(health.share(now))
        if event is not None:
            await self.ctx.notify(event_message(event, s, self.ctx.config.slack.ops_channel))
            self.log.warning(f"llm answers {event.kind}", share=round(event.share, 3))
        await complete_in_thread(atomic_write_json, s.state_dir / STATE_FILE, health.to_json())

    # LLM -------------------------------------------------------------------------------------
    async def _classify_all(
        self, emails: list[Email], inputs: TriageInputs, pushes: CycleBudget, tasks: CycleBudget
    ) -> None:
        gate = asyncio.Semaphore(self.s.llm_concurrency)

        async def one(email: Email) -> None:
            async with gate:
                if tasks.spent():
                    return  # a YES could not become a task now: ask next cycle, not in vain
                decision = await self._classify(email, inputs)
            if decision is not None:
                await self._commit(email, decision, pushes, tasks)

        # A TaskGroup: if one commit fails, its siblings are cancelled with the cycle instead
        # of running on unseen into the next one.
        async with asyncio.TaskGroup() as group:
            for e in emails:
                group.create_task(one(e))

    async def _ask(self, email: Email, strict: bool) -> str | None:
        assert self.llm is not None
        messages = build_messages(
            sender_domain=domain_of(email.from_addr),
            subject=email.subject,
            body=email.body_text,
            max_chars=self.s.llm_max_chars,
            strict=strict,
        )
        temperature = self.s.llm_retry_temperature if strict else self.s.llm_temperature
        reply = await self.llm.ask(messages, temperature)
        self.m_llm_duration.observe(reply.duration_s)
        self.m_llm.labels(reply.answer.lower() if reply.answer else "malformed").inc()
        self.llm_health.record(self.ctx.clock(), reply.answer is None)
        return reply.answer

    async def _classify(self, email: Email, inputs: TriageInputs) -> Decision | None:
        """The LLM step. None: undecided this cycle (transient failure, retried next)."""
        assert self.store is not None
        try:
            answer = await self._ask(email, strict=False)
            if answer is None:
                answer = await self._ask(email, strict=True)
            return llm_decision(email, inputs, answer)
        except LLMError as exc:
            self.m_llm.labels("auth" if exc.kind in ("auth", "not_found") else "transient").inc()
            if exc.kind in ("auth", "not_found"):
                await self._alert_llm_config(exc)
            if self.ctx.dry_run:
                return None
            attempts = await self.store.llm_attempt(email.id, str(exc), _sql_now(self.ctx.clock()))
            if attempts >= self.s.llm_max_attempts:
                return unreachable_decision(email, inputs)
            return None

    async def _alert_llm_config(self, exc: LLMError) -> None:
        day = datetime.fromtimestamp(self.ctx.clock(), UTC).date().isoformat()
        ops = self.ctx.config.slack.ops_channel
        await self.ctx.notify(config_message(exc.status, self.s, ops, day))

    # digest ----------------------------------------------------------------------------------
    async def _maybe_digest(self, now: float) -> None:
        await reminders.maybe_digest(self, now)

    async def send_digest(self, now: float, *, force: bool, dry_run: bool) -> str | None:
        """Build today's digest; enqueue it unless dry-run. Returns the text (None: nothing)."""
        return await reminders.send_digest(self, now, force=force, dry_run=dry_run)
