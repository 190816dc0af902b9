"""Double opt-in confirmations go through the send queue: a signup stores its confirmation as a
delivery row and the dispatcher (`send-due`, `run`) sends it like any other email, so no web
request ever waits on an SMTP server, and posting the same signup again and again mails the
address at most once per 10 minutes."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path

import httpx
import pytest

from campaign.devtools.catcher import free_port
from harness.cli import invoke_on
from harness.engine import build_engine, open_campaign
from harness.mail import BASE_URL, link_named, signer, step_of, text_part, unsubscribe_url
from harness.smtp import Fault, FaultServer
from harness.web import (
    API_TOKEN,
    AUTH,
    CONFIRM_BUTTON,
    CONFIRM_SUBJECT,
    ONE_CLICK,
    START,
    ToLocalServer,
    Web,
    ask_to_confirm,
    open_web,
    wait_listening,
)

CAMPAIGN = "acupuncture-back-pain"
NEVER = 600.0  # seconds before the relay greets: far beyond any request of these tests


@pytest.fixture
def web(tmp_path: Path) -> Iterator[Web]:
    with open_web(tmp_path, confirmations=True) as opened:
        yield opened


def subjects(messages: list[EmailMessage]) -> list[str]:
    return [str(message["Subject"]) for message in messages]


@pytest.mark.slow
def test_no_request_waits_on_a_relay_that_never_greets(tmp_path: Path) -> None:
    """`run.py web` with CAMPAIGN_SMTP_* pointing at a relay that never greets: the signup and
    a one-click unsubscribe are answered while the relay has still greeted no one, so neither
    can have waited on it. The sender then delivers the one confirmation queued."""
    with open_campaign(tmp_path) as campaign, FaultServer(greeting_delay=NEVER) as relay:
        ask_to_confirm(campaign)
        (bo,) = campaign.enroll(START, ("bo@example.com", "Bo", None))
        port = free_port()
        env = {
            "CAMPAIGN_API_TOKEN": API_TOKEN,
            "CAMPAIGN_SMTP_PORT": str(relay.port),
            "CAMPAIGN_SMTP_TIMEOUT": str(int(NEVER)),
        }
        server = campaign.popen("web", "--port", str(port), env=env)
        try:
            wait_listening(server, f"http://127.0.0.1:{port}/u/probe")
            with httpx.Client(
                base_url=BASE_URL, timeout=15, transport=ToLocalServer(port)
            ) as client:
                body = {"email": "ann@example.com", "first_name": "Ann"}
                signup = client.post("/leads", json=body, headers=AUTH)
                again = client.post("/leads", json=body, headers=AUTH)
                unsubscribe = client.post(signer().unsubscribe_url(bo, CAMPAIGN), data=ONE_CLICK)
                assert relay.handler.greeted == 0, "a request was answered after the relay"
                assert relay.handler.commands == [], relay.handler.commands
                assert signup.status_code == 201, signup.text
                assert (signup.json()["status"], signup.json()["confirmation"]) == (
                    "pending",
                    "queued",
                )
                assert (again.status_code, again.json()["confirmation"]) == (200, "queued")
                assert unsubscribe.status_code == 200, unsubscribe.text

                # The sender, on a working relay, delivers the confirmation: once.
                due = campaign.store.queue.next_due_at(CAMPAIGN)
                assert due is not None
                report = campaign.send_due(due)
                assert (report.ok, report.sent) == (True, 1), report
                assert campaign.received() == [("ann@example.com", CONFIRM_SUBJECT)]
                confirmation = campaign.catcher.messages[0].message
                assert client.post(link_named(confirmation, CONFIRM_BUTTON)).status_code == 200
        finally:
            server.terminate()
            try:
                server.communicate(timeout=10)
            except subprocess.TimeoutExpired:  # a request still hangs on the relay
                server.kill()
                server.communicate(timeout=10)
        assert campaign.store.leads.lead_by_email("ann@example.com").status == "active"
        due = campaign.store.queue.next_due_at(CAMPAIGN)
        assert due is not None
        assert campaign.send_due(due).sent == 1
        assert campaign.received()[1:] == [("ann@example.com", "How acupuncture eases back pain")]


def test_a_signup_queues_its_confirmation_for_the_sender(web: Web) -> None:
    answer = web.signup("ann@example.com", first_name="Ann")
    assert answer.status_code == 201, answer.text
    assert (answer.json()["status"], answer.json()["confirmation"]) == ("pending", "queued")
    assert web.campaign.catcher.messages == [], "the web service sends nothing itself"
    rows = web.rows("SELECT step_id, status, due_at FROM deliveries")
    assert [(r["step_id"], r["status"]) for r in rows] == [("confirm", "pending")]

    (confirmation,) = web.send()
    assert subjects([confirmation]) == [CONFIRM_SUBJECT]
    assert unsubscribe_url(confirmation) in text_part(confirmation)
    assert web.send(after=timedelta(days=8)) == [], "nothing else before confirming"
    assert web.status("ann@example.com") == "pending"

    assert web.client.post(link_named(confirmation, CONFIRM_BUTTON)).status_code == 200
    assert web.status("ann@example.com") == "active"
    assert [step_of(m) for m in web.send()] == ["mechanisms"]
    rows = web.rows("SELECT step_id, status FROM deliveries ORDER BY id")
    assert [tuple(r) for r in rows] == [
        ("confirm", "sent"),
        ("mechanisms", "sent"),
        ("pain-types", "pending"),
    ]


def test_the_same_signup_posted_twenty_times_mails_the_address_once(web: Web) -> None:
    answers = [web.signup("ann@example.com", first_name="Ann") for _ in range(20)]
    assert [a.status_code for a in answers] == [201] + [200] * 19
    assert {a.json()["confirmation"] for a in answers} == {"queued"}
    assert subjects(web.send()) == [CONFIRM_SUBJECT]

    web.campaign.clock.advance(timedelta(minutes=9))
    later = [web.signup("ann@example.com") for _ in range(20)]
    assert {a.json()["confirmation"] for a in later} == {"recently sent"}
    assert web.send() == []

    web.campaign.clock.advance(timedelta(minutes=1))  # 10 minutes after the first was sent
    answers = [web.signup("ann@example.com") for _ in range(20)]
    assert {a.json()["confirmation"] for a in answers} == {"queued"}
    assert subjects(web.send()) == [CONFIRM_SUBJECT]
    assert len(web.rows("SELECT * FROM deliveries")) == 1


def test_a_pending_lead_who_unsubscribes_gets_no_confirmation(web: Web) -> None:
    answer = web.signup("ann@example.com", first_name="Ann")
    lead_id = answer.json()["id"]
    assert web.client.post(signer().unsubscribe_url(lead_id, CAMPAIGN), data=ONE_CLICK)
    assert web.status("ann@example.com") == "unsubscribed"
    assert web.send() == []
    again = web.signup("ann@example.com")
    # The address is on the suppression list: the answer says only that.
    assert again.json() == {"email": "ann@example.com", "status": "suppressed"}
    assert web.send() == []


def test_leads_added_by_the_operator_are_not_asked_to_confirm(web: Web) -> None:
    web.campaign.enroll(START, ("bo@example.com", "Bo", None))
    assert [step_of(m) for m in web.send()] == ["mechanisms"]


def test_a_confirmation_refused_for_good_bounces_and_reactivates_as_pending(web: Web) -> None:
    """A confirmation is handled like any email by the dispatcher: a 550 bounces the lead.
    Reactivated, the lead is pending again (it never confirmed) and only the confirmation
    goes back to the queue, never the series."""
    campaign = web.campaign
    answer = web.signup("ann@example.com", first_name="Ann")
    assert answer.json()["confirmation"] == "queued"
    with FaultServer(Fault("RCPT", "550 5.1.1 no such user")) as relay:
        engine = build_engine(
            campaign.schedule_path, campaign.store, campaign.clock, port=relay.port
        )
        report = engine.send_due()
        assert (report.bounced, relay.messages) == (1, []), report
    assert web.status("ann@example.com") == "bounced"

    result = invoke_on(
        campaign.schedule_path, campaign.db_path, "leads", "reactivate", "ann@example.com"
    )
    assert result.exit_code == 0, result.output
    assert web.status("ann@example.com") == "pending"
    rows = web.rows("SELECT step_id, status, attempts FROM deliveries")
    assert [tuple(r) for r in rows] == [("confirm", "pending", 0)]
    assert subjects(web.send()) == [CONFIRM_SUBJECT]
    assert web.send(after=timedelta(days=8)) == []


def test_a_confirmation_that_fails_for_now_is_retried_without_waiting_for_the_window(
    tmp_path: Path,
) -> None:
    """A signup on Friday evening: the confirmation answers it now, and a temporary failure
    is retried after its backoff, not on Monday when the send window opens."""
    friday_evening = START + timedelta(days=4, hours=8)  # Friday 18:00 in Chicago
    with open_web(tmp_path, confirmations=True) as web:
        web.campaign.clock.now = friday_evening
        web.signup("ann@example.com", first_name="Ann", timezone="America/Chicago")
        campaign = web.campaign
        with FaultServer(Fault("RCPT", "451 4.7.1 greylisted")) as relay:
            engine = build_engine(
                campaign.schedule_path, campaign.store, campaign.clock, port=relay.port
            )
            assert engine.send_due().retried == 1
        (row,) = web.rows("SELECT step_id, status, due_at FROM deliveries")
        assert (row["step_id"], row["status"]) == ("confirm", "pending")
        assert datetime.fromisoformat(row["due_at"]).replace(
            tzinfo=UTC
        ) < friday_evening + timedelta(hours=2)
        assert subjects(web.send(after=timedelta(hours=2))) == [CONFIRM_SUBJECT]


def test_a_lead_who_confirms_before_the_email_leaves_is_not_sent_it(web: Web) -> None:
    answer = web.signup("ann@example.com", first_name="Ann")
    confirm = signer().confirm_url(answer.json()["id"], CAMPAIGN)
    assert web.client.post(confirm).status_code == 200
    assert web.status("ann@example.com") == "active"
    assert [step_of(m) for m in web.send()] == ["mechanisms"]
    rows = web.rows("SELECT step_id, status FROM deliveries ORDER BY id")
    assert [tuple(r) for r in rows] == [("mechanisms", "sent"), ("pain-types", "pending")]


def test_twenty_signups_of_one_address_at_once_queue_one_confirmation(web: Web) -> None:
    with ThreadPoolExecutor(max_workers=20) as pool:
        answers = list(pool.map(lambda _: web.signup("ann@example.com"), range(20)))
    assert sorted(a.status_code for a in answers) == [200] * 19 + [201]
    assert {a.json()["confirmation"] for a in answers} == {"queued"}
    assert subjects(web.send()) == [CONFIRM_SUBJECT]
