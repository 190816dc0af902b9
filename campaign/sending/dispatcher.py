"""The dispatcher: take due deliveries, render each, hand it to SMTP, record what happened.

Every message goes through the same short life — `pending → claimed → sending → sent`, or
back to `pending` later for a transient failure, or `failed`. A connection reserves a short
run of rows (`claimed`) in one transaction, then starts them one by one: a row becomes
`sending`, committed, before its SMTP transaction, and the next row starts in the same
transaction that records the previous one as sent. So a crash leaves at most one message
per connection in doubt. That row turns `unknown` when its lease runs out and is never
resent automatically: a lead may miss an email after a crash, but never gets one twice.
The reserved rows behind it were never started and go back to the queue.
"""

from __future__ import annotations

import enum
import logging
import random
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from email.utils import parseaddr
from functools import partial

from campaign.config.schedule import Schedule, format_delay
from campaign.inbound.verp import ReturnPath
from campaign.model import (
    CONFIRM_STEP,
    Attempt,
    Claim,
    Clock,
    DeliveryStatus,
    Lead,
    LeadState,
    LeadStatus,
    PlannedDelivery,
    Sent,
    Start,
)
from campaign.planner import (
    MAILED,
    attempted,
    choose_variant,
    closed_days,
    lead_zone,
    next_delivery,
    next_opening,
    place,
    plan_fingerprint,
    plan_key,
    skip_reason,
)
from campaign.rendering.links import LinkSigner
from campaign.rendering.renderer import LeadView, Renderer, TemplateProblem
from campaign.sending.breaker import Breaker
from campaign.sending.ratelimit import RateLimiter
from campaign.sending.streaks import IN_DOUBT_STREAK, SAME_REFUSAL_STREAK, Streaks
from campaign.sending.transport import (
    AccountRefused,
    DeliveryFailure,
    Envelope,
    InDoubt,
    RecipientRefused,
    ServerUnavailable,
    SmtpTransport,
    TransientFailure,
    Unsupported,
)
from campaign.store import DatabaseError, Store
from campaign.store.queue import Cap, Plan

log = logging.getLogger("campaign.sending.dispatcher")
DEFAULT_LEASE = timedelta(minutes=10)
# Rows a connection takes from the queue in one transaction: enough to pay for the reads
# many times over, few enough that a stopped run hands little back.
RESERVATION = 16
STEP_REMOVED = "step removed from the schedule"


class Outcome(enum.StrEnum):
    """What one attempt came to, as its log line says it."""

    SENT = "sent"
    RETRY = "retry"
    FAILED = "failed"
    BOUNCED = "bounced"
    UNKNOWN = "unknown"
    CANCELLED = "cancelled"
    SKIPPED = "skipped"
    CAPPED = "capped"
    STOPPED = "stopped"


_LOG_LEVELS = {
    Outcome.SENT: logging.INFO,
    Outcome.CANCELLED: logging.INFO,
    Outcome.SKIPPED: logging.INFO,
    Outcome.CAPPED: logging.INFO,
    Outcome.STOPPED: logging.ERROR,
}


@dataclass(frozen=True)
class Built:
    """A message ready to hand to SMTP."""

    data: bytes
    utf8: bool  # needs SMTPUTF8
    variant: int  # which of the step's subjects it carries


@dataclass(frozen=True)
class Unsendable:
    """Why a reserved row ends without a message: its step was removed (`cancelled`), its
    condition is false (`skipped`), or this lead's data breaks the template (`failed`); but
    for a removed step, the series goes on at once."""

    outcome: DeliveryStatus
    reason: str


@dataclass
class RunReport:
    """What one run did, for the command line, the scheduler's log and the tests."""

    sent: int = 0
    retried: int = 0
    failed: int = 0
    bounced: int = 0
    cancelled: int = 0
    skipped: int = 0  # their condition (`if:`) was false when they fell due
    capped: int = 0  # held back by the frequency cap: back in the queue for later, not lost
    in_doubt: int = 0
    replanned: int = 0
    unbuilt: int = 0  # of `failed`: no message could be built (the lead's data, a template)
    stopped: str | None = None
    # A rate limit ended the run early, or the series is paused (`series pause`); not an error.
    paused: str | None = None
    errors: list[str] = field(default_factory=list)
    run_id: str | None = None  # tags the leads this run bounced, to reactivate them together

    @property
    def ok(self) -> bool:
        return self.stopped is None


def new_run_id(now: datetime, rng: random.Random) -> str:
    """A short name for one run: its start and a random part, as operators will type it."""
    return f"{now.astimezone(UTC):%Y%m%dT%H%M%SZ}-{rng.getrandbits(24):06x}"


def bounce_tag(run_id: str) -> str:
    """What a bounced lead's status reason ends with, naming the run that bounced it."""
    return f"(run {run_id})"


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
    clicks: tuple[tuple[str, str], ...] = (),
) -> LeadState:
    """The planner's view of a lead from what the store read (`exclude`: the step in flight).
    Its mailbox is this series' emails only (the confirmation email answers a signup and is
    not counted): other series' are counted at the last look (`Queue.start_capped`), which
    moves an email the cap holds back."""
    history = tuple(
        Attempt(step, DeliveryStatus(status), at) for step, status, at in rows if step != exclude
    )
    mailed = tuple(a.at for a in history if a.status in MAILED and a.step_id != CONFIRM_STEP)
    if lead is None:
        return LeadState(enrolled_at, history=history, mailed=mailed)
    status = LeadStatus(lead.status)
    return LeadState(
        enrolled_at, lead.timezone, status, history, clicks, lead.attributes, mailed=mailed
    )


def lead_plan(schedule: Schedule, lead: Lead | None, status: LeadStatus | None = None) -> Plan:
    """What the store calls to plan a lead's next step from its enrollment and history,
    inside the transaction that replaces the lead's queued step (`status`: as if the lead
    had this status, for a change the same transaction makes)."""

    def plan(
        enrolled_at: datetime, history: Iterable[tuple[str, str, datetime]]
    ) -> PlannedDelivery | None:
        state = _state(enrolled_at, lead, history, None)
        if status is not None:
            state = replace(state, status=status)
        return next_delivery(schedule, state)

    return plan


def next_after(
    schedule: Schedule, claim: Claim, outcome: DeliveryStatus, at: datetime
) -> PlannedDelivery | None:
    """The lead's next step once this one ended as `outcome`, planned from what the
    reservation read: whether sent, failed or in doubt, the series goes on. After the
    confirmation email nothing is planned: the series starts when the lead confirms."""
    if claim.enrolled_at is None or claim.step_id == CONFIRM_STEP:
        return None
    state = _state(claim.enrolled_at, claim.lead, claim.history, claim.step_id)
    return next_delivery(schedule, attempted(state, claim.step_id, outcome, at))


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
        reservation: int = RESERVATION,
        run_id: str | None = None,
        breaker: Breaker | None = None,
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
        # With `sender.return_path`, MAIL FROM names the delivery (VERP) so bounces find it.
        return_path = self.schedule.sender.return_path
        self.return_path = ReturnPath.of(return_path, signer) if return_path else None
        self.reservation = reservation
        self._reserved: deque[Claim] = deque()  # this connection's, in sending order
        self._unrecorded: Sent | None = None  # accepted by SMTP, recorded with the next start
        self._streaks = Streaks()
        self.run_id = run_id or new_run_id(clock(), random.Random())
        self.breaker = breaker or Breaker(store)
        limits = self.schedule.rate_limit
        self._paced = any((limits.per_second, limits.per_minute, limits.per_hour))
        # Only a series with conditions needs the links each lead opened, read as reserved.
        self._judging = any(step.condition for step in self.schedule.steps)

    # -- planning --------------------------------------------------------------------------

    def replan_lead(self, lead_id: int, now: datetime) -> None:
        plan = lead_plan(self.schedule, self.store.leads.lead(lead_id))
        self.store.queue.replace_plan(lead_id, self.campaign_id, plan, now)

    def sync(self, now: datetime, report: RunReport) -> None:
        """Settle expired claims and, after a schedule edit, replan every lead's next step."""
        for lead_id, campaign_id in self.store.queue.expire_leases(now, self.lease):
            report.in_doubt += 1
            log.warning(
                "outcome=unknown lead=%s campaign=%s reason=lease-expired", lead_id, campaign_id
            )
            if campaign_id == self.campaign_id:
                self.replan_lead(lead_id, now)
        key = plan_key(self.schedule)
        fingerprint = plan_fingerprint(self.schedule)
        if self.store.meta.get(key) == fingerprint:
            return
        for batch in self.store.queue.enrolled_leads(self.campaign_id):
            for lead_id in batch:
                self.replan_lead(lead_id, now)
                report.replanned += 1
        self.store.meta.set(key, fingerprint)

    # -- sending ---------------------------------------------------------------------------

    def run_once(
        self, max_messages: int | None = None, stop: Callable[[], bool] | None = None
    ) -> RunReport:
        """Send everything due at this moment, each lead at most one step, then return."""
        report = RunReport(run_id=self.run_id)
        run_now = self.clock()
        self.sync(run_now, report)
        if not self.held(run_now, report):
            self.drain(run_now, report, max_messages, stop)
        return report

    def held(self, now: datetime, report: RunReport) -> bool:
        """Whether the breaker keeps this run from the relay (a recent failure of it); the
        run then stops without touching the relay or any message."""
        state = self.breaker.holding(now)
        if state is None:
            return False
        report.stopped = (
            f"the SMTP server failed {state.failures} time(s) in a row since "
            f"{state.since:%Y-%m-%d %H:%M}Z; sending waits until {state.until:%H:%M:%S}Z, "
            f"the rest waits: {state.reason}"
        )
        report.errors.append(report.stopped)
        return True

    def drain(
        self,
        run_now: datetime,
        report: RunReport,
        max_messages: int | None = None,
        stop: Callable[[], bool] | None = None,
    ) -> None:
        """Send what is due at `run_now` until none is left or something says stop.

        Separate from `run_once` so that several connections (campaign.pool) can drain the
        same queue after one `sync`. Before it returns, the last message sent is recorded
        and whatever this connection reserved but did not start goes back to the queue.
        """
        with self.store.db.holding():
            self._drain(run_now, report, max_messages, stop)

    def _drain(
        self,
        run_now: datetime,
        report: RunReport,
        max_messages: int | None,
        stop: Callable[[], bool] | None,
    ) -> None:
        try:
            while max_messages is None or report.sent + report.failed < max_messages:
                claim = self._next(run_now, report, max_messages)
                if claim is None:
                    break
                if self._paced:
                    self._record_sent()  # the budgets count what the database says was sent
                if stop is not None and stop():
                    self._reserved.appendleft(claim)
                    break
                # Asked only with a message in hand: an idle or stopping connection books
                # no `per_second` slot.
                report.paused = self.limiter.acquire(self.schedule.rate_limit, self.clock())
                if report.paused:
                    log.info("paused: %s", report.paused)
                    self._reserved.appendleft(claim)
                    break
                if not self._deliver(claim, report):
                    break
        except BaseException:
            self._finish(failing=True)
            raise
        self._finish()

    def _next(self, run_now: datetime, report: RunReport, max_messages: int | None) -> Claim | None:
        """The next reserved delivery, reserving a new run of them when none is left.

        Each reservation checks first, in its own transaction, whether the series is paused
        (`series pause`, shared by every worker): then it takes nothing, and the run ends
        saying so. A pause also puts back what was reserved before it, so the rows still in
        `_reserved` find nothing to start."""
        if not self._reserved:
            room = self.reservation
            if max_messages is not None:
                room = min(room, max_messages - report.sent - report.failed)
            self._reserved.extend(self._reserve(run_now, self.clock(), room))
            if not self._reserved:
                self._say_if_paused(report)
        return self._reserved.popleft() if self._reserved else None

    def _say_if_paused(self, report: RunReport) -> None:
        """Why an empty reservation may have been empty: asked only then, once per drain."""
        since = self.store.meta.series_paused_since(self.campaign_id)
        if since is None:
            return
        report.paused = (
            f"series {self.campaign_id} is paused since {since:%Y-%m-%d %H:%M}Z: its emails "
            f"stay queued until `series resume {self.campaign_id}`"
        )
        log.info("paused: %s", report.paused)

    def _reserve(self, due_before: datetime, now: datetime, limit: int) -> list[Claim]:
        return self.store.queue.reserve(
            self.campaign_id, due_before, self.worker, now, limit, with_clicks=self._judging
        )

    def _record_sent(self) -> None:
        if self._unrecorded is not None:
            self.store.queue.record_sent(self._unrecorded)
            self._unrecorded = None  # only once committed: if not, `_finish` tries again

    def _finish(self, failing: bool = False) -> None:
        """Record the last message sent and give back the rows reserved but never started.

        When the database is what failed, this fails too and must not hide the first error:
        the unrecorded message stays `sending` (in doubt, never resent) and the next run's
        `sync` takes the reservation back.
        """
        try:
            self._record_sent()
            self.store.queue.release_reserved(list(self._reserved), self.clock())
        except DatabaseError as exc:
            if not failing:
                raise
            log.warning("could not settle this connection's deliveries: %s", exc)
        finally:
            self._unrecorded = None
            self._reserved.clear()

    def _build(self, claim: Claim, message_id: str, sender: str) -> Built | Unsendable:
        """The message ready for SMTP, or why this row ends without one. A VERP `sender` is
        also the `mailto:` of its List-Unsubscribe, so mail sent there finds this delivery.
        A step's condition is judged here, when it fell due and is about to go."""
        confirming = claim.step_id == CONFIRM_STEP
        step = self.schedule.confirmation if confirming else self.schedule.step(claim.step_id)
        if step is None:
            # A worker on an older schedule planned it (or double opt-in was turned off since
            # the signup); the series goes on without it.
            return Unsendable(DeliveryStatus.CANCELLED, STEP_REMOVED)
        if step.condition is not None and claim.enrolled_at is not None:
            state = _state(claim.enrolled_at, claim.lead, claim.history, None, claim.clicks)
            reason = skip_reason(self.schedule, step, state)
            if reason is not None:
                return Unsendable(DeliveryStatus.SKIPPED, reason)
        lead = claim.lead
        links = self.signer.links(lead.id, self.campaign_id, claim.step_id)
        if confirming:
            links = replace(links, confirm=self.signer.confirm_url(lead.id, self.campaign_id))
        try:
            email = self.renderer.render(
                claim.step_id,
                LeadView.of(lead),
                links,
                now=self.clock(),
                message_id=message_id,
                unsubscribe_mailto=sender if self.return_path is not None else None,
                variant=partial(choose_variant, self.campaign_id, lead_id=lead.id),
            )
        except (TemplateProblem, ValueError, TypeError, LookupError) as exc:
            # This lead's data breaks the template: fail this one message, not the run.
            return Unsendable(DeliveryStatus.FAILED, f"cannot build the message: {exc}")
        return Built(email.message.data, email.message.utf8, email.variant)

    def _deliver(self, claim: Claim, report: RunReport) -> bool:
        """Send one reserved delivery. Returns False when the whole batch must stop.

        The message is built first, then one transaction records the previous message as
        sent and starts this one (the last look: a lead who left is not mailed), and only
        then does the SMTP transaction begin.
        """
        started = time.perf_counter()
        domain = self.renderer.sender_domain
        message_id = f"<d{claim.delivery_id}.{self.rng.getrandbits(48):012x}@{domain}>"
        sender = self.sender
        if self.return_path is not None:  # VERP: one HMAC per message
            sender = self.return_path.address(claim.delivery_id)
        try:
            built = self._build(claim, message_id, sender)
            if isinstance(built, Built):
                outcome = self._start(claim, built.variant)
            else:
                outcome = self._settle_unsendable(claim, built)
        except BaseException:
            self._reserved.appendleft(claim)  # not started: `_finish` hands it back
            raise
        self._unrecorded = None  # only once committed: if not, `_finish` tries again
        if isinstance(outcome, datetime):
            report.capped += 1
            waits = f"the frequency cap holds it until {outcome:%Y-%m-%d %H:%M}Z"
            _log(claim, Outcome.CAPPED, None, started, waits)
            return True
        if outcome is Start.LEFT:
            report.cancelled += 1
            _log(claim, Outcome.CANCELLED, None, started, "lead left the series")
        if outcome is not Start.GO:
            return True
        if isinstance(built, Unsendable):
            self._ended_unsent(claim, built, report, started)
            return True
        try:
            self.transport.send(Envelope(sender, claim.lead.email, built.data, built.utf8))
        except DeliveryFailure as exc:
            return self._failed(claim, exc, report, started)
        self._streaks.sent()
        self.breaker.succeeded()
        sent_at = self.clock()
        following = next_after(self.schedule, claim, DeliveryStatus.SENT, sent_at)
        # Recorded with the next message's start (or when the run ends): one commit each.
        self._unrecorded = Sent(claim, message_id, sent_at, following)
        report.sent += 1
        _log(claim, Outcome.SENT, 250, started)
        return True

    def _start(self, claim: Claim, variant: int) -> Start | datetime:
        """Put the message in flight, or, when the frequency cap holds its lead back now
        (another series or worker may have mailed it since it was planned), move it to the
        first time the cap and the send window allow (returned)."""
        now = self.clock()
        cap = self.schedule.frequency_cap
        if cap is None or claim.step_id == CONFIRM_STEP:  # a confirmation answers a signup
            return self.store.queue.start(claim, now, self._unrecorded, variant)
        zone = lead_zone(self.schedule, claim.lead.timezone)

        def defer(mailed: list[datetime]) -> datetime:
            return place(self.schedule, zone, now, mailed).at

        limit = Cap(cap.max, cap.per, defer)
        return self.store.queue.start_capped(claim, now, limit, self._unrecorded, variant)

    def _settle_unsendable(self, claim: Claim, unsendable: Unsendable) -> Start:
        """End a row with no message to send, without putting it in flight, so that a crash
        now cannot leave it in doubt."""
        now = self.clock()
        following = None
        if unsendable.outcome in (DeliveryStatus.FAILED, DeliveryStatus.SKIPPED):
            following = next_after(self.schedule, claim, unsendable.outcome, now)
        return self.store.queue.settle_unsent(
            claim, now, self._unrecorded, unsendable.outcome, unsendable.reason, following
        )

    def _ended_unsent(
        self, claim: Claim, unsendable: Unsendable, report: RunReport, started: float
    ) -> None:
        _log(claim, Outcome(unsendable.outcome), None, started, unsendable.reason)
        if unsendable.outcome is DeliveryStatus.FAILED:
            report.failed += 1
            report.unbuilt += 1
            report.errors.append(f"{claim.lead.email}: {unsendable.reason}")
            return
        if unsendable.outcome is DeliveryStatus.SKIPPED:
            report.skipped += 1
            return
        report.cancelled += 1
        # Plan the real next step, or the lead would wait forever for the removed one.
        self.replan_lead(claim.lead_id, self.clock())

    def _failed(
        self, claim: Claim, exc: DeliveryFailure, report: RunReport, started: float
    ) -> bool:
        """Record what SMTP's refusal means for this row; False when the batch must stop."""
        match exc:
            case AccountRefused():
                return self._relay_failed(claim, exc, report, started, "refused the account")
            case ServerUnavailable():
                return self._relay_failed(claim, exc, report, started, "cannot be reached")
            case RecipientRefused():
                return self._bounce(claim, exc, report, started)
            case InDoubt():
                now = self.clock()
                following = next_after(self.schedule, claim, DeliveryStatus.UNKNOWN, now)
                self.store.queue.record_failed(
                    claim, str(exc), None, now, following, outcome=DeliveryStatus.UNKNOWN
                )
                report.in_doubt += 1
                _log(claim, Outcome.UNKNOWN, None, started, str(exc))
                if self._streaks.left_in_doubt():
                    report.stopped = (
                        f"{IN_DOUBT_STREAK} messages in a row got no answer once sent "
                        f"(in doubt, not resent), the rest waits: {exc}"
                    )
                    report.errors.append(report.stopped)
                    return False
            case Unsupported():
                self._unsupported(claim, exc, report, started)
            case TransientFailure():
                self._retry_or_fail(claim, exc, report, started)
        return True

    def _relay_failed(
        self, claim: Claim, exc: DeliveryFailure, report: RunReport, started: float, what: str
    ) -> bool:
        """The relay failed before any recipient was named: nothing is known about the
        message, so it goes back untouched (no attempt spent) unless it has waited longer
        than `retry.max_age`; the whole sender backs off (the breaker) and the batch stops."""
        now = self.clock()
        state = self.breaker.trip(now, str(exc))
        if self._expired(claim, now):
            self._give_up(claim, exc, now, report, started)
        else:
            self.store.queue.release(claim, str(exc), now)
            _log(claim, Outcome.STOPPED, exc.code, started, str(exc))
        self._expire_waiting(exc, now, report)
        report.stopped = (
            f"the SMTP server {what}, the rest waits (no attempt spent; sending waits until "
            f"{state.until:%H:%M:%S}Z, failure {state.failures} in a row): {exc}"
        )
        report.errors.append(report.stopped)
        return False

    def _expired(self, claim: Claim, now: datetime) -> bool:
        return now - claim.due_at >= self.schedule.retry.max_age

    def _give_up(
        self, claim: Claim, exc: DeliveryFailure, now: datetime, report: RunReport, started: float
    ) -> None:
        """A started message that outlived `retry.max_age` while the relay failed."""
        reason = self._too_old(exc)
        following = next_after(self.schedule, claim, DeliveryStatus.FAILED, now)
        self.store.queue.record_failed(claim, reason, exc.code, now, following)
        report.failed += 1
        report.errors.append(f"{claim.lead.email}: {reason}")
        _log(claim, Outcome.FAILED, exc.code, started, reason)

    def _too_old(self, exc: DeliveryFailure) -> str:
        return f"gave up after waiting {format_delay(self.schedule.retry.max_age)}: {exc}"

    def _expire_waiting(self, exc: DeliveryFailure, now: datetime, report: RunReport) -> None:
        """While the relay fails, end the waiting messages older than `retry.max_age` as
        failed, without trying them; the queue is in due order, so they come first."""
        unsendable = Unsendable(DeliveryStatus.FAILED, self._too_old(exc))
        while self._reserved and self._expired(self._reserved[0], now):
            claim = self._reserved.popleft()
            started = time.perf_counter()
            if self._settle_unsendable(claim, unsendable) is Start.GO:
                self._ended_unsent(claim, unsendable, report, started)
            if not self._reserved:  # all of this reservation was too old: look further
                self._reserved.extend(self._reserve(now, now, self.reservation))

    def _unsupported(
        self, claim: Claim, exc: Unsupported, report: RunReport, started: float
    ) -> None:
        """The relay cannot carry this message (no SMTPUTF8): it fails at once with that
        reason, spending no retries on what cannot change; the series goes on."""
        now = self.clock()
        following = next_after(self.schedule, claim, DeliveryStatus.FAILED, now)
        self.store.queue.record_failed(claim, str(exc), exc.code, now, following)
        report.failed += 1
        report.errors.append(f"{claim.lead.email}: {exc}")
        _log(claim, Outcome.FAILED, exc.code, started, str(exc))

    def _bounce(
        self, claim: Claim, exc: DeliveryFailure, report: RunReport, started: float
    ) -> bool:
        """The lead bounces, unless the same refusal met several recipients in a row: then
        it is the sender's problem, this message goes back untouched and the batch stops."""
        now = self.clock()
        if self._streaks.refused_alike(claim.lead.email, str(exc)):
            self.store.queue.release(claim, str(exc), now)
            report.stopped = (
                f"{SAME_REFUSAL_STREAK} different recipients in a row were refused alike, "
                f"so the sender or the relay is at fault, not them; no further lead is marked "
                f"bounced and the rest waits: {exc}. To undo this run's bounces: "
                f"leads reactivate --run {self.run_id}"
            )
            report.errors.append(report.stopped)
            _log(claim, Outcome.STOPPED, exc.code, started, str(exc))
            return False
        self.store.queue.record_failed(claim, str(exc), exc.code, now, None)
        reason = f"{exc} {bounce_tag(self.run_id)}"
        self.store.leads.set_lead_status(claim.lead_id, LeadStatus.BOUNCED, reason, now)
        report.bounced += 1
        report.failed += 1
        _log(claim, Outcome.BOUNCED, exc.code, started, str(exc))
        return True

    def _retry_or_fail(
        self, claim: Claim, exc: TransientFailure, report: RunReport, started: float
    ) -> None:
        now = self.clock()
        if claim.attempts < self.schedule.retry.attempts:
            retry_at = now + backoff(claim.attempts, self.schedule, self.rng)
            if claim.step_id != CONFIRM_STEP:  # a confirmation answers the lead's own signup
                # A retry is still an email arriving: it waits for the lead's send window too.
                retry_at = next_opening(
                    retry_at,
                    self.schedule.send_window,
                    lead_zone(self.schedule, claim.lead.timezone),
                    closed_days(self.schedule),
                )
            self.store.queue.record_retry(claim, str(exc), exc.code, retry_at, now)
            report.retried += 1
            _log(claim, Outcome.RETRY, exc.code, started, str(exc))
            return
        self.store.queue.record_failed(
            claim,
            f"gave up after {claim.attempts} attempts: {exc}",
            exc.code,
            now,
            next_after(self.schedule, claim, DeliveryStatus.FAILED, now),
        )
        report.failed += 1
        _log(claim, Outcome.FAILED, exc.code, started, str(exc))


def _log(
    claim: Claim,
    outcome: Outcome,
    code: int | None,
    started: float,
    error: str | None = None,
) -> None:
    """One line per message, in a form log tools can split (`key=value`)."""
    level = _LOG_LEVELS.get(outcome, logging.WARNING)
    if not log.isEnabledFor(level):
        return
    elapsed = (time.perf_counter() - started) * 1000
    line = (
        f"outcome={outcome} delivery={claim.delivery_id} lead={claim.lead_id} "
        f"step={claim.step_id} attempt={claim.attempts} code={code} ms={elapsed:.1f}"
    )
    if error:
        line += f" error={error!r}"
    log.log(level, line)
