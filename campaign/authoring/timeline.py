"""Dry runs: every email the engine would send, to whom and when, with nothing sent or changed.

`plan` replays the real planner on the store's history; `simulate` replays it on synthetic
leads. Both answer with the same `PlannedEmail` rows, so a marketer reads one format.

What the dry run assumes is what the dispatcher does: the next email of a lead goes at its
pending row's time (the store's plan, retries included) unless the schedule's timing changed
since the rows were planned, in which case the next `send-due` replans every lead from the
planner; an email already overdue goes at the next run (`now`); every later step waits its
delay from that send, inside the lead's send window.

A conditional step (`if:`) is judged as it falls due (`authoring.branches`): `plan` shows one
still open at its time as if taken, and one already settled against the lead as skipped;
`simulate` lets synthetic leads click and book, and judges it as the dispatcher does. After
a skipped step the next one's delay counts from the last email actually sent (or it goes at
once, when that time has passed). A subject test's row carries the variant the lead gets.

A row moved off a closed day, or held back by the frequency cap, says so in its `note`. The
cap counts what every series sent the lead; a pending row planned before another series
mailed the lead is shown where the dispatcher's last look will move it.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from typing import Literal

from campaign.authoring.branches import (
    Behaviour,
    Branch,
    Judge,
    Reaction,
    known_now,
    when_due,
)
from campaign.authoring.preview import step_labeller
from campaign.config.schedule import Schedule, variant_name
from campaign.model import DeliveryStatus, LeadState, LeadStatus
from campaign.planner import (
    NextStep,
    Placement,
    attempted,
    cap_allows,
    choose_variant,
    lead_zone,
    next_step,
    place,
    plan_fingerprint,
    plan_key,
)
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
    subject: str  # the lead's own subject of a subject test
    overdue: bool = False  # was due before `now`: goes at the next send-due run
    variant: int | None = None  # which subject of a subject test; None for one subject
    branch: Branch | None = None  # a conditional step's condition and what is known of it
    reaction: Reaction = Reaction.NONE  # what a synthetic lead did with it (`simulate`)
    note: str = ""  # why it goes then: moved off a closed day, waiting for the frequency cap

    def sort_key(self) -> tuple[datetime, str, int]:
        return (self.at, self.email, self.position)

    @property
    def skipped(self) -> bool:
        """A conditional step that is not sent: a row for the marketer, not an email."""
        return self.branch is not None and self.branch.skipped

    @property
    def variant_name(self) -> str:
        return "" if self.variant is None else variant_name(self.variant)


@dataclass
class PlanNotes:
    """What a marketer should know beside the list: stale plans, leads in flight or out."""

    leads: int = 0
    inactive: int = 0
    paused: int = 0  # `leads pause`: nothing planned until resumed
    in_flight: int = 0
    replanned: bool = False
    disagree: list[str] = field(default_factory=list)


# -- one lead ------------------------------------------------------------------------------


def shift_note(schedule: Schedule, placed: Placement) -> str:
    """Why an email goes later than its delay says: "waits for the frequency cap: 1 per 2
    days", "moved from Fri 25 Dec: closed"; empty when nothing moved it."""
    parts = []
    cap = schedule.frequency_cap
    if placed.capped and cap is not None:
        parts.append(f"waits for the frequency cap: {cap.describe()}")
    if placed.closed:
        days = [f"{d:%a} {d.day} {d:%b}: {schedule.closed_reason(d)}" for d in placed.closed[:3]]
        more = ", ..." if len(placed.closed) > 3 else ""
        parts.append(f"moved from {', '.join(days)}{more}")
    return "; ".join(parts)


def _when(
    schedule: Schedule, state: LeadState, upcoming: NextStep, at: datetime
) -> tuple[datetime, str]:
    """When the step goes that the walk puts at `at`, and why then. At the planner's own
    time, its placement says why; at another (the pending row's, or overdue and so now),
    the frequency cap may still hold it back at the dispatcher's last look, which moves it
    as the planner would."""
    if at == upcoming.due_at:
        return at, shift_note(schedule, Placement(at, upcoming.closed, upcoming.capped))
    cap = schedule.frequency_cap
    if cap is None or cap_allows(cap, state.mailed, at) == at:
        return at, ""
    placed = place(schedule, lead_zone(schedule, state.timezone), at, state.mailed)
    return placed.at, shift_note(schedule, placed)


def _email(
    schedule: Schedule,
    lead: LeadPlan,
    upcoming: NextStep,
    at: datetime,
    overdue: bool,
    branch: Branch | None,
    note: str = "",
) -> PlannedEmail:
    """One row, with the subject this lead gets (its variant of a subject test)."""
    zone = lead_zone(schedule, lead.state.timezone)
    step = upcoming.step
    variant = None
    if len(step.subjects) > 1 and not (branch and branch.skipped):
        variant = choose_variant(schedule.campaign.id, step, lead.lead_id)
    subject = step.subjects[variant or 0].text
    return PlannedEmail(
        at,
        at.astimezone(zone),
        lead.email,
        step.id,
        upcoming.position,
        subject,
        overdue,
        variant,
        branch,
        note=note,
    )


def _first_time(lead: LeadPlan, first: NextStep, trust_pending: bool) -> datetime:
    """When the lead's next step goes: the pending row's time when that row is the plan in
    force (so a retry shows when it will really be tried), otherwise the planner's."""
    pending = lead.pending
    if trust_pending and pending is not None and pending.step_id == first.step.id:
        return pending.due_at
    return first.due_at


def _walk(
    schedule: Schedule,
    lead: LeadPlan,
    now: datetime,
    until: datetime | None,
    trust_pending: bool,
    judge: Judge,
    behaviour: Behaviour | None = None,
) -> Iterator[PlannedEmail]:
    """The lead's steps from `now` on, each judged by `judge` as it falls due: a skipped
    step is recorded as skipped and the next counts from the last email sent (never before
    the skip); with `behaviour`, the lead answers each email it gets, and a booking may end
    the series."""
    state = lead.state
    if state.status != LeadStatus.ACTIVE or lead.paused:
        return  # nothing goes to a paused lead until it is resumed
    upcoming = next_step(schedule, state)
    if upcoming is None:
        return
    at = _first_time(lead, upcoming, trust_pending)
    overdue = at < now
    at = max(at, now)
    answer = behaviour.answers(schedule, lead.lead_id) if behaviour else None
    while until is None or at <= until:
        branch = judge(schedule, upcoming.step, state)
        note = ""
        if not (branch and branch.skipped):  # a skipped step sends nothing to hold back
            at, note = _when(schedule, state, upcoming, at)
            if until is not None and at > until:
                return
        row = _email(schedule, lead, upcoming, at, overdue, branch, note)
        if row.skipped:
            state = state.with_attempt(row.step_id, DeliveryStatus.SKIPPED, at)
        else:
            state = attempted(state, row.step_id, DeliveryStatus.SENT, at)
            if answer is not None:
                state, reaction = answer(row.step_id, state)
                row = replace(row, reaction=reaction)
        yield row
        following = next_step(schedule, state) if state.status == LeadStatus.ACTIVE else None
        if following is None:
            return
        upcoming, at, overdue = following, max(following.due_at, at), False


def lead_path(
    schedule: Schedule,
    lead: LeadPlan,
    now: datetime,
    until: datetime | None = None,
    *,
    trust_pending: bool = True,
) -> Iterator[PlannedEmail]:
    """This lead's steps from `now` on, in order, as `plan` shows them: each conditional
    step judged on what the lead has done so far (`branches.known_now`), one still open shown
    as if taken, one already settled against the lead as a skipped row."""
    return _walk(schedule, lead, now, until, trust_pending, known_now)


def lead_emails(
    schedule: Schedule,
    lead: LeadPlan,
    now: datetime,
    until: datetime | None = None,
    *,
    trust_pending: bool = True,
) -> Iterator[PlannedEmail]:
    """Every email this lead would get from `now` on, in order (`lead_path` without the
    steps it will skip).

    The first one goes at the pending row's time when that row is the plan in force,
    otherwise at the planner's time; anything overdue goes at `now`, and each later step
    counts its delay from there.
    """
    path = lead_path(schedule, lead, now, until, trust_pending=trust_pending)
    return (row for row in path if not row.skipped)


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
    # The planner counts other series' emails against the frequency cap; the row, planned
    # by this series, is moved at the last look instead.
    held = first.capped and pending.due_at < first.due_at
    if pending.attempts == 0 and first.due_at != pending.due_at and not held:
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
    """Every email the store's leads would get from `now` on, sorted, with the steps already
    known to be skipped among them (`PlannedEmail.skipped`); nothing is written."""
    notes = PlanNotes(replanned=not plan_in_force(store, schedule))
    emails: list[PlannedEmail] = []
    for batch in store.reads.lead_plans(schedule.campaign.id, email):
        for lead in batch:
            notes.leads += 1
            if lead.state.status != LeadStatus.ACTIVE:
                notes.inactive += 1
            elif lead.paused:
                notes.paused += 1
            elif any(a.status == DeliveryStatus.SENDING for a in lead.state.history):
                notes.in_flight += 1
            elif not notes.replanned and (problem := disagreement(schedule, lead)):
                notes.disagree.append(problem)
            emails.extend(lead_path(schedule, lead, now, until, trust_pending=not notes.replanned))
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
    behaviour: Behaviour | None = None,
) -> list[PlannedEmail]:
    """Every step synthetic leads reach between `start` and `until`, sorted: the emails they
    get, each with what the lead did with it, and the conditional steps they skip, judged
    as each falls due on what they did (`behaviour`; by default no one clicks or books)."""
    behaviour = behaviour or Behaviour()
    emails: list[PlannedEmail] = []
    for plan in plans:
        emails.extend(_walk(schedule, plan, start, until, False, when_due, behaviour))
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


@dataclass
class StepBranches:
    """One step in a simulation: leads who got it (per subject of a subject test), who
    skipped it, and what they did with it."""

    step_id: str
    position: int
    condition: str = ""
    sent: int = 0
    skipped: int = 0
    clicked: int = 0  # a click that books counts here too
    booked: int = 0
    variants: Counter[int] = field(default_factory=Counter)


def branch_counts(schedule: Schedule, emails: Iterable[PlannedEmail]) -> list[StepBranches]:
    """Per step of the schedule, in order, how the simulated leads went through it."""
    label = step_labeller(schedule)
    counts = [
        StepBranches(step.id, position, step.condition.describe(label) if step.condition else "")
        for position, step in enumerate(schedule.steps)
    ]
    for item in emails:
        count = counts[item.position]
        if item.skipped:
            count.skipped += 1
            continue
        count.sent += 1
        count.clicked += item.reaction is not Reaction.NONE
        count.booked += item.reaction is Reaction.BOOKED
        if item.variant is not None:
            count.variants[item.variant] += 1
    return counts
