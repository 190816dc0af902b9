"""Closed days, holidays and the frequency cap through the real engine, over SMTP to the
catcher, with the clock moved by hand: nothing lands on a closed day, a capped email waits
and is never lost, another series' email counts against the cap at the last look, and
`run.py plan` says why an email goes when it does."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from campaign.model import PlannedDelivery, Sent, Start
from campaign.store import Store
from harness.engine import Campaign, open_campaign

CHICAGO = ZoneInfo("America/Chicago")
OTHER_SERIES = "sleep-better"
LEAD = ("ann@example.com", "Ann", "America/Chicago")


def chicago(*args: int) -> datetime:
    return datetime(*args, tzinfo=CHICAGO).astimezone(UTC)


@pytest.fixture
def campaign(tmp_path: Path) -> Iterator[Campaign]:
    with open_campaign(tmp_path) as campaign:
        yield campaign


def sent_steps(campaign: Campaign) -> list[tuple[str, datetime]]:
    """(step, sent at) of every sent delivery, any series, in the order they were sent."""
    sent = [
        (row["step_id"], datetime.fromisoformat(row["sent_at"]).replace(tzinfo=UTC))
        for row in campaign.deliveries("sent")
    ]
    return sorted(sent, key=lambda item: item[1])


def mailed_by_another_series(store: Store, lead_id: int, at: datetime) -> None:
    """A sent delivery of another campaign id to the lead, through the store's own queue."""
    with store.db.tx() as conn:
        store.queue.insert_planned(conn, lead_id, OTHER_SERIES, PlannedDelivery("night", at), at)
    (claim,) = store.queue.reserve(OTHER_SERIES, at, "other-worker", at, 1)
    assert store.queue.start(claim, at) is Start.GO
    store.queue.record_sent(Sent(claim, "<night@sleep.example.com>", at, None))


def test_a_closed_monday_moves_step_two_to_tuesday(campaign: Campaign) -> None:
    campaign.edit(lambda data: data.update(closed=[date(2026, 3, 9)]))
    monday = chicago(2026, 3, 2, 10, 0)
    campaign.enroll(monday, LEAD)
    assert campaign.send_due(monday).sent == 1
    assert campaign.pending()[("ann@example.com", "pain-types")] == chicago(2026, 3, 10, 9, 0)
    assert campaign.send_due(chicago(2026, 3, 9, 12, 0)).sent == 0  # the closed Monday
    assert campaign.send_due(chicago(2026, 3, 10, 9, 0)).sent == 1
    assert [step for step, _ in sent_steps(campaign)] == ["mechanisms", "pain-types"]


def test_a_us_illinois_holiday_is_skipped(campaign: Campaign) -> None:
    campaign.edit(lambda data: data.update(holidays={"country": "US", "subdivision": "IL"}))
    thursday = chicago(2026, 11, 19, 10, 0)
    campaign.enroll(thursday, LEAD)
    assert campaign.send_due(thursday).sent == 1
    # A week on is Thanksgiving (Thursday 26 November): the email goes on Friday.
    assert campaign.send_due(chicago(2026, 11, 26, 10, 0)).sent == 0
    assert campaign.pending()[("ann@example.com", "pain-types")] == chicago(2026, 11, 27, 9, 0)
    assert campaign.send_due(chicago(2026, 11, 27, 9, 0)).sent == 1


def daily_and_capped(data: dict[str, Any]) -> None:
    data["send_window"] = {"days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]}
    for step in data["steps"][1:]:
        step["delay"] = "1d"
    data["frequency_cap"] = {"max": 1, "per": "3d"}


def test_a_cap_spaces_daily_emails_three_days_apart_and_loses_none(campaign: Campaign) -> None:
    campaign.edit(daily_and_capped)
    start = chicago(2026, 3, 2, 10, 0)
    campaign.enroll(start, LEAD)
    for half_day in range(2 * 16):
        campaign.send_due(start + timedelta(hours=12 * half_day))
    sent = sent_steps(campaign)
    steps = [step.id for step in campaign.loaded().schedule.steps]
    assert [step for step, _ in sent] == steps  # every step, once, in order
    assert len(campaign.received()) == len(steps)
    gaps = [later - earlier for (_, earlier), (_, later) in zip(sent, sent[1:], strict=False)]
    assert all(timedelta(days=3) <= gap < timedelta(days=3, hours=12) for gap in gaps), gaps


def test_another_series_email_makes_the_next_one_wait(campaign: Campaign) -> None:
    campaign.edit(lambda data: data.update(frequency_cap={"max": 1, "per": "2d"}))
    monday = chicago(2026, 3, 2, 10, 0)
    (lead_id,) = campaign.enroll(monday, LEAD)
    assert campaign.send_due(monday).sent == 1
    sunday = chicago(2026, 3, 8, 12, 0)
    mailed_by_another_series(campaign.store, lead_id, sunday)
    due = campaign.pending()[("ann@example.com", "pain-types")]
    assert due == monday + timedelta(days=7)  # planned before the other series mailed her

    done = campaign.send_due_cli(due)  # the command says why nothing went
    assert "sent 0" in done.stdout and "held by the frequency cap 1" in done.stdout, done.stdout
    row = next(r for r in campaign.deliveries() if r["step_id"] == "pain-types")
    assert (row["status"], row["attempts"]) == ("pending", 0)  # no attempt spent
    assert campaign.pending()[("ann@example.com", "pain-types")] == sunday + timedelta(days=2)

    assert campaign.send_due(sunday + timedelta(days=2) - timedelta(minutes=1)).sent == 0
    assert campaign.send_due(sunday + timedelta(days=2)).sent == 1
    assert [step for step, _ in sent_steps(campaign)] == ["mechanisms", "night", "pain-types"]
    assert [subject for _, subject in campaign.received()][-1].startswith("Which kinds")


@pytest.mark.slow
def test_plan_says_why_an_email_waits_or_moved(campaign: Campaign) -> None:
    def rules(data: dict[str, Any]) -> None:
        data["closed"] = [date(2026, 3, 9)]
        data["frequency_cap"] = {"max": 1, "per": "2d"}

    campaign.edit(rules)
    monday = chicago(2026, 3, 2, 10, 0)
    _ann, bob = campaign.enroll(monday, LEAD, ("bob@example.com", "Bob", "America/Chicago"))
    assert campaign.send_due(monday).sent == 2
    mailed_by_another_series(campaign.store, bob, chicago(2026, 3, 8, 11, 0))

    out = campaign.cli("plan", "--now", "2026-03-08T18:00:00+00:00", "--until", "2026-03-11")
    rows = out.stdout.splitlines()
    (ann,) = [line for line in rows if "ann@example.com" in line]
    (bob,) = [line for line in rows if "bob@example.com" in line]
    assert ann.startswith("Tue 2026-03-10 14:00"), out.stdout
    assert "moved from Mon 9 Mar: closed" in ann, out.stdout
    assert bob.startswith("Tue 2026-03-10 16:00"), out.stdout
    assert "waits for the frequency cap: 1 per 2 days" in bob, out.stdout
