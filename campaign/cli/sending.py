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
from campaign.model import utc_now
from campaign.sending.dispatcher import RunReport
from campaign.sending.runner import Engine, run_forever


def print_report(report: RunReport) -> None:
    console.print(
        f"sent {report.sent}, retrying {report.retried}, failed {report.failed} "
        f"(bounced {report.bounced}), cancelled {report.cancelled}, "
        f"in doubt {report.in_doubt}"
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
    store = open_store(app)
    engine = Engine.from_env(app.schedule_path, store, (lambda: at) if at else utc_now)
    report = engine.send_due(max_messages)
    print_report(report)
    if report.stopped:
        errors.print(f"[bold red]stopped:[/] {report.stopped}", highlight=False)
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
    log_to_stderr()
    store = open_store(app)
    engine = Engine.from_env(app.schedule_path, store)

    def tick(stop: Callable[[], bool]) -> None:
        report = engine.send_due(stop=stop)
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
