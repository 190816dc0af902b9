"""Sending over real SMTP: the right emails, at the right times, once each, with the right
headers and the bodies the preview shows; two senders at once; leads who leave; schedule edits."""

from __future__ import annotations

import re
import shutil
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any

import pytest

from campaign.model import PlannedDelivery, Start
from campaign.rendering.renderer import LeadView, Renderer
from campaign.sending.transport import SmtpTransport
from harness.clock import iso
from harness.engine import Campaign, open_campaign, subjects
from harness.mail import BASE_URL, html_part, signer, step_of, text_part, without_urls

STEPS = ("mechanisms", "pain-types", "process", "faqs", "booking")
DAY0 = datetime(2026, 3, 2, 15, 30, tzinfo=UTC)  # Monday; inside every cohort lead's window
WEEK = timedelta(days=7)
COHORT = (
    ("ann@example.com", "Ann", "America/Chicago"),
    ("bob@example.com", "Bob", "America/New_York"),
    ("cem@example.com", "Cem", "Europe/London"),
    ("dee@example.com", "", None),  # no zone: the schedule's America/Chicago
)
WES = ("wes@example.com", "Wes", "America/Chicago")
WES_SIGNUP = datetime(2026, 3, 7, 15, 0, tzinfo=UTC)  # Saturday 09:00 in Chicago


def every(step: str, *leads: tuple[str, str, str | None]) -> set[tuple[str, str]]:
    return {(lead[0], step) for lead in leads}


@dataclass(frozen=True)
class Run:
    at: datetime
    cli: bool
    expected: set[tuple[str, str]]
    why: str


CALENDAR = (
    Run(DAY0, True, every("mechanisms", *COHORT), "day 0: the first email on signup"),
    Run(DAY0 + timedelta(minutes=30), False, set(), "again the same day: nothing twice"),
    Run(datetime(2026, 3, 7, 15, 30, tzinfo=UTC), False, set(), "Saturday: Wes waits"),
    Run(datetime(2026, 3, 9, 8, 0, tzinfo=UTC), False, set(), "03:00 in Chicago: Wes waits"),
    Run(DAY0 + WEEK, False, every("pain-types", *COHORT) | every("mechanisms", WES), "day 7"),
    Run(DAY0 + 2 * WEEK, False, every("process", *COHORT) | every("pain-types", WES), "day 14"),
    Run(DAY0 + 3 * WEEK, False, every("faqs", *COHORT) | every("process", WES), "day 21"),
    Run(DAY0 + 4 * WEEK, False, every("booking", *COHORT) | every("faqs", WES), "day 28"),
    Run(datetime(2026, 4, 4, 15, 30, tzinfo=UTC), False, set(), "Saturday again"),
    Run(datetime(2026, 4, 6, 15, 30, tzinfo=UTC), False, every("booking", WES), "Wes is done"),
    Run(datetime(2026, 5, 4, 15, 30, tzinfo=UTC), False, set(), "the series is over"),
)


@dataclass
class Replay:
    campaign: Campaign
    arrived: list[set[tuple[str, str]]]  # (recipient, step) per calendar run
    outputs: list[str]


@pytest.fixture(scope="module")
def replay(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """Replay the whole calendar once; the tests below examine what arrived."""
    with open_campaign(tmp_path_factory.mktemp("replay")) as campaign:
        campaign.enroll(DAY0, *COHORT)
        arrived, outputs = [], []
        for run in CALENDAR:
            if run.at > WES_SIGNUP and not campaign.store.leads.lead_by_email(WES[0]):
                campaign.enroll(WES_SIGNUP, WES)
            before = len(campaign.catcher.messages)
            if run.cli:
                outputs.append(campaign.send_due_cli(run.at).stdout)
            else:
                report = campaign.send_due(run.at)
                assert report.ok and not report.errors, report
            new = campaign.catcher.messages[before:]
            arrived.append({(c.recipients[0], step_of(c.message)) for c in new})
            assert len(new) == len(arrived[-1]), f"{run.why}: a message arrived twice"
        yield Replay(campaign, arrived, outputs)


@pytest.mark.parametrize("index", range(len(CALENDAR)), ids=[r.why for r in CALENDAR])
def test_each_run_sends_exactly_what_is_due(replay: Replay, index: int) -> None:
    assert replay.arrived[index] == CALENDAR[index].expected


def test_cli_runs_report_what_they_sent(replay: Replay) -> None:
    sent = [len(run.expected) for run in CALENDAR if run.cli]
    assert [re.search(r"sent (\d+)", out)[1] for out in replay.outputs] == [str(n) for n in sent]


def test_every_lead_gets_the_series_in_order_each_step_once(replay: Replay) -> None:
    received = replay.campaign.received()
    assert max(Counter(received).values()) == 1
    loaded = replay.campaign.loaded()
    for email, _, _ in (*COHORT, WES):
        got = [subject for rcpt, subject in received if rcpt == email]
        assert got == subjects(loaded, *STEPS), email
    assert replay.campaign.status_counts() == {"sent": 25}


def test_headers(replay: Replay) -> None:
    loaded = replay.campaign.loaded()
    sender = loaded.schedule.sender
    message_ids = set()
    times = {(email, step): run.at for run in CALENDAR for email, step in run.expected}
    for caught in replay.campaign.catcher.messages:
        message, rcpt, step = caught.message, caught.recipients[0], step_of(caught.message)
        assert caught.sender == "care@evergreen-acupuncture.example.com"
        assert str(message["From"]) == sender.from_
        assert [a.addr_spec for a in message["To"].addresses] == [rcpt]
        assert str(message["Subject"]) == loaded.schedule.steps_by_id[step].subject
        assert parsedate_to_datetime(str(message["Date"])) == times[(rcpt, step)]
        message_id = str(message["Message-ID"])
        assert re.fullmatch(r"<[^<>@\s]+@evergreen-acupuncture\.example\.com>", message_id)
        message_ids.add(message_id)
        unsubscribe = str(message["List-Unsubscribe"])
        assert re.search(rf"<{re.escape(BASE_URL)}/u/[\w.-]+>", unsubscribe), unsubscribe
        assert f"<mailto:{sender.reply_to}?subject=unsubscribe>" in unsubscribe
        assert str(message["List-Unsubscribe-Post"]) == "List-Unsubscribe=One-Click"
    assert len(message_ids) == 25, "every message needs its own Message-ID"


def test_bodies_match_what_the_renderer_previews(replay: Replay) -> None:
    campaign = replay.campaign
    renderer = Renderer(campaign.loaded())
    signing = signer()
    campaign_id = renderer.schedule.campaign.id
    for caught in campaign.catcher.messages:
        message, step = caught.message, step_of(caught.message)
        lead = campaign.store.leads.lead_by_email(caught.recipients[0])
        assert lead is not None
        view = LeadView.of(lead)
        links = signing.links(lead.id, campaign_id, step)
        expected = renderer.render(step, view, links, now=DAY0)
        text = text_part(message)
        assert without_urls(text) == without_urls(expected.text), (lead.email, step)
        assert without_urls(html_part(message)) == without_urls(expected.html)
        assert links.unsubscribe in text  # the lead's own link, not a neighbour's
        assert f"Hi {lead.first_name or 'there'}," in text


# -- two senders at once ---------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("handler", [{"rendezvous": 2}], indirect=True, ids=["gathered"])
def test_two_send_due_processes_at_once_send_each_email_once(campaign: Campaign) -> None:
    leads = [(f"lead{i:02d}@example.com", f"Lead{i}", "America/Chicago") for i in range(60)]
    campaign.enroll(DAY0, *leads)
    workers = [campaign.popen("send-due", "--now", iso(DAY0)) for _ in range(2)]
    outputs = [worker.communicate(timeout=60) for worker in workers]
    for worker, (out, err) in zip(workers, outputs, strict=True):
        assert worker.returncode == 0, f"{out}\n{err}"
    assert campaign.handler.met.is_set(), "the two senders never worked at the same time"
    counts = Counter(campaign.received())
    assert set(counts.values()) == {1}
    assert set(counts) == {
        (email, subjects(campaign.loaded(), "mechanisms")[0]) for email, _, _ in leads
    }
    per_worker = [int(re.search(r"sent (\d+)", out)[1]) for out, _ in outputs]
    assert sum(per_worker) == 60 and min(per_worker) > 0, per_worker
    assert campaign.status_counts() == {"sent": 60, "pending": 60}


# -- leads who leave -----------------------------------------------------------------------


@pytest.mark.parametrize("status", ["unsubscribed", "bounced", "converted"])
def test_lead_who_left_gets_nothing_more(campaign: Campaign, status: str) -> None:
    stays, leaves = campaign.enroll(
        DAY0, ("stay@example.com", "Stay", None), ("leave@example.com", "Leave", None)
    )
    assert campaign.send_due(DAY0).sent == 2
    campaign.store.leads.set_lead_status(leaves, status, "test", DAY0 + timedelta(days=1))
    for week in range(1, 6):
        campaign.send_due(DAY0 + week * WEEK)
    got = Counter(rcpt for rcpt, _ in campaign.received())
    assert got == {"stay@example.com": 5, "leave@example.com": 1}
    rows = {(r["email"], r["step_id"]): r["status"] for r in campaign.deliveries()}
    assert rows[("leave@example.com", "pain-types")] == "cancelled"
    assert not [k for k, v in rows.items() if k[0] == "leave@example.com" and v == "pending"]


def test_unsubscribe_after_the_claim_cancels_the_send(campaign: Campaign) -> None:
    """A lead who leaves while their email waits in a connection's reservation gets nothing."""
    _, late = campaign.enroll(
        DAY0, ("first@example.com", "First", None), ("late@example.com", "Late", None)
    )
    seen: list[str] = []

    def unsubscribe_late(_message: object) -> None:  # the first email is arriving right now
        (row,) = [r for r in campaign.deliveries() if r["email"] == "late@example.com"]
        seen.append(row["status"])
        campaign.store.leads.set_lead_status(late, "unsubscribed", "clicked the link", DAY0)

    campaign.handler.on_message = unsubscribe_late
    report = campaign.send_due(DAY0)
    assert seen == ["claimed"], "the second email was reserved before the lead left"
    assert report.sent == 1 and report.cancelled == 1, report
    assert [rcpt for rcpt, _ in campaign.received()] == ["first@example.com"]
    assert {r["email"]: r["status"] for r in campaign.deliveries() if r["attempts"]} == {
        "first@example.com": "sent"
    }
    assert campaign.deliveries("cancelled")[0]["email"] == "late@example.com"
    campaign.handler.on_message = None
    assert campaign.send_due(DAY0 + WEEK).sent == 1


def test_a_lead_whose_data_breaks_a_template_fails_alone_and_moves_on(
    campaign: Campaign,
) -> None:
    """ "Bob" has no fourth letter: his step-1 subject cannot be rendered. That one message
    fails; the run goes on, the next run too, and Bob still gets step 2 on time."""
    campaign.edit(lambda data: data["steps"][0].update(subject="Hi {{ lead.first_name[3] }}"))
    campaign.enroll(DAY0, ("bob@example.com", "Bob", None), ("maria@example.com", "Maria", None))
    campaign.watch_statuses()
    report = campaign.send_due(DAY0)
    assert (report.sent, report.failed) == (1, 1), report
    assert "cannot build the message" in report.errors[0]
    # Never in flight: a crash at any moment could not leave it in doubt.
    assert campaign.statuses("bob@example.com", "mechanisms") == ["claimed", "failed"]
    assert campaign.statuses("maria@example.com", "mechanisms") == ["claimed", "sending", "sent"]
    assert [rcpt for rcpt, _ in campaign.received()] == ["maria@example.com"]
    assert campaign.send_due(DAY0 + timedelta(hours=1)).ok
    rows = {(r["email"], r["step_id"]): r["status"] for r in campaign.deliveries()}
    assert rows[("bob@example.com", "mechanisms")] == "failed"
    assert rows[("bob@example.com", "pain-types")] == "pending"
    assert campaign.send_due(DAY0 + WEEK).sent == 2


def test_lease_counts_from_each_claim_not_from_the_start_of_the_batch(campaign: Campaign) -> None:
    """A batch that runs longer than the lease must not see its own fresh claims as stale."""
    campaign.enroll(DAY0, ("slow@example.com", "Slow", None))
    later = DAY0 + timedelta(minutes=30)  # the batch started at DAY0 and is still going
    queue = campaign.store.queue
    (claim,) = queue.reserve("acupuncture-back-pain", DAY0, "test", DAY0, 1)
    assert queue.start(claim, later) is Start.GO
    assert queue.expire_leases(later + timedelta(minutes=5), timedelta(minutes=10)) == []
    assert [r["status"] for r in campaign.deliveries()] == ["sending"]
    expired = queue.expire_leases(later + timedelta(minutes=11), timedelta(minutes=10))
    assert expired == [(claim.lead_id, "acupuncture-back-pain")]


def test_a_reservation_taken_back_is_never_started(campaign: Campaign) -> None:
    """Rows reserved by a worker that died go back to the queue at the next run, lease or not,
    and the dead worker could no longer start them: nobody gets an email twice."""
    campaign.enroll(DAY0, ("ann@example.com", "Ann", None), ("bo@example.com", "Bo", None))
    held = campaign.store.queue.reserve("acupuncture-back-pain", DAY0, "gone-worker", DAY0, 5)
    assert [r["status"] for r in campaign.deliveries()] == ["claimed", "claimed"]
    assert campaign.send_due(DAY0).sent == 2
    assert [campaign.store.queue.start(claim, DAY0) for claim in held] == [Start.GONE, Start.GONE]
    assert sorted(rcpt for rcpt, _ in campaign.received()) == [
        "ann@example.com",
        "bo@example.com",
    ]
    assert {r["status"] for r in campaign.deliveries()} == {"sent", "pending"}  # step 2 planned


def test_a_run_stopped_early_hands_its_reservation_back(campaign: Campaign) -> None:
    """`max_messages` stops mid-reservation: the rest is pending again, no attempt counted,
    nothing left `claimed` or `sending` (which would later pass for a message in doubt)."""
    campaign.enroll(DAY0, *((f"lead{n}@example.com", f"Lead{n}", None) for n in range(10)))
    campaign.clock.now = DAY0
    report = campaign.engine().send_due(max_messages=3)
    assert report.sent == 3 and report.ok
    rows = [r for r in campaign.deliveries() if r["step_id"] == "mechanisms"]
    assert Counter(r["status"] for r in rows) == {"sent": 3, "pending": 7}
    assert {r["attempts"] for r in rows if r["status"] == "pending"} == {0}
    assert all(r["claimed_by"] is None for r in rows if r["status"] == "pending")
    assert campaign.send_due(DAY0).sent == 7
    assert Counter(rcpt for rcpt, _ in campaign.received()).most_common(1)[0][1] == 1


# -- schedule edits ------------------------------------------------------------------------


def daily(campaign: Campaign, start: datetime, days: int) -> None:
    for day in range(days):
        report = campaign.send_due(start + timedelta(days=day))
        assert report.ok, report.stopped


def series_of(campaign: Campaign, email: str) -> list[str]:
    by_subject = {step.subject: step.id for step in campaign.loaded().schedule.steps}
    return [by_subject[subject] for rcpt, subject in campaign.received() if rcpt == email]


@pytest.mark.slow
def test_added_step_reaches_leads_who_have_not_passed_it(campaign: Campaign) -> None:
    veteran, ahead, behind = (
        ("veteran@example.com", "Vera", None),
        ("ahead@example.com", "Ada", None),
        ("behind@example.com", "Ben", None),
    )
    campaign.enroll(DAY0 - 2 * WEEK, veteran)
    campaign.send_due(DAY0 - 2 * WEEK)
    campaign.enroll(DAY0 - WEEK, ahead)
    campaign.send_due(DAY0 - WEEK)
    campaign.enroll(DAY0, behind)
    campaign.send_due(DAY0)
    templates = campaign.loaded().templates_dir
    shutil.copy(templates / "pain-types.html.j2", templates / "recap.html.j2")

    def add_recap(data: dict[str, Any]) -> None:
        data["steps"].insert(
            2,
            {"id": "recap", "template": "recap.html.j2", "subject": "A quick recap", "delay": "3d"},
        )

    campaign.edit(add_recap)
    campaign.send_due_cli(DAY0 + timedelta(days=3))  # the real CLI reads the edited file
    assert series_of(campaign, ahead[0]) == ["mechanisms", "pain-types", "recap"]
    daily(campaign, DAY0 + timedelta(days=4), 30)
    assert series_of(campaign, veteran[0]) == list(STEPS)
    assert series_of(campaign, ahead[0]) == ["mechanisms", "pain-types", "recap", *STEPS[2:]]
    assert series_of(campaign, behind[0]) == ["mechanisms", "pain-types", "recap", *STEPS[2:]]


@pytest.mark.slow
def test_removed_step_stops_and_its_pending_row_is_replaced(campaign: Campaign) -> None:
    campaign.enroll(DAY0, ("rita@example.com", "Rita", "America/Chicago"))
    campaign.send_due(DAY0)
    assert campaign.pending() == {("rita@example.com", "pain-types"): DAY0 + WEEK}
    campaign.edit(lambda data: data["steps"].pop(1))
    campaign.send_due_cli(DAY0 + timedelta(days=1))  # nothing due yet; the plan is redone
    assert campaign.pending() == {("rita@example.com", "process"): DAY0 + WEEK}
    daily(campaign, DAY0 + timedelta(days=2), 25)
    assert series_of(campaign, "rita@example.com") == ["mechanisms", "process", "faqs", "booking"]


@pytest.mark.slow
def test_changed_delay_moves_pending_due_times(campaign: Campaign) -> None:
    campaign.enroll(DAY0, ("carl@example.com", "Carl", "America/Chicago"))
    campaign.send_due(DAY0)
    assert campaign.pending() == {("carl@example.com", "pain-types"): DAY0 + WEEK}

    def sooner(data: dict[str, Any]) -> None:
        data["steps"][1]["delay"] = "2d"

    campaign.edit(sooner)
    campaign.send_due_cli(DAY0 + timedelta(days=1))
    assert campaign.pending() == {("carl@example.com", "pain-types"): DAY0 + timedelta(days=2)}
    assert campaign.send_due(DAY0 + timedelta(days=2)).sent == 1
    assert series_of(campaign, "carl@example.com") == ["mechanisms", "pain-types"]


def test_row_for_a_removed_step_from_a_stale_worker_is_cancelled_and_the_lead_moves_on(
    campaign: Campaign,
) -> None:
    """A worker still on the old schedule may plan a step that another has already removed."""
    (lead_id,) = campaign.enroll(DAY0, ("sam@example.com", "Sam", "America/Chicago"))
    campaign.send_due(DAY0)
    campaign.edit(lambda data: data["steps"].pop(1))
    campaign.send_due(DAY0 + timedelta(days=1))  # replans with the new schedule
    stale = PlannedDelivery("pain-types", DAY0 + WEEK)
    campaign.store.queue.replace_plan(
        lead_id, "acupuncture-back-pain", lambda *_read: stale, DAY0 + timedelta(days=1)
    )
    campaign.watch_statuses()
    report = campaign.send_due(DAY0 + WEEK)
    assert report.cancelled == 1 and report.sent == 1
    assert campaign.statuses("sam@example.com", "pain-types") == ["claimed", "cancelled"]
    (removed,) = [row for row in campaign.deliveries() if row["step_id"] == "pain-types"]
    assert (removed["attempts"], removed["last_error"]) == (0, "step removed from the schedule")
    assert series_of(campaign, "sam@example.com") == ["mechanisms", "process"]
    assert campaign.pending() == {("sam@example.com", "faqs"): DAY0 + 2 * WEEK}


def test_a_replan_racing_a_send_cannot_drop_the_next_step(
    campaign: Campaign, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker replanning after an edit while another sends step 1: the plan is made from
    the history read inside the replanning transaction, so step 2, planned by the sender,
    stays."""
    (lead_id,) = campaign.enroll(DAY0, ("sam@example.com", "Sam", "America/Chicago"))
    dispatcher = campaign.engine().dispatcher(SmtpTransport(campaign.engine().smtp))
    read_lead = campaign.store.leads.lead

    def lead_then_a_send_elsewhere(wanted: int) -> Any:
        found = read_lead(wanted)
        monkeypatch.setattr(campaign.store.leads, "lead", read_lead)
        assert campaign.send_due(DAY0).sent == 1  # the other worker, right now
        return found

    monkeypatch.setattr(campaign.store.leads, "lead", lead_then_a_send_elsewhere)
    dispatcher.replan_lead(lead_id, DAY0 + timedelta(hours=1))
    assert list(campaign.pending()) == [("sam@example.com", "pain-types")]


@pytest.mark.slow
def test_plain_http_base_url_gets_no_one_click_header(campaign: Campaign) -> None:
    campaign.enroll(DAY0, ("hal@example.com", "Hal", None))
    local = "http://127.0.0.1:8080"
    campaign.cli("send-due", "--now", iso(DAY0), env={"CAMPAIGN_BASE_URL": local})
    (caught,) = campaign.catcher.messages
    unsubscribe = str(caught.message["List-Unsubscribe"])
    assert unsubscribe.startswith(f"<{local}/u/") and "<mailto:" in unsubscribe
    assert caught.message["List-Unsubscribe-Post"] is None


def test_catch_up_after_downtime_sends_one_step_per_lead(campaign: Campaign) -> None:
    campaign.enroll(DAY0, *COHORT)
    campaign.send_due(DAY0)
    assert campaign.send_due(DAY0 + 4 * WEEK).sent == len(COHORT)  # four weeks later
    assert campaign.send_due(DAY0 + 4 * WEEK + timedelta(hours=1)).sent == 0
    assert campaign.send_due(DAY0 + 5 * WEEK).sent == len(COHORT)
    for email, _, _ in COHORT:
        assert series_of(campaign, email) == ["mechanisms", "pain-types", "process"]
