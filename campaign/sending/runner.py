"""The unattended runner: one APScheduler interval job per process, state in the database.

APScheduler 3.x cannot share a job store between processes, and its restarts drop or repeat
missed runs depending on `misfire_grace_time` and `coalesce`. So the scheduler keeps no
state at all: its single job asks the database what is due each tick, and the database
arbitrates between any number of processes.
"""

from __future__ import annotations

import logging
import os
import random
import signal
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.blocking import BlockingScheduler

from campaign.config import settings
from campaign.config.schedule import LoadedSchedule, ScheduleError
from campaign.config.settings import SmtpSettings
from campaign.model import Clock, utc_now
from campaign.rendering.dkim import DkimSigner, dkim_signer
from campaign.rendering.links import LinkSigner
from campaign.rendering.renderer import Renderer, TemplateProblem
from campaign.rendering.series import CompiledSeries
from campaign.sending.breaker import Breaker
from campaign.sending.dispatcher import Dispatcher, RunReport, new_run_id
from campaign.sending.pool import send_pooled
from campaign.sending.ratelimit import RateLimiter
from campaign.sending.transport import SmtpTransport
from campaign.store import Store

log = logging.getLogger("campaign.sending.runner")


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass
class Engine:
    """Wires a schedule file to a store and an SMTP server; rebuilt when the files change."""

    schedule_path: Path
    store: Store
    smtp: SmtpSettings
    signer: LinkSigner
    clock: Clock = utc_now
    worker: str = field(default_factory=worker_name)
    dkim: DkimSigner | None = None  # signs every message it sends, confirmations included
    timer: Callable[[], float] = time.monotonic  # how long a run took, for monitoring
    _series: CompiledSeries | None = None
    _limiter: RateLimiter | None = None  # one per process: its connections take turns
    _run_id: str | None = None  # the current run's, shared by its connections
    _breaker: Breaker | None = None  # likewise

    @classmethod
    def from_env(cls, schedule_path: Path, store: Store, clock: Clock = utc_now) -> Engine:
        """The engine as deployed: SMTP and links from the environment. Its links must stay
        valid after a restart, so a missing signing key stops it instead of a throwaway one."""
        return cls(
            schedule_path,
            store,
            SmtpSettings.from_env(),
            LinkSigner(settings.base_url(), settings.secret_key(required=True)),
            clock=clock,
            dkim=dkim_signer(),
        )

    @property
    def series(self) -> CompiledSeries:
        """The schedule and templates, compiled once per change of their files."""
        if self._series is None:
            self._series = CompiledSeries(self.schedule_path, self._compile)
        return self._series

    def _compile(self, loaded: LoadedSchedule) -> Renderer:
        renderer = Renderer(loaded, self.dkim)
        renderer.compile_all()
        return renderer

    def renderer(self) -> Renderer:
        """The current schedule and templates, compiled; raises if either is invalid.

        Nothing is sent from an invalid schedule: a bad edit stops sending until it is fixed,
        and the previous version is not silently kept either.
        """
        return self.series.current()

    def serving_renderer(self) -> Renderer:
        """What the web service answers with: the last version that compiled, at once. An edit
        is compiled in the background, and a broken one is logged while links keep working
        (a click on last week's email must not wait for, or fail on, this week's typo)."""
        return self.series.last_good()

    def dispatcher(self, transport: SmtpTransport) -> Dispatcher:
        if self._limiter is None:
            self._limiter = RateLimiter(self.store)
        return Dispatcher(
            self.store,
            self.renderer(),
            self.signer,
            transport,
            self.clock,
            worker=self.worker,
            limiter=self._limiter,
            run_id=self._run_id,
            breaker=self._breaker,
        )

    def send_due(
        self, max_messages: int | None = None, stop: Callable[[], bool] | None = None
    ) -> RunReport:
        """One pass over everything due now. Schedule or template errors send nothing."""
        try:
            renderer = self.renderer()
        except (ScheduleError, TemplateProblem) as exc:
            report = RunReport(stopped=f"nothing sent, the schedule is invalid:\n{exc}")
            log.error(report.stopped)
            return report
        per_connection = renderer.schedule.rate_limit.per_connection
        started = self.timer()
        self._run_id = new_run_id(self.clock(), random.Random())
        self._breaker = Breaker(self.store)
        if self.smtp.connections > 1:
            report = send_pooled(self.dispatcher, self.smtp, per_connection, max_messages, stop)
        else:
            with SmtpTransport(self.smtp, per_connection) as transport:
                report = self.dispatcher(transport).run_once(max_messages, stop)
        if report.stopped:
            log.error("run stopped: %s", report.stopped)
        # Stopped runs count too: a run that reached the relay's failure still ran (the
        # breaker tells that story); only a run that never started (invalid schedule) does not.
        self.store.health.record_run(self.clock(), self.timer() - started)
        return report


def run_forever(
    tick: Callable[[Callable[[], bool]], object], interval: float, max_ticks: int | None = None
) -> int:
    """Run `tick` every `interval` seconds until SIGINT/SIGTERM (or `max_ticks`); return ticks.

    `tick` gets a function saying whether to stop, which the dispatcher checks between
    messages, so a stop request ends the run after the message in flight.
    """
    scheduler = BlockingScheduler(executors={"default": ThreadPoolExecutor(1)}, timezone=UTC)
    done = threading.Event()
    count = 0

    def job() -> None:
        nonlocal count
        try:
            tick(done.is_set)
        except Exception:  # a failing tick must not kill the runner; the next tick retries
            log.exception("tick failed")
        count += 1
        if max_ticks is not None and count >= max_ticks:
            done.set()
            scheduler.shutdown(wait=False)

    def stop(signum: int, _frame: object) -> None:
        log.info("received %s, stopping after the current message", signal.Signals(signum).name)
        done.set()
        scheduler.shutdown(wait=False)

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    scheduler.add_job(
        job,
        "interval",
        seconds=interval,
        id="send-due",
        max_instances=1,
        coalesce=True,
        misfire_grace_time=max(int(interval) * 10, 60),
        next_run_time=datetime.now(UTC),
    )
    try:
        scheduler.start()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return count
