"""Closed days, public holidays and the frequency cap as planner rules: a few worked cases,
the schedule's errors for them, and properties over random schedules, zones, closed dates
and caps, with a lead driven through the series the way the dispatcher drives it."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from campaign.config.schedule import (
    WEEKDAYS,
    FrequencyCap,
    Schedule,
    ScheduleError,
    parse_schedule,
)
from campaign.model import DeliveryStatus, LeadState
from campaign.planner import (
    attempted,
    cap_allows,
    next_delivery,
    next_step,
    place,
    plan_fingerprint,
)
from harness.schedule import REPO

SHIPPED = yaml.safe_load((REPO / "schedules.yaml").read_text(encoding="utf-8"))
CHICAGO = ZoneInfo("America/Chicago")
ZONES = ("America/Chicago", "Europe/London", "Asia/Tokyo", "Australia/Sydney", "UTC")
DAY = timedelta(days=1)


def make_schedule(**settings_: Any) -> Schedule:
    data = copy.deepcopy(SHIPPED)
    data.update(settings_)
    return Schedule.model_validate(data)


def chicago(*args: int) -> datetime:
    return datetime(*args, tzinfo=CHICAGO).astimezone(UTC)


def local_day(moment: datetime, zone: ZoneInfo) -> date:
    return moment.astimezone(zone).date()


# -- worked cases --------------------------------------------------------------------------


def test_a_closed_monday_moves_the_step_to_tuesday_morning() -> None:
    schedule = make_schedule(closed=[date(2026, 3, 9)])
    lead = LeadState(chicago(2026, 3, 2, 10, 0), "America/Chicago").with_sent(
        "mechanisms", chicago(2026, 3, 2, 10, 0)
    )
    upcoming = next_step(schedule, lead)
    assert upcoming is not None
    assert upcoming.due_at == chicago(2026, 3, 10, 9, 0)
    assert upcoming.closed == (date(2026, 3, 9),)
    assert not upcoming.capped


def test_a_holiday_is_closed_in_the_leads_own_zone() -> None:
    schedule = make_schedule(holidays={"country": "us", "subdivision": "IL"})
    assert schedule.closed_reason(date(2026, 11, 26)) == "closed (Thanksgiving Day)"
    assert schedule.closed_reason(date(2026, 11, 25)) is None
    # Thursday 26 November 08:00 in Tokyo is still Wednesday in Chicago, but it is
    # Thanksgiving in Tokyo's calendar day: a Tokyo lead's email goes on Friday.
    sent = datetime(2026, 11, 19, 10, 0, tzinfo=ZoneInfo("Asia/Tokyo"))
    lead = LeadState(sent, "Asia/Tokyo").with_sent("mechanisms", sent)
    upcoming = next_step(schedule, lead)
    assert upcoming is not None
    assert upcoming.due_at == datetime(2026, 11, 27, 9, 0, tzinfo=ZoneInfo("Asia/Tokyo"))
    assert upcoming.closed == (date(2026, 11, 26),)


def test_the_cap_holds_an_email_until_the_window_has_room_then_the_send_window() -> None:
    schedule = make_schedule(frequency_cap={"max": 1, "per": "2d"})
    friday = chicago(2026, 3, 6, 16, 30)
    # Another series mailed the lead on Friday at 16:30; its next email, due Monday 09:00,
    # may go from Sunday 16:30, which is outside the window: Monday 09:00 it is, uncapped.
    assert place(schedule, CHICAGO, chicago(2026, 3, 9, 9, 0), [friday]).capped is False
    placed = place(schedule, CHICAGO, chicago(2026, 3, 6, 10, 0), [chicago(2026, 3, 5, 12, 0)])
    assert placed.capped
    assert placed.at == chicago(2026, 3, 9, 9, 0)  # free Saturday 12:00: the next opening


def test_a_window_holds_at_most_max_even_with_later_emails_known() -> None:
    cap = FrequencyCap(max=2, per=timedelta(days=2))
    t = datetime(2026, 3, 2, tzinfo=UTC)
    assert cap_allows(cap, [t], t) == t  # two at once fit a cap of 2
    assert cap_allows(cap, [t, t + DAY], t + DAY) == t + 2 * DAY
    # An email already known for later counts too: between two, only outside both windows.
    assert cap_allows(cap, [t, t + 3 * DAY], t + DAY) == t + DAY
    assert cap_allows(cap, [t, t, t + 3 * DAY], t + DAY) == t + 2 * DAY
    assert cap_allows(cap, [t, t, t + 3 * DAY, t + 3 * DAY], t + DAY) == t + 5 * DAY


def test_the_cap_counts_this_series_as_the_dispatcher_plans_the_next_step() -> None:
    schedule = make_schedule(frequency_cap={"max": 1, "per": "10d"})
    sent = chicago(2026, 3, 2, 10, 0)
    lead = attempted(LeadState(sent, "America/Chicago"), "mechanisms", DeliveryStatus.SENT, sent)
    planned = next_delivery(schedule, lead)
    assert planned is not None and planned.due_at == sent + timedelta(days=10)  # 11:00 CDT
    # A failed email reached no mailbox: the next step waits only its delay.
    failed = attempted(
        LeadState(sent, "America/Chicago"), "mechanisms", DeliveryStatus.FAILED, sent
    )
    assert failed.mailed == ()


def test_a_schedule_without_the_rules_keeps_its_plan_fingerprint() -> None:
    plain = make_schedule()
    assert plan_fingerprint(make_schedule(closed=[])) == plan_fingerprint(plain)
    for rules in (
        {"closed": [date(2026, 12, 25)]},
        {"holidays": {"country": "US"}},
        {"frequency_cap": {"max": 1, "per": "2d"}},
    ):
        assert plan_fingerprint(make_schedule(**rules)) != plan_fingerprint(plain), rules


@pytest.mark.parametrize(
    ("setting", "offset", "message"),
    [
        ("closed:\n  - 2026-12-25\n  - 2026-02-30", 2, "closed[1]: '2026-02-30' is not a date"),
        ("closed: [tomorrow]", 0, "closed[0]: 'tomorrow' is not a date; write it like 2026-12-25"),
        ("holidays:\n  country: XX", 1, "holidays.country: 'XX' is not a country"),
        ("holidays:\n  country: US\n  subdivision: ZZ", 2, "'ZZ' is not a subdivision of US"),
        ("frequency_cap:\n  max: 0\n  per: 2d", 1, "frequency_cap.max must be at least 1"),
        ("frequency_cap:\n  max: 1\n  per: 2x", 2, "frequency_cap.per: '2x' is not a delay"),
    ],
)
def test_a_bad_rule_is_a_schedule_error_at_its_line(
    setting: str, offset: int, message: str
) -> None:
    text = (REPO / "schedules.yaml").read_text(encoding="utf-8")
    at = text.index("\nsteps:") + 1
    broken = text[:at] + setting + "\n" + text[at:]
    with pytest.raises(ScheduleError) as caught:
        parse_schedule(broken, "schedules.yaml", REPO)
    (issue,) = caught.value.issues
    assert message in str(issue), str(issue)
    assert issue.line == text[:at].count("\n") + 1 + offset, str(issue)


def test_a_year_with_no_open_day_is_refused(tmp_path: Path) -> None:
    every_friday = [date(2026, 1, 2) + timedelta(weeks=n) for n in range(53)]
    data = copy.deepcopy(SHIPPED)
    data["send_window"] = {"days": ["fri"], "start": "09:00", "end": "17:00"}
    data["closed"] = every_friday
    with pytest.raises(ScheduleError) as caught:
        parse_schedule(yaml.safe_dump(data, sort_keys=False), "schedules.yaml", REPO)
    assert "from 2026-01-02 every day of the send window is closed" in str(caught.value)
    data["closed"] = every_friday[:40]  # still a long closure, but it ends
    parse_schedule(yaml.safe_dump(data, sort_keys=False), "schedules.yaml", REPO)


# -- properties ----------------------------------------------------------------------------

START = datetime(2026, 3, 1, tzinfo=UTC)


@st.composite
def schedules(draw: st.DrawFn) -> Schedule:
    data = copy.deepcopy(SHIPPED)
    days = draw(st.lists(st.sampled_from(WEEKDAYS), min_size=1, max_size=7, unique=True))
    start = draw(st.integers(0, 22))
    end = draw(st.integers(start + 1, 24))
    data["send_window"] = {
        "days": days,
        "start": f"{start:02d}:00",
        "end": "24:00" if end == 24 else f"{end:02d}:00",
    }
    count = draw(st.integers(1, 5))
    steps = data["steps"][:count]
    for step in steps[1:]:
        step["delay"] = f"{draw(st.integers(1, 240))}h"
    data["steps"] = steps
    data["timezone"] = draw(st.sampled_from(ZONES))
    data["closed"] = draw(
        st.lists(st.dates(date(2026, 3, 1), date(2026, 6, 30)), max_size=40, unique=True)
    )
    if draw(st.booleans()):
        data["holidays"] = draw(
            st.sampled_from([{"country": "US", "subdivision": "IL"}, {"country": "GB"}])
        )
    if draw(st.booleans()):
        data["frequency_cap"] = {
            "max": draw(st.integers(1, 3)),
            "per": f"{draw(st.integers(1, 120))}h",
        }
    return Schedule.model_validate(data)


def others(draw: st.DrawFn, schedule: Schedule) -> list[datetime]:
    """Another series' emails to the lead, among themselves within the cap."""
    cap = schedule.frequency_cap
    spacing = cap.per if cap is not None else timedelta(hours=1)
    gaps = draw(st.lists(st.integers(0, 400), max_size=5))
    out, at = [], START
    for gap in gaps:
        at += spacing + timedelta(hours=gap)
        out.append(at)
    return out


def assert_lands_well(schedule: Schedule, zone: ZoneInfo, moments: Sequence[datetime]) -> None:
    window = schedule.send_window
    for moment in moments:
        wall = moment.astimezone(zone)
        assert wall.weekday() in window.weekdays, wall
        assert window.start <= wall.time() < window.end, wall
        assert not schedule.is_closed(wall.date()), wall


def assert_within_cap(schedule: Schedule, moments: Sequence[datetime]) -> None:
    cap = schedule.frequency_cap
    if cap is None:
        return
    ordered = sorted(moments)
    for first in ordered:
        inside = [m for m in ordered if first <= m < first + cap.per]
        assert len(inside) <= cap.max, (first, inside, cap)


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_the_planner_never_lands_on_a_closed_day_nor_past_the_cap(data: st.DataObject) -> None:
    schedule = data.draw(schedules())
    zone_name = data.draw(st.sampled_from(ZONES))
    zone = ZoneInfo(zone_name)
    enrolled = START + timedelta(minutes=data.draw(st.integers(0, 60 * 24 * 30)))
    theirs = others(data.draw, schedule)
    state = LeadState(enrolled, zone_name, mailed=tuple(theirs))
    ours: list[tuple[str, datetime]] = []
    while (upcoming := next_step(schedule, state)) is not None:
        assert upcoming.due_at >= (ours[-1][1] if ours else enrolled)
        ours.append((upcoming.step.id, upcoming.due_at))
        state = attempted(state, upcoming.step.id, DeliveryStatus.SENT, upcoming.due_at)
        assert len(ours) <= len(schedule.steps)
    assert [step for step, _ in ours] == [step.id for step in schedule.steps]
    assert_lands_well(schedule, zone, [at for _, at in ours])
    assert_within_cap(schedule, [at for _, at in ours] + theirs)


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_two_series_sent_as_the_dispatcher_sends_never_break_the_cap(
    data: st.DataObject,
) -> None:
    """Each series plans from its own emails only (as `next_after` does); at the moment a
    row falls due, the last look counts every series' emails so far and, when the cap holds
    the lead back, moves the row where `place` says. Nothing is skipped, doubled or lost."""
    schedule = data.draw(schedules())
    zone_name = data.draw(st.sampled_from(ZONES))
    zone = ZoneInfo(zone_name)
    joined = [START + timedelta(minutes=data.draw(st.integers(0, 60 * 24 * 20))) for _ in range(2)]
    states = [LeadState(at, zone_name) for at in joined]
    pending = [next_delivery(schedule, state) for state in states]
    sent: list[tuple[int, str, datetime]] = []
    held = 0
    for _turn in range(200):
        waiting = [(p.due_at, i) for i, p in enumerate(pending) if p is not None]
        if not waiting:
            break
        now, series = min(waiting)
        row = pending[series]
        assert row is not None
        cap = schedule.frequency_cap
        recent = [at for _, _, at in sent if cap is not None and at > now - cap.per]
        if cap is not None and len(recent) >= cap.max:
            later = place(schedule, zone, now, recent).at
            assert later > now
            pending[series] = type(row)(row.step_id, later)
            held += 1
            continue
        sent.append((series, row.step_id, now))
        states[series] = attempted(states[series], row.step_id, DeliveryStatus.SENT, now)
        pending[series] = next_delivery(schedule, states[series])
    else:
        pytest.fail("the series never finished")
    for series in range(2):
        steps = [step for s, step, _ in sent if s == series]
        assert steps == [step.id for step in schedule.steps], (series, steps, held)
    assert_lands_well(schedule, zone, [at for _, _, at in sent])
    assert_within_cap(schedule, [at for _, _, at in sent])
