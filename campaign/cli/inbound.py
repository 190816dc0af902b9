"""`inbound receive`, `serve`, `poll` and `list`: mail that comes back (campaign.inbound).

`receive` is made for an MTA's pipe transport (Postfix `pipe`, Exim, procmail), so its exit
code follows sysexits, which MTAs understand: 0 when the message was recorded (whatever it
was, matched or not), 65 (EX_DATAERR) for input that is no email message, which the MTA
returns to its sender, and 75 (EX_TEMPFAIL) when our side failed (the database, the schedule,
a setting), so the MTA keeps the message and tries again later. Nothing changes in either.
"""

from __future__ import annotations

import signal
import sys
import threading

import click
from rich.table import Table

from campaign.cli.app import (
    AppContext,
    command,
    console,
    errors,
    log_to_stderr,
    main,
    open_store,
)
from campaign.config import settings
from campaign.config.schedule import ScheduleError
from campaign.config.settings import SettingsError
from campaign.inbound.classify import Kind
from campaign.inbound.poll import MAX_PER_POLL, PollError, poll
from campaign.inbound.process import MAX_MESSAGE_BYTES, InboundProcessor, NotAMessage, Received
from campaign.inbound.server import InboundServer
from campaign.model import utc_now
from campaign.rendering.links import LinkSigner
from campaign.store import DatabaseError, Store, StoreError

EX_DATAERR = 65
EX_TEMPFAIL = 75


@main.group("inbound")
def inbound_group() -> None:
    """Mail that comes back: bounces, complaints, auto-replies and replies."""


@command(inbound_group, "receive")
@click.option(
    "--rcpt",
    default=None,
    metavar="ADDRESS",
    help="The envelope recipient, when the MTA passes it (Postfix: ${original_recipient}).",
)
def receive(app: AppContext, rcpt: str | None) -> None:
    """Read one message on standard input, record it and act on it."""
    raw = sys.stdin.buffer.read(MAX_MESSAGE_BYTES + 1)
    try:
        received = _receive(app, raw, rcpt)
    except NotAMessage as exc:
        errors.print(f"[bold red]not processed:[/] {exc}", highlight=False)
        sys.exit(EX_DATAERR)
    except (ScheduleError, SettingsError, DatabaseError, StoreError) as exc:
        # Our side failed, not the message: the MTA keeps it and delivers it again later.
        what = getattr(exc, "orig", None) or exc
        errors.print(
            f"[bold red]not processed, try again later:[/] {what}; nothing was recorded",
            highlight=False,
        )
        sys.exit(EX_TEMPFAIL)
    console.print(received.line(), markup=False, highlight=False)


def _processor(app: AppContext, store: Store) -> InboundProcessor:
    def signer() -> LinkSigner:
        return LinkSigner(settings.base_url(), settings.secret_key(required=True))

    return InboundProcessor.for_schedule(store, app.load().schedule, signer, utc_now)


def _receive(app: AppContext, raw: bytes, rcpt: str | None) -> Received:
    store = open_store(app)
    try:
        return _processor(app, store).process(raw, rcpt)
    finally:
        store.close()


@command(inbound_group, "serve")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=click.IntRange(1, 65535), default=2525, show_default=True)
def serve(app: AppContext, host: str, port: int) -> None:
    """An SMTP server for the bounce domain's MX (behind the front MTA), until SIGTERM."""
    log_to_stderr()
    store = open_store(app)
    try:
        with InboundServer(_processor(app, store), host, port):
            console.print(f"receiving inbound mail on {host}:{port} (Ctrl-C to stop)")
            stop = threading.Event()
            for sig in (signal.SIGINT, signal.SIGTERM):
                signal.signal(sig, lambda *_: stop.set())
            stop.wait()
    finally:
        store.close()


@command(inbound_group, "poll")
@click.option(
    "--limit",
    type=click.IntRange(1, MAX_PER_POLL),
    default=MAX_PER_POLL,
    show_default=True,
    help="At most this many messages; the rest waits for the next poll.",
)
def poll_mailbox(app: AppContext, limit: int) -> None:
    """Read the bounce mailbox over IMAP (CAMPAIGN_IMAP_*), process each new message and
    move it to the done folder. Safe to run from cron as often as you like."""
    imap = settings.ImapSettings.from_env()
    if imap is None:
        errors.print(
            "[bold red]no mailbox to poll:[/] set CAMPAIGN_IMAP_HOST, CAMPAIGN_IMAP_USER and "
            "CAMPAIGN_IMAP_PASSWORD (README: Mail that comes back)",
            highlight=False,
        )
        sys.exit(2)
    store = open_store(app)
    try:
        report = poll(imap, _processor(app, store), limit)
    except PollError as exc:
        errors.print(f"[bold red]poll failed:[/] {exc}", highlight=False)
        sys.exit(1)
    except (DatabaseError, StoreError) as exc:
        what = getattr(exc, "orig", None) or exc
        errors.print(
            f"[bold red]poll stopped:[/] {what}; the message being processed stays in the "
            "mailbox for the next poll",
            highlight=False,
        )
        sys.exit(1)
    finally:
        store.close()
    for received in report.received:
        console.print(received.line(), markup=False, highlight=False)
    for rejected in report.rejected:
        errors.print(f"not an email message, moved to {imap.done_folder}: {rejected}")
    left = f", {report.left} left for the next poll" if report.left else ""
    console.print(
        f"{len(report.received)} message(s) processed, {len(report.rejected)} rejected{left}"
    )


@command(inbound_group, "list")
@click.option("--limit", type=click.IntRange(1, 10_000), default=50, show_default=True)
@click.option("--kind", type=click.Choice([k.value for k in Kind]), default=None)
def list_inbound(app: AppContext, limit: int, kind: str | None) -> None:
    """The most recent inbound messages: what each was, whose, and what it did."""
    store = open_store(app)
    try:
        rows = store.inbound.recent(limit, kind)
    finally:
        store.close()
    table = Table("received (UTC)", "kind", "lead", "step", "from", "outcome", "reason")
    table.columns[1].no_wrap = True
    for row in rows:
        table.add_row(
            f"{row.received_at:%Y-%m-%d %H:%M}",
            row.kind,
            row.email or "-",
            row.step_id or "-",
            row.sender[:30],
            row.outcome,
            row.reason[:60],
        )
    console.print(table)
    console.print(f"{len(rows)} message(s)")
