"""The pure planner: which step is next and when, replayed without a clock or a database."""

from __future__ import annotations

import copy
from collections.abc import Callable
from datetime import UTC, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from campaign.config.schedule import WEEKDAYS, Schedule
from campaign.model import Attempt, LeadState
from campaign.planner import next_opening, next_step, timeline
from harness.schedule import REPO

SHIPPED = yaml.safe_load((REPO / "schedules.yaml").read_text(encoding="utf-8"))
STEP_IDS = [step["id"] for step in SHIPPED["steps"]]
NEW_YORK = ZoneInfo("America/New_York")
WEEK = timedelta(days=7)


def make_schedule(change: Callable[[dict[str, Any]], None] | None = None) -> Schedule:
    """The shipped schedule, optionally edited, validated the way the loader validates it."""
    data = copy.deepcopy(SHIPPED)
    if change is not None:
        change(data)
    return Schedule.model_validate(data)


def local(zone: ZoneInfo | str, *args: int) -> datetime:
    """A wall-clock time in `zone`, as the aware UTC instant the planner works with."""
    zone = ZoneInfo(zone) if isinstance(zone, str) else zone
    return datetime(*args, tzinfo=zone).astimezone(UTC)


def sent(*steps: tuple[str, datetime]) -> tuple[Attempt, ...]:
    return tuple(Attempt(step_id, "sent", at) for step_id, at in steps)


def window(start: str, end: str, days: list[str] | None = None) -> Callable[[dict], None]:
    def change(data: dict[str, Any]) -> None:
        data["send_window"] = {"days": days or list(WEEKDAYS[:5]), "start": start, "end": end}

    return change


def inside(moment: datetime, schedule: Schedule, zone: ZoneInfo) -> bool:
    """Independent of the planner: the lead's wall clock shows an allowed day and hour."""
    wall = moment.astimezone(zone)
    sw = schedule.send_window
    return wall.weekday() in sw.weekdays and sw.start <= wall.time() < sw.end


SCHEDULE = make_schedule()


# -- delays and the send window ------------------------------------------------------------


def test_first_step_counts_from_enrollment() -> None:
    def first_waits_a_day(data: dict[str, Any]) -> None:
        data["steps"][0]["delay"] = "1d"

    schedule = make_schedule(first_waits_a_day)
    enrolled = local("America/Chicago", 2026, 3, 3, 10, 15)  # Tuesday, inside the window
    upcoming = next_step(schedule, LeadState(enrolled, "America/Chicago"))
    assert upcoming is not None and upcoming.step.id == "mechanisms"
    assert upcoming.due_at == enrolled + timedelta(days=1)


def test_delay_counts_from_the_actual_send_not_the_plan() -> None:
    enrolled = local("America/Chicago", 2026, 3, 2, 10, 0)  # Monday
    late_send = local("America/Chicago", 2026, 3, 4, 11, 30)  # went out two days late
    lead = LeadState(enrolled, "America/Chicago", history=sent(("mechanisms", late_send)))
    upcoming = next_step(SCHEDULE, lead)
    assert upcoming is not None and upcoming.step.id == "pain-types"
    assert upcoming.due_at == late_send + WEEK


def test_due_time_moves_to_the_next_window_opening_in_the_leads_zone() -> None:
    enrolled = local("Asia/Tokyo", 2026, 3, 3, 20, 0)  # Tuesday evening in Tokyo
    upcoming = next_step(SCHEDULE, LeadState(enrolled, "Asia/Tokyo"))
    assert upcoming is not None
    assert upcoming.due_at == local("Asia/Tokyo", 2026, 3, 4, 9, 0)


def test_lead_without_a_zone_uses_the_schedules_zone() -> None:
    enrolled = datetime(2026, 3, 3, 12, 0, tzinfo=UTC)  # 06:00 in Chicago
    upcoming = next_step(SCHEDULE, LeadState(enrolled, None))
    assert upcoming is not None
    assert upcoming.due_at == local("America/Chicago", 2026, 3, 3, 9, 0)


@pytest.mark.parametrize(
    "enrolled",
    [(2026, 3, 6, 17, 30), (2026, 3, 7, 10, 0), (2026, 3, 8, 23, 59)],
    ids=["friday-evening", "saturday-morning", "sunday-night"],
)
def test_weekend_is_skipped(enrolled: tuple[int, ...]) -> None:
    lead = LeadState(local("Europe/London", *enrolled), "Europe/London")
    upcoming = next_step(SCHEDULE, lead)
    assert upcoming is not None
    assert upcoming.due_at == local("Europe/London", 2026, 3, 9, 9, 0)  # Monday 09:00


def test_a_due_time_inside_the_window_is_kept_to_the_minute() -> None:
    enrolled = local("Europe/Berlin", 2026, 3, 4, 16, 59)
    upcoming = next_step(SCHEDULE, LeadState(enrolled, "Europe/Berlin"))
    assert upcoming is not None and upcoming.due_at == enrolled


# -- daylight-saving changes -------------------------------------------------------------


def dense(data: dict[str, Any]) -> None:
    """Short delays, so several steps land on either side of a clock change."""
    for step, delay in zip(data["steps"], ["0d", "12h", "30m", "1d", "7h"], strict=True):
        step["delay"] = delay
    data["send_window"]["days"] = list(WEEKDAYS)


@pytest.mark.parametrize("change", ["2026-03-08", "2026-11-01"], ids=["march", "november"])
@pytest.mark.parametrize("shape", [None, dense], ids=["shipped", "dense"])
def test_new_york_lead_stays_inside_its_local_window_across_dst(change: str, shape) -> None:
    schedule = make_schedule(shape)
    switch = datetime.fromisoformat(change).replace(hour=2, tzinfo=NEW_YORK)
    for hours_before in range(1, 73, 5):  # every timeline starts just before the change
        enrolled = switch.astimezone(UTC) - timedelta(hours=hours_before)
        steps = list(timeline(schedule, LeadState(enrolled, "America/New_York")))
        assert [s.step.id for s in steps] == STEP_IDS
        for planned in steps:
            wall = planned.due_at.astimezone(NEW_YORK)
            assert 9 <= wall.hour < 17, f"{planned.step.id} at {wall} (enrolled {enrolled})"


def test_window_opening_after_dst_is_0900_local_not_0900_standard_time() -> None:
    saturday_night = local(NEW_YORK, 2026, 3, 7, 22, 0)  # EST; Monday is EDT
    upcoming = next_step(SCHEDULE, LeadState(saturday_night, "America/New_York"))
    assert upcoming is not None
    assert upcoming.due_at == datetime(2026, 3, 9, 13, 0, tzinfo=UTC)  # 09:00 EDT
    autumn = next_step(SCHEDULE, LeadState(local(NEW_YORK, 2026, 10, 31, 22, 0), None))
    assert autumn is not None  # a Chicago lead (the default zone) after the November change
    assert autumn.due_at == datetime(2026, 11, 2, 15, 0, tzinfo=UTC)  # 09:00 CST


@pytest.mark.parametrize(
    ("start", "end", "moment"),
    [("02:00", "03:00", "2026-03-08T06:30Z"), ("01:00", "02:30", "2026-03-08T07:10Z")],
    ids=["window-inside-the-gap", "window-ending-inside-the-gap"],
)
def test_window_touching_the_spring_gap_never_yields_a_time_outside_it(
    start: str, end: str, moment: str
) -> None:
    """On 8 March 2026 New York skips 02:00-03:00; the window must not spill past its hours."""
    schedule = make_schedule(window(start, end, list(WEEKDAYS)))
    opening = next_opening(datetime.fromisoformat(moment), schedule.send_window, NEW_YORK)
    assert inside(opening, schedule, NEW_YORK), opening.astimezone(NEW_YORK)
    assert opening == local(NEW_YORK, 2026, 3, 9, int(start[:2]), 0)


# -- catching up, editing the schedule, leaving the series --------------------------------


def test_catch_up_after_downtime_sends_one_step_then_waits_a_full_delay() -> None:
    enrolled = local("America/Chicago", 2026, 3, 2, 10, 0)
    first = enrolled
    now = first + 4 * WEEK  # the engine was down for four weeks
    lead = LeadState(enrolled, "America/Chicago", history=sent(("mechanisms", first)))
    due = next_step(SCHEDULE, lead)
    assert due is not None and due.step.id == "pain-types" and due.due_at <= now
    after = next_step(SCHEDULE, lead.with_sent("pain-types", now))
    assert after is not None and after.step.id == "process"
    assert after.due_at > now, "only one step may be due at a time"
    assert after.due_at == now + WEEK  # a full delay after the real send


def test_removed_step_is_skipped() -> None:
    def drop_pain_types(data: dict[str, Any]) -> None:
        data["steps"] = [s for s in data["steps"] if s["id"] != "pain-types"]

    schedule = make_schedule(drop_pain_types)
    first = local("America/Chicago", 2026, 3, 2, 10, 0)
    lead = LeadState(first, "America/Chicago", history=sent(("mechanisms", first)))
    upcoming = next_step(schedule, lead)
    assert upcoming is not None and upcoming.step.id == "process"
    assert upcoming.due_at == first + WEEK
    ids = [s.step.id for s in timeline(schedule, lead)]
    assert ids == ["process", "faqs", "booking"]


def add_extra_after_pain_types(data: dict[str, Any]) -> None:
    extra = dict(data["steps"][1], id="extra", subject="An extra email", delay="3d")
    data["steps"].insert(2, extra)


@pytest.mark.parametrize(
    ("passed", "expected"),
    [
        (["mechanisms"], ["pain-types", "extra", "process", "faqs", "booking"]),
        (["mechanisms", "pain-types"], ["extra", "process", "faqs", "booking"]),
        (["mechanisms", "pain-types", "process"], ["faqs", "booking"]),
    ],
    ids=["before-it", "just-before-it", "past-it"],
)
def test_added_step_reaches_only_leads_that_have_not_passed_it(
    passed: list[str], expected: list[str]
) -> None:
    schedule = make_schedule(add_extra_after_pain_types)
    start = local("America/Chicago", 2026, 3, 2, 10, 0)
    history = sent(*((step, start + i * WEEK) for i, step in enumerate(passed)))
    lead = LeadState(start, "America/Chicago", history=history)
    assert [s.step.id for s in timeline(schedule, lead)] == expected


def test_reordered_schedule_never_plans_a_step_twice() -> None:
    def process_last(data: dict[str, Any]) -> None:
        steps = data["steps"]
        steps.append(steps.pop(2))  # mechanisms, pain-types, faqs, booking, process

    schedule = make_schedule(process_last)
    start = local("America/Chicago", 2026, 3, 2, 10, 0)
    history = sent(("mechanisms", start), ("process", start + WEEK))  # the old order
    lead = LeadState(start, "America/Chicago", history=history)
    planned = [s.step.id for s in timeline(schedule, lead)]
    assert planned == [], "process was the furthest step passed and is now the last"
    moved_up = make_schedule()  # back to the shipped order: process is third again
    assert [s.step.id for s in timeline(moved_up, lead)] == ["faqs", "booking"]


def test_message_in_flight_plans_nothing() -> None:
    start = local("America/Chicago", 2026, 3, 2, 10, 0)
    history = (*sent(("mechanisms", start)), Attempt("pain-types", "sending", start + WEEK))
    lead = LeadState(start, "America/Chicago", history=history)
    assert next_step(SCHEDULE, lead) is None
    assert list(timeline(SCHEDULE, lead)) == []


@pytest.mark.parametrize("status", ["failed", "unknown"])
def test_failed_or_in_doubt_step_counts_as_passed(status: str) -> None:
    start = local("America/Chicago", 2026, 3, 2, 10, 0)
    doubt = start + timedelta(hours=1)
    lead = LeadState(start, "America/Chicago", history=(Attempt("mechanisms", status, doubt),))
    upcoming = next_step(SCHEDULE, lead)
    assert upcoming is not None and upcoming.step.id == "pain-types"
    assert upcoming.due_at == doubt + WEEK


# -- the property ------------------------------------------------------------------------

ZONES = [
    "America/New_York",
    "America/Los_Angeles",
    "America/Sao_Paulo",
    "Europe/London",
    "Europe/Berlin",
    "Asia/Tokyo",
    "Asia/Kolkata",
    "Australia/Sydney",
    "Pacific/Auckland",
    "Asia/Kathmandu",
    "Australia/Lord_Howe",
]


@st.composite
def windows(draw: st.DrawFn) -> tuple[time, time, list[str]]:
    """Quarter-hour bounds, so bounds can fall inside half-hour and whole-hour DST gaps."""
    start = draw(st.integers(0, 24 * 4 - 1))
    end = draw(st.integers(start + 1, 24 * 4))
    days = draw(st.lists(st.sampled_from(WEEKDAYS), min_size=1, max_size=7, unique=True))
    as_time = lambda q: time.max if q == 96 else time(*divmod(q * 15, 60))  # noqa: E731
    return as_time(start), as_time(end), days


@pytest.mark.slow
@settings(max_examples=300, deadline=None)
@given(
    enrolled=st.datetimes(datetime(2020, 1, 1), datetime(2035, 12, 31), timezones=st.just(UTC)),
    zone=st.sampled_from(ZONES),
    hours=windows(),
    delays=st.lists(st.integers(1, 20 * 24 * 60), min_size=4, max_size=4),
)
def test_timeline_property(enrolled: datetime, zone: str, hours, delays: list[int]) -> None:
    start, end, days = hours

    def change(data: dict[str, Any]) -> None:
        data["send_window"] = {
            "days": days,
            "start": start.strftime("%H:%M"),
            "end": "24:00" if end == time.max else end.strftime("%H:%M"),
        }
        for step, minutes in zip(data["steps"][1:], delays, strict=True):
            step["delay"] = f"{minutes}m"

    schedule = make_schedule(change)
    steps = list(timeline(schedule, LeadState(enrolled, zone)))
    assert [s.step.id for s in steps] == STEP_IDS
    assert [s.position for s in steps] == list(range(len(STEP_IDS)))
    previous = enrolled
    for planned in steps:
        assert inside(planned.due_at, schedule, ZoneInfo(zone)), planned
        assert planned.due_at >= previous + planned.step.delay
        previous = planned.due_at
