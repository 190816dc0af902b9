"""The dispatcher: claim one due delivery, render it, hand it to SMTP, record what happened.

Every message goes through the same short life — `pending → sending → sent`, or back to
`pending` later for a transient failure, or `failed` — and the claim is committed before
the SMTP transaction starts, so a crash can leave at most one message in doubt. That row
turns `unknown` when its lease runs out and is never resent automatically: a lead may miss
an email after a crash, but never gets one twice.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email.utils import parseaddr

from .links import LinkSigner
from .planner import (
    Attempt,
    LeadState,
    lead_zone,
    next_opening,
    next_step,
    plan_fingerprint,
    plan_key,
)
from .ratelimit import RateLimiter
from .render import LeadView, Renderer
from .schedule import Schedule
from .store import Claim, Lead, PlannedDelivery, Store
from .transport import (
    AccountRefused,
    DeliveryFailure,
    Envelope,
    RecipientRefused,
    ServerUnavailable,
    SmtpTransport,
    TransientFailure,
)

log = logging.getLogger("campaign.dispatch")
Clock = Callable[[], datetime]
DEFAULT_LEASE = timedelta(minutes=10)


@dataclass
class RunReport:
    """What one run did, for the command line, the scheduler's log and the tests."""

    sent: int = 0
    retried: int = 0
    failed: int = 0
    bounced: int = 0
    cancelled: int = 0
    in_doubt: int = 0
    replanned: int = 0
    stopped: str | None = None
    paused: str | None = None  # a rate limit ended the run early; not an error
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.stopped is None


def backoff(attempt: int, schedule: Schedule, rng: random.Random) -> timedelta:
    """Exponential backoff with ±20 % jitter, so retries from many workers do not align.

    The jitter never takes a delay past `max_delay` (the operator's promise of how long a
    message may wait between attempts); at the cap it spreads retries just below it instead.
    """
    retry = schedule.retry
    base = min(retry.first_delay * (2 ** max(attempt - 1, 0)), retry.max_delay)
    jittered = base * rng.uniform(0.8, 1.2)
    return jittered if jittered <= retry.max_delay else retry.max_delay * rng.uniform(0.8, 1.0)


def _state(
    enrolled_at: datetime,
    lead: Lead | None,
    rows: Iterable[tuple[str, str, datetime]],
    exclude: str | None,
) -> LeadState:
    """The planner's view of a lead from what the store read (`exclude`: the step in flight)."""
    history = tuple(Attempt(step, status, at) for step, status, at in rows if step != exclude)
    return LeadState(
        enrolled_at, lead.timezone if lead else None, lead.status if lead else "active", history
    )


class Dispatcher:
    def __init__(
        self,
        store: Store,
        renderer: Renderer,
        signer: LinkSigner,
        transport: SmtpTransport,
        clock: Clock,
        *,
        worker: str = "worker",
        lease: timedelta = DEFAULT_LEASE,
        rng: random.Random | None = None,
        limiter: RateLimiter | None = None,
    ):
        self.store = store
        self.renderer = renderer
        self.schedule = renderer.schedule
        self.campaign_id = self.schedule.campaign.id
        self.signer = signer
        self.transport = transport
        self.clock = clock
        self.worker = worker
        self.lease = lease
        self.rng = rng or random.Random()
        self.limiter = limiter or RateLimiter(store)
        self.sender = parseaddr(self.schedule.sender.from_)[1]

    # -- planning --------------------------------------------------------------------------

    def lead_state(self, lead_id: int, exclude: str | None = None) -> LeadState | None:
        found = self.store.enrollment(lead_id, self.campaign_id)
        if found is None:
            return None
        return _state(found[0], self.store.lead(lead_id), found[1], exclude)

    def _following(self, state: LeadState) -> PlannedDelivery | None:
        upcoming = next_step(self.schedule, state)
        return PlannedDelivery(upcoming.step.id, upcoming.due_at) if upcoming else None

    def replan_lead(self, lead_id: int, now: datetime) -> None:
        state = self.lead_state(lead_id)
        if state is not None:
            self.store.replace_plan(lead_id, self.campaign_id, self._following(state), now)

    def sync(self, now: datetime, report: RunReport) -> None:
        """Settle expired claims and, after a schedule edit, replan every lead's next step."""
        for lead_id, campaign_id in self.store.expire_leases(now, self.lease):
            report.in_doubt += 1
            log.warning(
                "outcome=unknown lead=%s campaign=%s reason=lease-expired", lead_id, campaign_id
            )
            if campaign_id == self.campaign_id:
                self.replan_lead(lead_id, now)
        key = plan_key(self.schedule)
        fingerprint = plan_fingerprint(self.schedule)
        if self.store.get_meta(key) == fingerprint:
            return
        for batch in self.store.enrolled_leads(self.campaign_id):
            for lead_id in batch:
                self.replan_lead(lead_id, now)
                report.replanned += 1
        self.store.set_meta(key, fingerprint)

    # -- sending ---------------------------------------------------------------------------

    def run_once(
        self, max_messages: int | None = None, stop: Callable[[], bool] | None = None
    ) -> RunReport:
        """Send everything due at this moment, each lead at most one step, then return."""
        report = RunReport()
        run_now = self.clock()
        self.sync(run_now, report)
        self.drain(run_now, report, max_messages, stop)
        return report

    def drain(
        self,
        run_now: datetime,
        report: RunReport,
        max_messages: int | None = None,
        stop: Callable[[], bool] | None = None,
    ) -> None:
        """Claim and send what is due at `run_now` until none is left or something says stop.

        Separate from `run_once` so that several connections (campaign.pool) can drain the
        same queue after one `sync`.
        """
        while max_messages is None or report.sent + report.failed < max_messages:
            if stop is not None and stop():
                break
            report.paused = self.limiter.acquire(self.schedule.rate_limit, self.clock())
            if report.paused:
                log.info("paused: %s", report.paused)
                break
            claim = self.store.claim_next(self.campaign_id, run_now, self.worker, self.clock())
            if claim is None:
                break
            if not self._deliver(claim, report):
                break

    def _deliver(self, claim: Claim, report: RunReport) -> bool:
        """Send one claimed delivery. Returns False when the whole batch must stop."""
        started = time.perf_counter()
        lead = claim.lead  # read with the claim: no extra query per message
        if lead is None or lead.status != "active" or self.schedule.step(claim.step_id) is None:
            reason = f"lead {lead.status}" if lead else "lead deleted"
            if lead is not None and self.schedule.step(claim.step_id) is None:
                reason = "step removed from the schedule"
            self.store.cancel(claim, reason, self.clock())
            report.cancelled += 1
            self._log(claim, "cancelled", None, started, reason)
            if lead is not None and lead.status == "active":
                # A worker on an older schedule planned a step since removed: plan the real
                # next one, or the lead would wait forever for an email that never comes.
                self.replan_lead(lead.id, self.clock())
            return True
        now = self.clock()
        domain = self.renderer.sender_domain
        message_id = f"<d{claim.delivery_id}.{self.rng.getrandbits(48):012x}@{domain}>"
        try:
            email = self.renderer.render(
                claim.step_id,
                LeadView(lead.email, lead.first_name, lead.timezone or "", lead.attributes),
                self.signer.links(lead.id, self.campaign_id, claim.step_id),
                now=now,
                message_id=message_id,
            )
            data, utf8 = email.message.data, email.message.utf8
        except (ValueError, TypeError, LookupError) as exc:
            error = f"cannot build the message: {exc}"
            self.store.record_failed(claim, error, None, now, None)
            report.failed += 1
            report.errors.append(f"{lead.email}: {error}")
            self._log(claim, "failed", None, started, error)
            return True
        try:
            # Last look before the point of no return: an unsubscribe that arrived after the
            # claim is still honoured.
            if self.store.lead_status(lead.id) != "active":
                self.store.cancel(claim, "lead left the series before sending", now)
                report.cancelled += 1
                self._log(claim, "cancelled", None, started, "lead left the series")
                return True
            self.transport.send(Envelope(self.sender, lead.email, data, utf8))
        except AccountRefused as exc:
            self.store.release(claim, str(exc), self.clock())
            report.stopped = f"the SMTP server refused the account: {exc}"
            report.errors.append(report.stopped)
            self._log(claim, "stopped", exc.code, started, str(exc))
            return False
        except RecipientRefused as exc:
            self._bounce(claim, exc, report, started)
            return True
        except TransientFailure as exc:
            self._retry_or_fail(claim, exc, lead.timezone, report, started)
            if isinstance(exc, ServerUnavailable):
                # Every other message would meet the same closed door and spend an attempt.
                report.stopped = f"cannot reach the SMTP server, the rest waits: {exc}"
                report.errors.append(report.stopped)
                return False
            return True
        sent_at = self.clock()
        state = (
            _state(claim.enrolled_at, lead, claim.history, claim.step_id)
            if claim.enrolled_at is not None
            else None
        )
        following = self._following(state.with_sent(claim.step_id, sent_at)) if state else None
        self.store.record_sent(claim, message_id, sent_at, following)
        report.sent += 1
        self._log(claim, "sent", 250, started)
        return True

    def _bounce(
        self, claim: Claim, exc: DeliveryFailure, report: RunReport, started: float
    ) -> None:
        now = self.clock()
        self.store.record_failed(claim, str(exc), exc.code, now, None)
        self.store.set_lead_status(claim.lead_id, "bounced", str(exc), now)
        report.bounced += 1
        report.failed += 1
        self._log(claim, "bounced", exc.code, started, str(exc))

    def _retry_or_fail(
        self,
        claim: Claim,
        exc: TransientFailure,
        timezone: str | None,
        report: RunReport,
        started: float,
    ) -> None:
        now = self.clock()
        if claim.attempts < self.schedule.retry.attempts:
            # A retry is still an email arriving: it waits for the lead's send window too.
            retry_at = next_opening(
                now + backoff(claim.attempts, self.schedule, self.rng),
                self.schedule.send_window,
                lead_zone(self.schedule, timezone),
            )
            self.store.record_retry(claim, str(exc), exc.code, retry_at, now)
            report.retried += 1
            self._log(claim, "retry", exc.code, started, str(exc))
            return
        state = self.lead_state(claim.lead_id, exclude=claim.step_id)
        following = None
        if state is not None:
            gave_up = LeadState(
                state.enrolled_at,
                state.timezone,
                state.status,
                (*state.history, Attempt(claim.step_id, "failed", now)),
            )
            following = self._following(gave_up)
        self.store.record_failed(
            claim, f"gave up after {claim.attempts} attempts: {exc}", exc.code, now, following
        )
        report.failed += 1
        self._log(claim, "failed", exc.code, started, str(exc))

    def _log(
        self, claim: Claim, outcome: str, code: int | None, started: float, error: str | None = None
    ) -> None:
        elapsed = (time.perf_counter() - started) * 1000
        line = (
            f"outcome={outcome} delivery={claim.delivery_id} lead={claim.lead_id} "
            f"step={claim.step_id} attempt={claim.attempts} code={code} ms={elapsed:.1f}"
        )
        if error:
            line += f" error={error!r}"
        level = {"sent": logging.INFO, "cancelled": logging.INFO, "stopped": logging.ERROR}
        log.log(level.get(outcome, logging.WARNING), line)
