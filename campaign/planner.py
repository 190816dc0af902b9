"""The pure core: given a schedule, one lead's history and a time, which step is next and when.

No I/O and no clock: every function takes the time it needs, so tests replay months in
microseconds and the dispatcher, the dry-run timeline and the demo all share one answer.

Rules:
- A step's delay counts from the moment the previous email was actually sent (the first
  step's from enrollment), then moves forward to the next opening of the send window in the
  lead's own time zone.
- The next step is the first one in schedule order after the furthest step the lead has
  passed, so a step added later reaches leads who have not passed it and a removed step is
  simply never planned again.
- Only one step is ever due at a time; the one after it waits its full delay from the real
  send, so catching up after downtime never bursts.
- A step with a condition (`if:`) is judged when it falls due (`skip_reason`), from what the
  lead did by then; a false one skips it for good, and the delay of the step after it still
  counts from the last email actually sent.
- A subject test's variant is a function of the series, the step and the lead alone
  (`choose_variant`), so a lead sees the same one after a crash, a replan or a restart.
- No email lands on a closed date (`closed:`, `holidays:`) in the lead's time zone, and no
  lead gets more than the frequency cap's `max` emails within any `per` (`place`): a capped
  email waits for the first moment the cap allows, then for the window; it is never skipped.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from campaign.config.schedule import (
    MAX_CLOSED_RUN,
    Condition,
    FrequencyCap,
    Schedule,
    SendWindow,
    Step,
)
from campaign.model import (
    CONFIRM_STEP,
    PASSED,
    SETTLED,
    DeliveryStatus,
    LeadState,
    PlannedDelivery,
    is_booking,
)

# What reached, or may have reached, the lead's mailbox: what the frequency cap counts.
MAILED = frozenset({DeliveryStatus.SENT, DeliveryStatus.SENDING, DeliveryStatus.UNKNOWN})


@dataclass(frozen=True)
class Placement:
    """When an email may land, and what moved it there, for `plan` to say why."""

    at: datetime  # UTC
    closed: tuple[date, ...] = ()  # the lead's local dates it would have landed on, closed
    capped: bool = False  # the frequency cap held it back


@dataclass(frozen=True)
class NextStep:
    step: Step
    position: int
    due_at: datetime  # UTC, inside the lead's send window
    closed: tuple[date, ...] = ()  # as in `Placement`
    capped: bool = False


def lead_zone(schedule: Schedule, timezone: str | None) -> ZoneInfo:
    if timezone:
        try:
            return ZoneInfo(timezone)
        except (KeyError, ValueError):  # pragma: no cover - the store validates zones
            pass
    return schedule.zone


def _window_open_on(day: date, window: SendWindow, zone: ZoneInfo) -> tuple[datetime, datetime]:
    """The window's bounds on `day` as UTC instants, never reaching outside its wall-clock hours.

    A bound inside a spring-forward gap has two readings (fold 0 and 1); the start takes the
    later and the end the earlier, so the window shrinks on that day instead of spilling over.
    """
    start = datetime.combine(day, window.start, tzinfo=zone).astimezone(UTC)
    wall_end = datetime.combine(day, window.end, tzinfo=zone)
    end = min(wall_end.replace(fold=fold).astimezone(UTC) for fold in (0, 1))
    return start, end


Closed = Callable[[date], bool]


def _opening(
    moment: datetime, window: SendWindow, zone: ZoneInfo, closed: Closed | None
) -> tuple[datetime, tuple[date, ...]]:
    """The earliest instant at or after `moment` inside the send window on a day that is not
    closed, and the closed local dates passed over on the way. The schedule keeps closed
    dates from shutting the window for `MAX_CLOSED_RUN` days, so the search ends."""
    moment = moment.astimezone(UTC)
    local_day = moment.astimezone(zone).date()
    passed: list[date] = []
    for offset in range(8 if closed is None else MAX_CLOSED_RUN + 8):
        day = local_day + timedelta(days=offset)
        if day.weekday() not in window.weekdays:
            continue
        start, end = _window_open_on(day, window, zone)
        opening = max(moment, start)
        if opening >= end:  # not `moment < end`: a window shrunk by a clock change may be empty
            continue
        if closed is not None and closed(day):
            passed.append(day)
            continue
        return opening, tuple(passed)
    raise ValueError("the send window never opens")  # pragma: no cover - validated


def next_opening(
    moment: datetime, window: SendWindow, zone: ZoneInfo, closed: Closed | None = None
) -> datetime:
    """The earliest instant at or after `moment` that falls inside the send window, on a
    day that is not `closed` (a local date).

    Window bounds are built from local wall-clock times each day, so 09:00 stays 09:00 on
    both sides of a daylight-saving change.
    """
    return _opening(moment, window, zone, closed)[0]


def closed_days(schedule: Schedule) -> Closed | None:
    """The schedule's closed-day test, or None when it has none (the faster search)."""
    return schedule.is_closed if schedule.has_closed_days else None


def _fits(cap: FrequencyCap, mailed: Sequence[datetime], at: datetime) -> bool:
    """Whether one more email at `at` keeps every window of length `per` (from an instant
    on, up to but not including the instant `per` later) at `max` emails or fewer."""
    near = sorted(m for m in mailed if at - cap.per < m < at + cap.per)
    if len(near) < cap.max:
        return True
    points = sorted([*near, at])
    starts = [start for start in points if at - cap.per < start <= at]  # windows holding `at`
    return all(sum(start <= p < start + cap.per for p in points) <= cap.max for start in starts)


def cap_allows(cap: FrequencyCap, mailed: Sequence[datetime], at: datetime) -> datetime:
    """The first instant at or after `at` when the cap lets one more email through. Only an
    email leaving a window can free it, so the answer is `at` or a mailed time plus `per`;
    after the last of those nothing is near enough to hold it back."""
    later = sorted({m + cap.per for m in mailed if m + cap.per > at})
    return next(moment for moment in (at, *later) if _fits(cap, mailed, moment))


def place(
    schedule: Schedule, zone: ZoneInfo, moment: datetime, mailed: Sequence[datetime] = ()
) -> Placement:
    """The first instant at or after `moment` an email may land for a lead in `zone` mailed
    at `mailed`: inside the window, on an open day, within the frequency cap. Each move
    for the cap goes to a mailed time plus `per`, later every time, so the turns are few."""
    cap, closed = schedule.frequency_cap, closed_days(schedule)
    passed: list[date] = []
    capped = False
    at = moment
    for _ in range(len(mailed) + 2):
        at, skipped = _opening(at, schedule.send_window, zone, closed)
        passed.extend(skipped)
        free = at if cap is None else cap_allows(cap, mailed, at)
        if free == at:
            return Placement(at, tuple(passed), capped)
        at, capped = free, True
    raise AssertionError("unreachable: past every mailed time plus `per` the cap is free")


def attempted(lead: LeadState, step_id: str, status: DeliveryStatus, at: datetime) -> LeadState:
    """The lead after an attempt at a step, its mailbox included when the email went out
    (or may have): what the next step's placement must count."""
    return lead.with_attempt(step_id, status, at, mailed=status in MAILED)


def next_step(schedule: Schedule, lead: LeadState) -> NextStep | None:
    """The step the lead should get next and when, or None when the series is finished."""
    if any(a.status == DeliveryStatus.SENDING for a in lead.history):
        return None  # a message is in flight; its outcome decides what comes next
    positions = {step.id: index for index, step in enumerate(schedule.steps)}
    # The confirmation email is not a step of the series: the series starts when the lead
    # confirms (its enrollment), not when that email went out.
    series = [a for a in lead.history if a.step_id != CONFIRM_STEP]
    settled = [a for a in series if a.status in SETTLED]
    passed = [a for a in settled if a.status in PASSED]  # skipped steps sent nothing
    reached = max((positions[a.step_id] for a in settled if a.step_id in positions), default=-1)
    done = {a.step_id for a in series}
    for position in range(reached + 1, len(schedule.steps)):
        step = schedule.steps[position]
        if step.id in done:  # already attempted (e.g. reordered schedule): never twice
            continue
        anchor = max((a.at for a in passed), default=lead.enrolled_at)
        zone = lead_zone(schedule, lead.timezone)
        placed = place(schedule, zone, anchor + step.delay, lead.mailed)
        return NextStep(step, position, placed.at, placed.closed, placed.capped)
    return None


def clicked(lead: LeadState, step_id: str) -> bool:
    return any(step == step_id for step, _ in lead.clicks)


def holds(condition: Condition, lead: LeadState, booking_url: str) -> bool:
    """Whether a step's condition is true of what the lead has done so far."""
    if condition.clicked is not None:
        return clicked(lead, condition.clicked)
    if condition.not_clicked is not None:
        return not clicked(lead, condition.not_clicked)
    if condition.clicked_link is not None:
        return any(is_booking(url, booking_url) for _, url in lead.clicks)
    wanted = condition.attribute or {}
    return all(
        lead.attributes.get(name, "").casefold() == value.casefold()
        for name, value in wanted.items()
    )


def skip_reason(schedule: Schedule, step: Step, lead: LeadState) -> str | None:
    """Why a step that fell due is skipped rather than sent (its condition is false now),
    or None to send it."""
    condition = step.condition
    if condition is None or holds(condition, lead, str(schedule.booking_url)):
        return None
    return f"condition not met: {condition.describe()}"


def choose_variant(campaign_id: str, step: Step, lead_id: int) -> int:
    """Which of a step's subjects a lead gets: a hash of series, step and lead spread over
    the variants' weights. Stable across runs, processes and crashes, independent between
    steps, and needing nothing stored to be chosen again."""
    variants = step.subjects
    if len(variants) == 1:
        return 0
    digest = hashlib.sha256(f"{campaign_id}\0{step.id}\0{lead_id}".encode()).digest()
    point = int.from_bytes(digest[:8], "big") % sum(v.weight for v in variants)
    for index, variant in enumerate(variants):
        if point < variant.weight:
            return index
        point -= variant.weight
    raise AssertionError("unreachable: the point lies below the total weight")


def next_delivery(schedule: Schedule, lead: LeadState) -> PlannedDelivery | None:
    """The lead's next step as the store keeps it: which step, and when it falls due."""
    upcoming = next_step(schedule, lead)
    return PlannedDelivery(upcoming.step.id, upcoming.due_at) if upcoming else None


def timeline(
    schedule: Schedule, lead: LeadState, until: datetime | None = None
) -> Iterator[NextStep]:
    """Every future email for this lead, assuming each is sent the moment it falls due."""
    state = lead
    while (upcoming := next_step(schedule, state)) is not None:
        if until is not None and upcoming.due_at > until:
            return
        yield upcoming
        state = attempted(state, upcoming.step.id, DeliveryStatus.SENT, upcoming.due_at)


def plan_fingerprint(schedule: Schedule) -> str:
    """What decides *when* emails go out; a change here means pending rows must be replanned."""
    shape: dict[str, object] = {
        "steps": [(s.id, s.delay.total_seconds()) for s in schedule.steps],
        "window": schedule.send_window.model_dump(mode="json"),
        "timezone": schedule.timezone,
    }
    # Only when set, so that a schedule without them keeps the fingerprint it had.
    for name in ("closed", "holidays", "frequency_cap"):
        if getattr(schedule, name):
            shape[name] = schedule.model_dump(mode="json")[name]
    return hashlib.sha256(json.dumps(shape, sort_keys=True).encode()).hexdigest()[:16]


def plan_key(schedule: Schedule) -> str:
    """Where the store remembers which schedule shape the pending rows were planned with."""
    return f"plan:{schedule.campaign.id}"
