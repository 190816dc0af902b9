"""Several SMTP connections at once in one worker process (`CAMPAIGN_SMTP_CONNECTIONS`).

A message spends most of its life waiting for the SMTP server's replies (MAIL, RCPT, DATA,
the final dot), and that wait releases the GIL. So N sender threads, each with its own SMTP
connection, keep N conversations going while the others render and record. Each thread
reserves its own deliveries from the store exactly as separate processes do — a run of rows
at a time, each message started in its own committed transaction, at most one message per
connection in doubt — so the threads share only the store's connection pool and the
compiled templates. Rate limits are kept in the database, for every thread and process.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field, fields

from campaign.config.settings import SmtpSettings
from campaign.sending.dispatcher import Dispatcher, RunReport
from campaign.sending.transport import SmtpTransport


@dataclass
class Quota:
    """`max_messages` across all connections: each claim takes one unit first."""

    left: int | None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def take(self) -> bool:
        with self.lock:
            if self.left is None:
                return True
            if self.left <= 0:
                return False
            self.left -= 1
            return True


def merge(reports: list[RunReport]) -> RunReport:
    """One report for the run: counts add up, the first stop or pause reason is kept."""
    total = RunReport()
    for report in reports:
        for item in fields(RunReport):
            mine, theirs = getattr(total, item.name), getattr(report, item.name)
            if isinstance(theirs, list):
                mine.extend(theirs)
            elif isinstance(theirs, int):
                setattr(total, item.name, mine + theirs)
            elif mine is None:
                setattr(total, item.name, theirs)
    return total


def send_pooled(
    make_dispatcher: Callable[[SmtpTransport], Dispatcher],
    smtp: SmtpSettings,
    per_connection: int,
    max_messages: int | None = None,
    stop: Callable[[], bool] | None = None,
) -> RunReport:
    """Sync once, then drain the queue over `smtp.connections` connections in parallel.

    A stop, a pause (rate limit) or an account refusal on any connection stops them all
    after their message in flight; an unexpected error is raised once every thread is done.
    `max_messages` bounds the claims, so a retried message counts against it too.
    """
    transports = [SmtpTransport(smtp, per_connection) for _ in range(smtp.connections)]
    dispatchers = [make_dispatcher(transport) for transport in transports]
    first = RunReport(run_id=dispatchers[0].run_id)
    run_now = dispatchers[0].clock()
    dispatchers[0].sync(run_now, first)
    if dispatchers[0].held(run_now, first):  # the relay failed recently: leave it alone
        return first
    halt = threading.Event()
    quota = Quota(max_messages)
    reports = [RunReport() for _ in dispatchers]
    failures: list[BaseException] = []

    def should_stop() -> bool:
        return halt.is_set() or (stop is not None and stop()) or not quota.take()

    def work(dispatcher: Dispatcher, report: RunReport) -> None:
        try:
            dispatcher.drain(run_now, report, None, should_stop)
        except BaseException as exc:  # re-raised in the caller's thread below
            failures.append(exc)
        finally:
            if report.stopped or report.paused or failures:
                halt.set()
            dispatcher.transport.close()

    threads = [
        threading.Thread(target=work, args=pair, name=f"smtp-{n}", daemon=True)
        for n, pair in enumerate(zip(dispatchers, reports, strict=True))
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        raise failures[0]
    return merge([first, *reports])
