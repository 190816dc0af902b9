"""Pausing and resuming a lead or a whole series, through the real `run.py` in subprocesses
with the engine sending over SMTP to the catcher, on a clock moved by hand: a paused lead or
series is sent nothing, by any worker, even a row reserved before the pause; a resume after
weeks sends one step at the next run and the next waits its full delay, never a burst."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from campaign.model import Start
from harness.clock import NO_HANG, iso, wait_for
from harness.db import read_rows
from harness.engine import Campaign, open_campaign
from harness.smtp import ControlledHandler

SERIES = "acupuncture-back-pain"
ANN = "ann@example.com"
BOB = "bob@example.com"
DAY0 = datetime(2026, 3, 2, 16, 0, tzinfo=UTC)  # Monday, 10:00 in Chicago
DAY = timedelta(days=1)
WEEK = timedelta(days=7)
pytestmark = pytest.mark.slow  # every test runs `run.py` in subprocesses


def started(campaign: Campaign, *emails: str) -> None:
    """Enrol the leads (Chicago) at DAY0 and send them step 1 through `send-due`."""
    campaign.enroll(DAY0, *((email, email[:3].title(), "America/Chicago") for email in emails))
    campaign.send_due_cli(DAY0)
    assert sorted(campaign.received()) == sorted(
        (email, campaign.loaded().schedule.steps[0].subject) for email in emails
    )


def steps_sent(campaign: Campaign, since: int) -> list[tuple[str, str]]:
    """(recipient, step id) of the messages caught after the first `since`."""
    by_subject = {step.subject: step.id for step in campaign.loaded().schedule.steps}
    return [(to, by_subject[subject]) for to, subject in campaign.received()[since:]]


def audit(campaign: Campaign) -> list[tuple[str, str, str]]:
    rows = read_rows(campaign.db_path, "SELECT action, target, detail FROM audit_log ORDER BY id")
    return [(row["action"], row["target"], row["detail"]) for row in rows]


def enrollment(campaign: Campaign, email: str) -> str:
    (row,) = read_rows(
        campaign.db_path,
        "SELECT e.state FROM enrollments e JOIN leads l ON l.id = e.lead_id WHERE l.email = ?",
        (email,),
    )
    return str(row["state"])


@pytest.fixture
def campaign(tmp_path: Path) -> Campaign:  # type: ignore[misc]
    with open_campaign(tmp_path) as opened:
        yield opened


def test_a_paused_lead_is_sent_nothing_while_the_other_lead_goes_on(campaign: Campaign) -> None:
    started(campaign, ANN, BOB)
    out = campaign.cli("leads", "pause", "Bob@Example.com", "--now", iso(DAY0 + DAY)).stdout
    assert out.strip() == (
        f"paused {BOB} in {SERIES}: 1 queued email(s) taken back, nothing is sent until "
        f"`leads resume {BOB}`"
    )
    assert enrollment(campaign, BOB) == "paused"
    assert list(campaign.pending()) == [(ANN, "pain-types")]
    show = campaign.cli("leads", "show", BOB, "--now", iso(DAY0 + DAY)).stdout
    assert f"{SERIES}: enrolled 2026-03-02 16:00Z (paused)" in show
    assert f"next: nothing while paused (`leads resume {BOB}`)" in show
    again = campaign.cli("leads", "pause", BOB, "--now", iso(DAY0 + DAY)).stdout
    assert again.strip() == f"{BOB} is already paused in {SERIES}: nothing changed"
    # The dry runs agree: nothing is planned for Bob while he is paused.
    plan = campaign.cli("plan", "--now", iso(DAY0 + DAY)).stdout
    assert ANN in plan and BOB not in plan
    assert "1 lead(s) are paused" in plan
    listed = json.loads(campaign.cli("leads", "list", "--json").stdout)
    assert {lead["email"]: lead["next"] is None for lead in listed["leads"]} == {
        ANN: False,
        BOB: True,
    }

    # A schedule edit replans every lead in the series, but not the paused one.
    campaign.edit(lambda data: data["steps"][1].update(delay="6d"))
    run = campaign.send_due_cli(DAY0 + WEEK)
    assert steps_sent(campaign, 2) == [(ANN, "pain-types")]
    assert run.stdout.startswith("sent 1,")
    assert [email for email, _ in campaign.pending()] == [ANN]
    status = json.loads(campaign.cli("status", "--json").stdout)
    assert status["paused"] == {"series_since": None, "leads": 1}
    assert "paused leads: 1" in campaign.cli("status").stdout

    (entry,) = [row for row in audit(campaign) if row[0] == "pause"]
    assert (
        entry[1].startswith("lead ")
        and entry[2] == f"series {SERIES}: 1 queued email(s) taken back"
    )


def test_a_lead_resumed_after_three_weeks_gets_one_step_then_waits_its_full_delay(
    campaign: Campaign,
) -> None:
    started(campaign, ANN, BOB)
    campaign.cli("leads", "pause", BOB, "--now", iso(DAY0 + DAY))
    for week in (1, 2, 3):  # Ann goes on, Bob is sent nothing
        campaign.send_due_cli(DAY0 + week * WEEK)
    assert [to for to, _ in steps_sent(campaign, 2)] == [ANN, ANN, ANN]

    resumed_at = DAY0 + 3 * WEEK + DAY  # Tuesday 24 March
    out = campaign.cli("leads", "resume", BOB, "--now", iso(resumed_at)).stdout
    # Its delay counts from the last email actually sent (2 March): overdue, so next run.
    assert out.strip() == (
        f"resumed {BOB} in {SERIES}: next pain-types at the next run (due 2026-03-09 16:00Z)"
    )
    assert enrollment(campaign, BOB) == "active"
    count = len(campaign.received())
    campaign.send_due_cli(resumed_at)
    assert steps_sent(campaign, count) == [(BOB, "pain-types")]  # one, not the three missed
    campaign.send_due_cli(resumed_at + timedelta(hours=1))
    assert steps_sent(campaign, count) == [(BOB, "pain-types")]
    # The next step waits its full week from that send.
    assert campaign.pending()[(BOB, "process")] == resumed_at + WEEK
    campaign.send_due_cli(resumed_at + WEEK - timedelta(minutes=1))
    assert (BOB, "process") not in steps_sent(campaign, count)
    campaign.send_due_cli(resumed_at + WEEK)
    assert (BOB, "process") in steps_sent(campaign, count)

    actions = [(action, detail) for action, _, detail in audit(campaign)]
    assert ("resume", f"series {SERIES}: next pain-types due 2026-03-09 16:00Z") in actions
    not_paused = campaign.cli("leads", "resume", BOB).stdout
    assert not_paused.strip() == f"{BOB} is not paused in {SERIES}: nothing changed"


def test_a_paused_series_sends_nothing_from_any_worker_and_resumes_without_a_burst(
    campaign: Campaign,
) -> None:
    started(campaign, ANN, BOB)
    out = campaign.cli("series", "pause", SERIES, "--now", iso(DAY0 + DAY)).stdout
    assert out.strip() == (
        f"paused series {SERIES}: nothing more is sent; 2 queued email(s) wait for "
        f"`series resume {SERIES}`"
    )
    for week in (1, 2):
        run = campaign.send_due_cli(DAY0 + week * WEEK)
        assert run.stdout.startswith("sent 0,")
        assert f"paused: series {SERIES} is paused since 2026-03-03 16:00Z" in run.stdout
        other = campaign.send_due(DAY0 + week * WEEK + timedelta(minutes=5))  # another worker
        assert other.sent == 0 and other.paused is not None and "paused since" in other.paused
    assert len(campaign.received()) == 2
    assert set(campaign.pending()) == {(ANN, "pain-types"), (BOB, "pain-types")}  # still queued
    status = campaign.cli("status")
    assert f"series {SERIES} is paused since 2026-03-03 16:00Z" in status.stdout
    snapshot = json.loads(campaign.cli("status", "--json").stdout)
    assert snapshot["paused"] == {"series_since": "2026-03-03T16:00:00+00:00", "leads": 0}
    again = campaign.cli("series", "pause", SERIES).stdout
    assert again.strip() == (
        f"series {SERIES} is already paused since 2026-03-03 16:00Z: nothing changed"
    )

    resumed_at = DAY0 + 3 * WEEK
    out = campaign.cli("series", "resume", SERIES, "--now", iso(resumed_at)).stdout
    assert out.startswith(f"resumed series {SERIES} (paused since 2026-03-03 16:00Z): 2 queued")
    campaign.send_due_cli(resumed_at)
    assert sorted(steps_sent(campaign, 2)) == [(ANN, "pain-types"), (BOB, "pain-types")]
    campaign.send_due(resumed_at + timedelta(hours=1))  # the other worker: nothing more
    assert len(campaign.received()) == 4
    assert campaign.pending() == {
        (ANN, "process"): resumed_at + WEEK,
        (BOB, "process"): resumed_at + WEEK,
    }
    assert [(a, t) for a, t, _ in audit(campaign)] == [
        ("pause", f"series {SERIES}"),
        ("resume", f"series {SERIES}"),
    ]
    assert campaign.cli("series", "resume", SERIES).stdout.strip() == (
        f"series {SERIES} is not paused: nothing changed"
    )


def test_a_series_paused_mid_run_stops_that_run_after_the_message_in_flight(
    tmp_path: Path,
) -> None:
    """`send-due` holds five leads' reservation; the series is paused while its second
    message waits for the server's answer: the rest of that reservation is not sent."""
    emails = [f"lead{n}@example.com" for n in range(5)]
    with open_campaign(tmp_path, ControlledHandler(hold_at=2)) as campaign:
        campaign.enroll(DAY0, *((email, "", "America/Chicago") for email in emails))
        worker = campaign.popen("send-due", "--now", iso(DAY0))
        try:
            wait_for(campaign.handler.held.is_set, NO_HANG, "the second message held")
            campaign.cli("series", "pause", SERIES, "--now", iso(DAY0))
            campaign.handler.release.set()
            out, err = worker.communicate(timeout=NO_HANG)
        finally:
            if worker.poll() is None:
                worker.kill()
                worker.communicate()
        assert worker.returncode == 0, err
        assert out.startswith("sent 2,"), out
        assert f"paused: series {SERIES} is paused since" in out
        assert len(campaign.received()) == 2
        # The three not sent stay queued; the two sent have their next step planned.
        waiting = sorted(step for _, step in campaign.pending())
        assert waiting == ["mechanisms"] * 3 + ["pain-types"] * 2
        assert campaign.status_counts() == {"sent": 2, "pending": 5}


@pytest.mark.parametrize("what", ["lead", "series"])
def test_a_pause_between_reserve_and_start_sends_nothing(campaign: Campaign, what: str) -> None:
    """A worker reserved the row before the pause: its start finds the row no longer its
    own, so the message is never handed to SMTP."""
    campaign.enroll(DAY0, (ANN, "Ann", "America/Chicago"))
    queue = campaign.store.queue
    (claim,) = queue.reserve(SERIES, DAY0, "worker-a", DAY0, 16)
    if what == "lead":
        campaign.cli("leads", "pause", ANN, "--now", iso(DAY0))
    else:
        campaign.cli("series", "pause", SERIES, "--now", iso(DAY0))
    assert queue.start(claim, DAY0) is Start.GONE
    assert campaign.deliveries("sending") == [] and campaign.deliveries("sent") == []
    assert queue.reserve(SERIES, DAY0, "worker-b", DAY0, 16) == []
    if what == "series":
        assert [row["status"] for row in campaign.deliveries()] == ["pending"]  # still queued
    else:
        assert campaign.deliveries() == []  # taken back; the resume plans it again


def test_wrong_series_and_unknown_lead_are_refused_plainly(campaign: Campaign) -> None:
    campaign.enroll(DAY0, (ANN, "Ann", "America/Chicago"))
    for args in (("series", "pause", "sleep"), ("leads", "pause", ANN, "--series", "sleep")):
        result = campaign.cli(*args, expect=2)
        assert f"no series 'sleep' in the schedule; its series: {SERIES}" in result.stderr
    result = campaign.cli("leads", "resume", "nobody@example.com", expect=1)
    assert "no lead nobody@example.com in the database" in result.stderr
    assert audit(campaign) == []


def test_a_lead_paused_while_its_email_is_in_flight_gets_nothing_after_it(tmp_path: Path) -> None:
    """The email in flight at the pause goes out and plans the next step as it ends; that
    row waits, unsent, until the lead resumes."""
    with open_campaign(tmp_path, ControlledHandler(hold_at=1)) as campaign:
        campaign.enroll(DAY0, (BOB, "Bob", "America/Chicago"))
        worker = campaign.popen("send-due", "--now", iso(DAY0))
        try:
            wait_for(campaign.handler.held.is_set, NO_HANG, "Bob's first email held")
            out = campaign.cli("leads", "pause", BOB, "--now", iso(DAY0)).stdout
            campaign.handler.release.set()
            worker.communicate(timeout=NO_HANG)
        finally:
            if worker.poll() is None:
                worker.kill()
                worker.communicate()
        assert "0 queued email(s) taken back" in out
        assert list(campaign.pending()) == [(BOB, "pain-types")]  # planned by the send
        campaign.send_due_cli(DAY0 + 2 * WEEK)
        assert steps_sent(campaign, 0) == [(BOB, "mechanisms")]
        campaign.cli("leads", "resume", BOB, "--now", iso(DAY0 + 2 * WEEK))
        campaign.send_due_cli(DAY0 + 2 * WEEK)
        assert steps_sent(campaign, 0) == [(BOB, "mechanisms"), (BOB, "pain-types")]
