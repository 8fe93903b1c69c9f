"""``fleet email ...``: process (alias of ``fleet run email-reactor``), digest, list, explain,
partners, hash, cutover.

Exit codes: 0 ok; 2 no such email / partner; 3 the inbox database is unavailable; 64 usage; 78
invalid config or partners file, or the reactor refusing to run on this host's role. The read
commands take ``--json`` (errors as ``{"error": ..., "code": N}`` on stdout)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

import click

from daemons.email_reactor.config import EmailReactorSection
from shared.cli import config_option, die, invoke_app_command, json_option, load_config_or_exit
from shared.exitcodes import EX_CONFIG, ExitCode

__all__ = ["email"]

T = TypeVar("T")


@click.group()
def email() -> None:
    """email-reactor: strategic-inbox triage."""


@email.command()
@click.option("--once", is_flag=True, help="run exactly one cycle")
@click.option(
    "--dry-run",
    is_flag=True,
    help="decide and audit to the dry-run audit file only (audit.dry-run.jsonl)",
)
@config_option
@click.pass_context
def process(ctx: click.Context, once: bool, dry_run: bool, config_path: str | None) -> None:
    """Alias of `fleet run email-reactor`."""
    invoke_app_command(
        ctx,
        "run",
        name="email-reactor",
        run_all=False,
        once=once,
        dry_run=dry_run,
        config_path=config_path,
    )


def _with_reactor(config_path: str | None, dry_run: bool, fn: Callable[[Any], Awaitable[T]]) -> T:
    from daemons.email_reactor.daemon import EmailReactor
    from shared import __version__
    from shared.logging import configure_logging, get_logger
    from shared.metrics import DaemonMetrics
    from shared.notify import outbox_for
    from shared.roles import RoleFileError, effective_role
    from shared.runtime import DaemonContext, RefusedToStart

    config = load_config_or_exit(config_path)
    configure_logging(host=config.fleet.host, level="warning", daemon="email-reactor")
    try:
        role = effective_role(config.fleet.role, config.role_file)
    except RoleFileError as exc:
        die(ExitCode.CONFIG, str(exc))
    reason = EmailReactor.refuse_reason(config.section(EmailReactorSection), role)
    if reason and not dry_run:
        die(EX_CONFIG, reason)

    async def _go() -> T:
        outbox = None if dry_run else await outbox_for(config.notify).open()
        ctx = DaemonContext(
            config=config,
            section=config.section(EmailReactorSection),
            role=role,
            log=get_logger(daemon="email-reactor"),
            metrics=DaemonMetrics("email-reactor", __version__),
            outbox=outbox,
            dry_run=dry_run,
        )
        reactor = EmailReactor(ctx)
        try:
            try:
                await reactor.open()
            except RefusedToStart as exc:
                die(EX_CONFIG, str(exc))
            return await fn(reactor)
        finally:
            await reactor.close()
            if outbox is not None:
                await outbox.close()

    return asyncio.run(_go())


@email.command()
@click.option("--dry-run", is_flag=True, help="print the digest, send nothing")
@click.option("--force", is_flag=True, help="send even if today's digest went out already")
@config_option
def digest(dry_run: bool, force: bool, config_path: str | None) -> None:
    """Build today's #ceo digest now (normally sent by the daemon at digest_time)."""

    async def _run(reactor: Any) -> str | None:
        text: str | None = await reactor.send_digest(time.time(), force=force, dry_run=dry_run)
        return text

    text = _with_reactor(config_path, dry_run, _run)
    if text is None:
        click.echo("nothing pending (or already sent today; --force to resend)")
    else:
        click.echo(text)
        if not dry_run:
            click.echo("\n(queued for #ceo)")


@email.command("list")
@click.option(
    "--limit", type=click.IntRange(1, 100_000), default=50, show_default=True, help="at most"
)
@click.option("--undecided", is_flag=True, help="only the emails the reactor has not decided")
@json_option()
@config_option
def list_cmd(limit: int, undecided: bool, as_json: bool, config_path: str | None) -> None:
    """The inbox's emails, newest first: id, received, status, classification, the reactor's
    decision (or `-` while undecided) and subject; the ids `fleet email explain` takes. Exit 3
    when the inbox database cannot be read."""
    from daemons.email_reactor.listing import InboxUnavailable, list_emails

    config = load_config_or_exit(config_path)
    inbox = config.section(EmailReactorSection).inbox_db
    try:
        emails = list_emails(inbox, limit=limit, undecided=undecided)
    except InboxUnavailable as exc:
        die(ExitCode.STORE, f"error: inbox store unavailable: {exc}")
    if as_json:
        click.echo(json.dumps([e.to_json() for e in emails], indent=2))
        return
    if not emails:
        click.echo(f"no {'undecided ' if undecided else ''}emails in {inbox}")
        return
    click.echo(
        f"{'ID':>7}  {'RECEIVED':<19}  {'STATUS':<10} {'CLASS':<10} {'DECISION':<20} SUBJECT"
    )
    for e in emails:
        decision = e.decision or ("set aside" if e.set_aside else "-")
        task = f" (MC #{e.mc_task_id})" if e.mc_task_id else ""
        click.echo(
            f"{e.id:>7}  {e.created_at[:19]:<19}  {e.status[:10]:<10} {e.classification[:10]:<10} "
            f"{(decision + task)[:20]:<20} {e.subject}"
        )


def _explanation(reactor: Any, email_id: int, ask: bool) -> Awaitable[dict[str, Any] | None]:
    """The decision path for ``email_id`` as data (None: no such email)."""
    from daemons.email_reactor.pipeline import llm_decision, triage
    from daemons.email_reactor.rows import PoisonRow

    async def _run() -> dict[str, Any] | None:
        store = reactor.store
        mail = await store.email(email_id)
        if mail is None:
            return None
        doc: dict[str, Any] = {"email_id": email_id, "inbox": str(reactor.s.inbox_db)}
        if isinstance(mail, PoisonRow):
            since = await store.set_aside_since(email_id)
            return {**doc, "readable": False, "problem": mail.reason, "set_aside_since": since}
        await reactor._reload_partners()
        inputs = await reactor._inputs()
        result = triage(mail, inputs)
        doc.update(
            readable=True,
            created_at=mail.created_at,
            status=mail.status,
            classification=mail.classification or None,
            degraded=list(store.report.degraded()) if store.report is not None else [],
            trace=list(result.trace),
            llm_answer=None,
        )
        decision = result.decision
        if decision is None and ask:
            answer = await reactor._ask(mail, strict=False)
            doc["llm_answer"] = answer or "malformed"
            decision = llm_decision(mail, inputs, answer)
        doc["decision"] = None
        if decision is not None:
            doc["decision"] = {
                "action": str(decision.action),
                "reason": decision.reason,
                "source": decision.source,
                "creates_task": decision.creates_task,
                "push_channel": decision.push_channel if decision.creates_task else None,
            }
        stored = await store.stored_decision(email_id)
        doc["recorded"] = None
        if stored is not None:
            doc["recorded"] = {
                "action": str(stored.action),
                "reason": stored.reason,
                "decided_at": stored.decided_at,
                "mc_task_id": stored.mc_task_id,
            }
        return doc

    return _run()


def _explanation_lines(doc: dict[str, Any]) -> list[str]:
    email_id = doc["email_id"]
    if not doc["readable"]:
        since = doc["set_aside_since"]
        return [
            f"email #{email_id} cannot be read: {doc['problem']}",
            f"=> set aside since {since} UTC: not triaged until the row is fixed (the next "
            "cycle after that triages it)"
            if since
            else "=> would be set aside at the next cycle (not triaged)",
        ]
    lines = [
        f"email #{email_id} ({doc['created_at']}, status {doc['status']}, "
        f"classification {doc['classification'] or '-'})"
    ]
    lines += [f"  ! degraded: {line}" for line in doc["degraded"]]
    lines += [f"  - {step}" for step in doc["trace"]]
    if doc["llm_answer"] is not None:
        answer = doc["llm_answer"]
        lines.append(
            f"  - LLM answered {'something malformed' if answer == 'malformed' else answer}"
        )
    decision = doc["decision"]
    if decision is None:
        lines.append("=> would ask the LLM (use --ask to ask it now)")
    else:
        effect = f"; task + push to {decision['push_channel']}" if decision["creates_task"] else ""
        lines.append(
            f"=> {decision['action']} (reason {decision['reason']}, source {decision['source']})"
            f"{effect}"
        )
    recorded = doc["recorded"]
    if recorded is not None:
        lines.append(
            f"recorded decision: {recorded['action']} ({recorded['reason']}) at "
            f"{recorded['decided_at']}, task {recorded['mc_task_id'] or '-'}"
        )
    return lines


@email.command()
@click.argument("email_id", type=int)
@click.option("--ask", is_flag=True, help="also ask the LLM classifier (one real request)")
@json_option()
@config_option
def explain(email_id: int, ask: bool, as_json: bool, config_path: str | None) -> None:
    """Print the decision path for one email without acting (ids: `fleet email list`);
    exit 2 when there is no such email."""
    doc = _with_reactor(config_path, True, lambda reactor: _explanation(reactor, email_id, ask))
    if doc is None:
        config = load_config_or_exit(config_path)
        inbox = config.section(EmailReactorSection).inbox_db
        die(ExitCode.NOT_FOUND, f"error: no email {email_id} in {inbox}")
    if as_json:
        click.echo(json.dumps(doc, indent=2))
        return
    for line in _explanation_lines(doc):
        click.echo(line)


@email.command()
@click.option("--before", default=None, help="UTC time 'YYYY-MM-DD HH:MM:SS' (default: now)")
@click.option("--yes", is_flag=True, help="do not ask for confirmation")
@config_option
def cutover(before: str | None, yes: bool, config_path: str | None) -> None:
    """Mark all undecided mail older than --before as decided (skipped_cutover)."""
    from daemons.email_reactor.actions import EmailAction
    from shared.mission_control import format_sql_ts, parse_ts

    try:
        cut = format_sql_ts(parse_ts(before)) if before else format_sql_ts(datetime.now(UTC))
    except ValueError:
        raise click.BadParameter(
            "expected 'YYYY-MM-DD HH:MM:SS' (UTC)", param_hint="--before"
        ) from None
    if not yes:
        click.confirm(
            f"Mark every undecided email created before {cut} UTC as "
            f"{EmailAction.SKIPPED_CUTOVER}?",
            abort=True,
        )

    async def _run(reactor: Any) -> int:
        count: int = await reactor.store.cutover(cut, format_sql_ts(datetime.now(UTC)))
        await reactor.reconcile_audit()
        return count

    count = _with_reactor(config_path, False, _run)
    click.echo(f"{count} emails marked {EmailAction.SKIPPED_CUTOVER} (created before {cut} UTC)")


@email.group()
def partners() -> None:
    """The strategic partner allowlist (strategic-partners.json)."""


def _partners_file(config_path: str | None) -> tuple[Any, dict[str, Any]]:
    config = load_config_or_exit(config_path)
    path = config.section(EmailReactorSection).partners_file
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        data = {"senders": [], "domains": []}
    except (OSError, ValueError) as exc:
        die(EX_CONFIG, f"{path}: cannot read ({exc}); fix it by hand first")
    if not isinstance(data, dict):
        die(EX_CONFIG, f"{path}: top level is not an object; fix it by hand first")
    data.setdefault("senders", [])
    data.setdefault("domains", [])
    return path, data


@partners.command("list")
@json_option()
@config_option
def partners_list(as_json: bool, config_path: str | None) -> None:
    """Every partner sender and domain with its tier (exit 78: the file is unreadable)."""
    path, data = _partners_file(config_path)
    if as_json:
        doc = {"file": str(path), "senders": data["senders"], "domains": data["domains"]}
        click.echo(json.dumps(doc, indent=2))
        return
    for s in data["senders"]:
        click.echo(f"sender  tier {s.get('tier', 1)}  {s.get('email')}  {s.get('name', '')}")
    for d in data["domains"]:
        entry = d if isinstance(d, dict) else {"domain": d}
        click.echo(
            f"domain  tier {entry.get('tier', 1)}  {entry.get('domain')}  {entry.get('name', '')}"
        )


@partners.command("add")
@click.argument("address")
@click.option("--name", required=True, help="who the sender is (shown in pushes)")
@click.option(
    "--tier",
    type=click.IntRange(1, 9),
    default=1,
    show_default=True,
    help="partner tier (1 most important)",
)
@click.option("--reason", default="", help="why they are a partner (kept in the file)")
@config_option
def partners_add(address: str, name: str, tier: int, reason: str, config_path: str | None) -> None:
    """Add (or update) a sender; the daemon picks it up next cycle."""
    from daemons.email_reactor.rules import parse_partners
    from shared.files import atomic_write_json

    if "@" not in address:
        raise click.BadParameter("must be an email address", param_hint="ADDRESS")
    path, data = _partners_file(config_path)
    senders = [
        s for s in data["senders"] if str(s.get("email", "")).lower() != address.strip().lower()
    ]
    senders.append({"email": address.strip().lower(), "name": name, "tier": tier, "reason": reason})
    data["senders"] = senders
    parse_partners(data, [])  # never write a file the daemon would reject
    atomic_write_json(path, data)
    click.echo(f"added {name} (tier {tier}) to {path}")


@partners.command("remove")
@click.argument("address")
@config_option
def partners_remove(address: str, config_path: str | None) -> None:
    """Remove a sender; exit 2 when it is not in the file."""
    from shared.files import atomic_write_json

    path, data = _partners_file(config_path)
    before = len(data["senders"])
    data["senders"] = [
        s for s in data["senders"] if str(s.get("email", "")).lower() != address.strip().lower()
    ]
    if len(data["senders"]) == before:
        die(ExitCode.NOT_FOUND, f"{address} is not in {path}")
    atomic_write_json(path, data)
    click.echo(f"removed {address} from {path}")


@email.command("hash")
@click.argument("address")
@json_option()
@config_option
def hash_cmd(address: str, as_json: bool, config_path: str | None) -> None:
    """Print ADDRESS as the logs and the audit log's ``sender`` show it (keyed with this
    host's <root>/state/log-hash.key), to grep for it: grep "$(fleet email hash A)" AUDIT."""
    from shared.logging import HASH_KEY_FILE, HashKeyError, hash_email, load_hash_key, use_hash_key

    config = load_config_or_exit(config_path)
    path = config.state_dir / HASH_KEY_FILE
    try:
        key = load_hash_key(path, create=False)
    except HashKeyError as exc:
        die(EX_CONFIG if exc.permanent else ExitCode.FAILURE, f"log-hash key {exc}")
    if key is None:
        die(
            ExitCode.FAILURE,
            f"no log-hash key at {path} yet: no daemon has started with this root, so no log "
            "line holds a keyed hash",
        )
    use_hash_key(key)
    click.echo(json.dumps({"hash": hash_email(address)}) if as_json else hash_email(address))
