"""Dry runs: every email the engine would send, to whom and when, with nothing sent or changed.

`plan` replays the real planner on the store's history; `simulate` replays it on synthetic
leads. Both answer with the same `PlannedEmail` rows, so a marketer reads one format.

What the dry run assumes is what the dispatcher does: the next email of a lead goes at its
pending row's time (the store's plan, retries included) unless the schedule's timing changed
since the rows were planned, in which case the next `send-due` replans every lead from the
planner; an email already overdue goes at the next run (`now`); every later step waits its
delay from that send, inside the lead's send window.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Literal

from campaign.config.schedule import Schedule
from campaign.model import DeliveryStatus, LeadState, LeadStatus
from campaign.planner import NextStep, lead_zone, next_step, plan_fingerprint, plan_key
from campaign.planner import timeline as planner_timeline
from campaign.store import Store
from campaign.store.reads import LeadPlan

Period = Literal["day", "week"]
Progress = Callable[[int], None]
SYNTHETIC_ZONES = (
    "America/Los_Angeles",
    "America/Chicago",
    "America/New_York",
    "Europe/London",
    "Europe/Berlin",
    "Asia/Tokyo",
    "Australia/Sydney",
    None,  # no zone given: the schedule's default applies
)


@dataclass(frozen=True)
class PlannedEmail:
    """One email the engine would send."""

    at: datetime  # UTC
    local: datetime  # the same instant on the lead's wall clock
    email: str
    step_id: str
    position: int  # 0-based place in the schedule
    subject: str
    overdue: bool = False  # was due before `now`: goes at the next send-due run

    def sort_key(self) -> tuple[datetime, str, int]:
        return (self.at, self.email, self.position)


@dataclass
class PlanNotes:
    """What a marketer should know beside the list: stale plans, leads in flight or out."""

    leads: int = 0
    inactive: int = 0
    in_flight: int = 0
    replanned: bool = False
    disagree: list[str] = field(default_factory=list)


# -- one lead ------------------------------------------------------------------------------


def _email(
    schedule: Schedule, lead: LeadPlan, upcoming: NextStep, at: datetime, overdue: bool = False
) -> PlannedEmail:
    """One row; the subject is shown as written in the schedule."""
    zone = lead_zone(schedule, lead.state.timezone)
    step = upcoming.step
    return PlannedEmail(
        at, at.astimezone(zone), lead.email, step.id, upcoming.position, step.subject, overdue
    )


def lead_emails(
    schedule: Schedule,
    lead: LeadPlan,
    now: datetime,
    until: datetime | None = None,
    *,
    trust_pending: bool = True,
) -> Iterator[PlannedEmail]:
    """Every email this lead would get from `now` on, in order.

    The first one goes at the pending row's time when that row is the plan in force (so a
    retry shows when it will really be tried), otherwise at the planner's time; anything
    overdue goes at `now`, and each later step counts its delay from there.
    """
    if lead.state.status != LeadStatus.ACTIVE:
        return
    first = next_step(schedule, lead.state)
    if first is None:
        return
    at = first.due_at
    pending = lead.pending
    if trust_pending and pending is not None and pending.step_id == first.step.id:
        at = pending.due_at
    overdue = at < now
    at = max(at, now)
    if until is not None and at > until:
        return
    yield _email(schedule, lead, first, at, overdue)
    for upcoming in planner_timeline(schedule, lead.state.with_sent(first.step.id, at), until):
        yield _email(schedule, lead, upcoming, upcoming.due_at)


def disagreement(schedule: Schedule, lead: LeadPlan) -> str | None:
    """Why the store's pending row is not the planner's next step, or None when they agree.

    A retry legitimately moves the row's time, so only a row never tried is held to the
    planner's time.
    """
    state = lead.state
    if state.status != LeadStatus.ACTIVE or any(
        a.status == DeliveryStatus.SENDING for a in state.history
    ):
        return None
    first = next_step(schedule, lead.state)
    planned = f"{first.step.id} at {first.due_at:%Y-%m-%d %H:%M} UTC" if first else "nothing"
    pending = lead.pending
    if pending is None:
        return None if first is None else f"{lead.email}: no pending row; planner: {planned}"
    stored = f"{pending.step_id} at {pending.due_at:%Y-%m-%d %H:%M} UTC"
    if first is None or first.step.id != pending.step_id:
        return f"{lead.email}: the store has {stored}, the planner says {planned}"
    if pending.attempts == 0 and first.due_at != pending.due_at:
        return f"{lead.email}: the store has {stored}, the planner says {planned}"
    return None


# -- many leads from the store -------------------------------------------------------------


def plan_in_force(store: Store, schedule: Schedule) -> bool:
    """Whether the pending rows were planned with this schedule's timing (else the next
    send-due replans every lead, and the planner's answer is what will happen)."""
    return store.meta.get(plan_key(schedule)) == plan_fingerprint(schedule)


def plan_store(
    store: Store,
    schedule: Schedule,
    now: datetime,
    until: datetime | None = None,
    email: str | None = None,
    progress: Progress | None = None,
) -> tuple[list[PlannedEmail], PlanNotes]:
    """Every email the store's leads would get from `now` on, sorted; nothing is written."""
    notes = PlanNotes(replanned=not plan_in_force(store, schedule))
    emails: list[PlannedEmail] = []
    for batch in store.reads.lead_plans(schedule.campaign.id, email):
        for lead in batch:
            notes.leads += 1
            if lead.state.status != LeadStatus.ACTIVE:
                notes.inactive += 1
            elif any(a.status == DeliveryStatus.SENDING for a in lead.state.history):
                notes.in_flight += 1
            elif not notes.replanned and (problem := disagreement(schedule, lead)):
                notes.disagree.append(problem)
            emails.extend(
                lead_emails(schedule, lead, now, until, trust_pending=not notes.replanned)
            )
        if progress:
            progress(len(batch))
    emails.sort(key=PlannedEmail.sort_key)
    return emails, notes


def plan_view(
    store: Store,
    schedule: Schedule,
    now: datetime,
    *,
    email: str | None = None,
    start: datetime | None = None,
    until: datetime | None = None,
    progress: Progress | None = None,
) -> tuple[list[PlannedEmail], PlanNotes]:
    """What `plan` lists: the emails of every lead, or of the lead at `email`, from `start`
    (or `now`) to `until`. The planner still runs from `now`, so a later `start` shows the
    emails as they will really fall, not a series restarted on that day."""
    emails, notes = plan_store(store, schedule, now, until, email, progress)
    return [e for e in emails if start is None or e.at >= start], notes


# -- synthetic leads -----------------------------------------------------------------------


def synthetic_leads(count: int, start: datetime, weeks: int, seed: int) -> list[LeadPlan]:
    """`count` leads signing up at random moments over `weeks`, spread over time zones."""
    rng = random.Random(seed)
    span = timedelta(weeks=weeks).total_seconds()
    plans = []
    for number in range(1, count + 1):
        signup = start + timedelta(seconds=rng.uniform(0, span))
        zone = SYNTHETIC_ZONES[rng.randrange(len(SYNTHETIC_ZONES))]
        plans.append(LeadPlan(number, f"lead{number}@example.com", LeadState(signup, zone)))
    return plans


def simulate(
    schedule: Schedule,
    plans: Iterable[LeadPlan],
    start: datetime,
    until: datetime,
    progress: Progress | None = None,
) -> list[PlannedEmail]:
    """Every email synthetic leads would get between `start` and `until`, sorted."""
    emails: list[PlannedEmail] = []
    for plan in plans:
        emails.extend(lead_emails(schedule, plan, start, until))
        if progress:
            progress(1)
    emails.sort(key=PlannedEmail.sort_key)
    return emails


# -- summaries -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Bucket:
    start: date
    counts: Counter[str]

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def period_start(moment: datetime, by: Period) -> date:
    day = moment.astimezone(UTC).date()
    return day - timedelta(days=day.weekday()) if by == "week" else day


def choose_period(emails: Sequence[PlannedEmail]) -> Period:
    """Days for a few weeks of emails, weeks beyond that, so the chart stays short."""
    if not emails:
        return "day"
    return "day" if emails[-1].at - emails[0].at <= timedelta(days=21) else "week"


def summarise(emails: Iterable[PlannedEmail], by: Period) -> list[Bucket]:
    """Emails per day or per (Monday-based, UTC) week, counted per step."""
    buckets: dict[date, Counter[str]] = {}
    for item in emails:
        buckets.setdefault(period_start(item.at, by), Counter())[item.step_id] += 1
    return [Bucket(start, buckets[start]) for start in sorted(buckets)]
