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

from rich.console import Console
from rich.table import Table
from rich.text import Text
from sqlalchemy import and_, func, select

from campaign.config.schedule import Schedule
from campaign.model import Attempt, LeadState
from campaign.planner import ACTIVE, NextStep, lead_zone, next_step, plan_fingerprint, plan_key
from campaign.planner import timeline as planner_timeline
from campaign.store.queue import Store, deliveries, enrollments, from_db, leads

Period = Literal["day", "week"]
Progress = Callable[[int], None]
BATCH = 1000
STEP_COLOURS = ("green", "cyan", "magenta", "yellow", "blue", "red", "bright_green", "bright_cyan")
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
class Pending:
    """The store's planned next delivery for a lead (its time moves on a retry)."""

    step_id: str
    due_at: datetime
    attempts: int


@dataclass(frozen=True)
class LeadPlan:
    """One enrolled lead as the dry run sees it: its planner state and its pending row."""

    lead_id: int
    email: str
    state: LeadState
    pending: Pending | None = None


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
    if lead.state.status != ACTIVE:
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
    if lead.state.status != ACTIVE or any(a.status == "sending" for a in lead.state.history):
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


def _history_rows(conn, campaign_id: str, ids: Sequence[int]) -> list:
    # Same rows and times as the store's HISTORY, read for a whole batch of leads at once.
    return conn.execute(
        select(
            deliveries.c.lead_id,
            deliveries.c.step_id,
            deliveries.c.status,
            func.coalesce(deliveries.c.sent_at, deliveries.c.claimed_at, deliveries.c.updated_at),
            deliveries.c.due_at,
            deliveries.c.attempts,
        )
        .where(
            deliveries.c.campaign_id == campaign_id,
            deliveries.c.lead_id.in_(ids),
            deliveries.c.status != "cancelled",
        )
        .order_by(deliveries.c.id)
    ).all()


def _batch_plans(conn, campaign_id: str, rows: Sequence) -> list[LeadPlan]:
    ids = [row.id for row in rows]
    history: dict[int, list[Attempt]] = {i: [] for i in ids}
    pending: dict[int, Pending] = {}
    for lead_id, step_id, status, at, due_at, attempts in _history_rows(conn, campaign_id, ids):
        if status in ("pending", "claimed"):  # claimed: reserved by a sender, not yet tried
            pending[lead_id] = Pending(step_id, from_db(due_at), attempts)
        else:
            history[lead_id].append(Attempt(step_id, status, from_db(at)))
    return [
        LeadPlan(
            row.id,
            row.email,
            LeadState(from_db(row.enrolled_at), row.timezone, row.status, tuple(history[row.id])),
            pending.get(row.id),
        )
        for row in rows
    ]


def count_enrolled(store: Store, campaign_id: str, email: str | None = None) -> int:
    query = (
        select(func.count())
        .select_from(enrollments)
        .join(leads, leads.c.id == enrollments.c.lead_id)
        .where(enrollments.c.campaign_id == campaign_id)
    )
    if email is not None:
        query = query.where(func.lower(leads.c.email) == email.lower())
    with store.read() as conn:
        return conn.execute(query).scalar() or 0


def read_leads(
    store: Store, campaign_id: str, email: str | None = None, batch: int = BATCH
) -> Iterator[list[LeadPlan]]:
    """Every lead enrolled in the campaign with its history, in batches; reads only."""
    last = 0
    while True:
        query = (
            select(
                leads.c.id,
                leads.c.email,
                leads.c.timezone,
                leads.c.status,
                enrollments.c.enrolled_at,
            )
            .join(
                enrollments,
                and_(enrollments.c.lead_id == leads.c.id, enrollments.c.campaign_id == campaign_id),
            )
            .where(leads.c.id > last)
            .order_by(leads.c.id)
            .limit(batch)
        )
        if email is not None:
            query = query.where(func.lower(leads.c.email) == email.lower())
        with store.read() as conn:
            rows = conn.execute(query).all()
            if not rows:
                return
            yield _batch_plans(conn, campaign_id, rows)
        last = rows[-1].id


def plan_in_force(store: Store, schedule: Schedule) -> bool:
    """Whether the pending rows were planned with this schedule's timing (else the next
    send-due replans every lead, and the planner's answer is what will happen)."""
    return store.get_meta(plan_key(schedule)) == plan_fingerprint(schedule)


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
    for batch in read_leads(store, schedule.campaign.id, email):
        for lead in batch:
            notes.leads += 1
            if lead.state.status != ACTIVE:
                notes.inactive += 1
            elif any(a.status == "sending" for a in lead.state.history):
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


# -- printing ------------------------------------------------------------------------------


def parse_bound(text: str, *, end_of_day: bool = False) -> datetime:
    """`2026-03-09` (midnight UTC, or the end of that day) or a full ISO-8601 time."""
    try:
        if len(text) == 10:
            day = datetime.combine(date.fromisoformat(text), datetime.min.time(), tzinfo=UTC)
            return day + timedelta(days=1) - timedelta(microseconds=1) if end_of_day else day
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a date (2026-03-09) or an ISO-8601 time") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def email_rows(schedule: Schedule, emails: Sequence[PlannedEmail]) -> list[tuple[str, ...]]:
    total = len(schedule.steps)
    return [
        (
            f"{item.at:%a %Y-%m-%d %H:%M}" + (" (due now)" if item.overdue else ""),
            f"{item.local:%a %d %b %H:%M %Z}",
            item.email,
            f"{item.position + 1}/{total} {item.step_id}",
            item.subject,
        )
        for item in emails
    ]


def print_emails(
    console: Console, schedule: Schedule, emails: Sequence[PlannedEmail], limit: int | None
) -> None:
    """One plain, aligned line per email (plain so it can be read, grepped and diffed)."""
    shown = emails if not limit else emails[:limit]
    header = ("when (UTC)", "lead's local time", "to", "step", "subject")
    rows = [header, *email_rows(schedule, shown)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header) - 1)]
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        console.print("  ".join([*cells, row[-1]]).rstrip(), markup=False, highlight=False)
    if len(shown) < len(emails):
        console.print(
            f"... and {len(emails) - len(shown)} more (raise --limit to list them)", highlight=False
        )


def print_summary(
    console: Console,
    schedule: Schedule,
    emails: Sequence[PlannedEmail],
    by: Period,
    bar_width: int = 40,
) -> None:
    """Counts per day or week and step, with a stacked bar per period coloured by step."""
    buckets = summarise(emails, by)
    if not buckets:
        return
    step_ids = [step.id for step in schedule.steps]
    colours = {sid: STEP_COLOURS[i % len(STEP_COLOURS)] for i, sid in enumerate(step_ids)}
    table = Table(title=f"Emails per {by} (UTC)", title_justify="left", box=None)
    table.add_column(by)
    for number, _sid in enumerate(step_ids, 1):
        table.add_column(str(number), justify="right", style=colours[_sid])
    table.add_column("total", justify="right", style="bold")
    table.add_column("")
    peak = max(bucket.total for bucket in buckets)
    for bucket in buckets:
        bar = Text()
        for sid in step_ids:
            size = round(bucket.counts[sid] / peak * bar_width)
            bar.append("█" * size, style=colours[sid])
        label = f"{bucket.start:%a %Y-%m-%d}" if by == "day" else f"wk of {bucket.start:%Y-%m-%d}"
        table.add_row(
            label, *(str(bucket.counts[sid] or "") for sid in step_ids), str(bucket.total), bar
        )
    console.print(table)
    legend = Text("steps:")
    for number, sid in enumerate(step_ids, 1):
        legend.append("  ").append(f"{number} {sid}", style=colours[sid])
    console.print(legend)


def print_notes(console: Console, notes: PlanNotes) -> None:
    if notes.inactive:
        console.print(
            f"{notes.inactive} lead(s) are not active (unconfirmed, unsubscribed, "
            "bounced or converted): nothing is planned for them",
            highlight=False,
        )
    if notes.in_flight:
        console.print(
            f"{notes.in_flight} lead(s) have an email being sent right now: what "
            "follows is planned when it is confirmed",
            highlight=False,
        )
    if notes.replanned:
        console.print(
            "[yellow]the schedule's timing changed since the leads were planned:[/] "
            "the next send-due replans every lead; the times above are the new plan"
        )
    for problem in notes.disagree[:20]:
        console.print(f"[yellow]store and planner disagree:[/] {problem}", highlight=False)
    if len(notes.disagree) > 20:
        console.print(f"... and {len(notes.disagree) - 20} more disagreements")
