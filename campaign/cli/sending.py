"""`send-due` and `run`: sending what is due, once or unattended."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from datetime import datetime

import click

from campaign.cli.app import (
    AppContext,
    command,
    console,
    errors,
    log_to_stderr,
    main,
    now_option,
    open_store,
)
from campaign.config import settings
from campaign.model import utc_now
from campaign.sending.dispatcher import RunReport
from campaign.sending.runner import Engine, run_forever


def nothing_built(report: RunReport) -> str | None:
    """Why a run that tried messages yet could build none of them is a failure, not a quiet
    success: something every message shares (a template, a setting) is broken."""
    if not report.unbuilt or report.sent or report.retried or report.in_doubt:
        return None
    return (
        f"no message could be built ({report.unbuilt} tried, none sent): fix the template "
        "or the leads' data named above; those steps are not retried by themselves"
    )


def warn_local_links() -> None:
    """Sending with the default base URL mails links (unsubscribe, clicks) that point at
    this machine: fine for a demo, useless to leads, so say so before sending."""
    base = settings.base_url()
    if base.rstrip("/") == settings.DEFAULT_BASE_URL:
        errors.print(
            f"[yellow]warning:[/] CAMPAIGN_BASE_URL is the default {base}: the unsubscribe and "
            "click links in these emails point at this machine and leads cannot open them; "
            "set it to the web service's public address (https://...)",
            highlight=False,
            soft_wrap=True,
        )


def print_report(report: RunReport) -> None:
    console.print(
        f"sent {report.sent}, retrying {report.retried}, failed {report.failed} "
        f"(bounced {report.bounced}), cancelled {report.cancelled}, "
        f"in doubt {report.in_doubt}"
        + (f", skipped {report.skipped}" if report.skipped else "")
        + (f", held by the frequency cap {report.capped}" if report.capped else "")
    )
    if report.paused:
        console.print(f"paused: {report.paused}", markup=False, highlight=False)
    for error in report.errors[:50]:
        errors.print(f"  {error}", markup=False, highlight=False)


@command(main, "send-due")
@now_option("Send what is due at this moment, replaying a campaign's calendar")
@click.option("--max", "max_messages", type=int, default=None, help="Stop after this many.")
def send_due(app: AppContext, at: datetime | None, max_messages: int | None) -> None:
    """Send everything due now, once, and exit (non-zero if the run had to stop)."""
    app.renderer()
    warn_local_links()
    store = open_store(app)
    engine = Engine.from_env(app.schedule_path, store, (lambda: at) if at else utc_now)
    report = engine.send_due(max_messages)
    print_report(report)
    if report.stopped:
        errors.print(f"[bold red]stopped:[/] {report.stopped}", highlight=False)
        sys.exit(1)
    if reason := nothing_built(report):
        errors.print(f"[bold red]failed:[/] {reason}", highlight=False)
        sys.exit(1)


@command(main, "run")
@click.option(
    "--every",
    "interval",
    type=float,
    default=60.0,
    show_default=True,
    help="Seconds between ticks.",
)
@click.option("--ticks", type=int, default=None, help="Stop after this many ticks.")
def run_scheduler(app: AppContext, interval: float, ticks: int | None) -> None:
    """Run unattended: send what is due every tick until SIGINT/SIGTERM."""
    app.renderer()
    warn_local_links()
    log_to_stderr()
    store = open_store(app)
    engine = Engine.from_env(app.schedule_path, store)

    def tick(stop: Callable[[], bool]) -> None:
        report = engine.send_due(stop=stop)
        if reason := nothing_built(report):
            logging.getLogger("campaign.sending.runner").error("%s", reason)
        if report.sent or report.failed or report.retried or report.stopped:
            logging.getLogger("campaign.sending.runner").info(
                "tick: sent=%d retry=%d failed=%d stopped=%s",
                report.sent,
                report.retried,
                report.failed,
                report.stopped,
            )

    count = run_forever(tick, interval, ticks)
    console.print(f"stopped after {count} tick(s)")
