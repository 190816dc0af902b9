"""The suppression list end to end: an address bounced by a real SMTP 550, one that
complained by an ARF report piped into the real `run.py inbound receive`, and one that
unsubscribed by one-click POST are never taken in or mailed again, by `POST /leads`,
`leads add` or `leads import`; `status` counts them; `leads unsuppress` lifts one, recorded,
and `leads reactivate` then brings a bounced lead back."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from harness.engine import build_engine
from harness.inbound import fill, receive, with_return_path
from harness.mail import step_of, unsubscribe_url
from harness.smtp import Fault, FaultServer
from harness.web import ONE_CLICK, START, WEEK, Web, open_web

ANA, CEM, UMA, BEN = "ana@example.com", "cem@example.com", "uma@example.com", "ben@example.org"
GONE = {ANA: "bounced", CEM: "complained", UMA: "unsubscribed"}


@pytest.fixture
def web(tmp_path: Path) -> Iterator[Web]:
    """Four leads signed up over HTTP; step 1 sent through a server that refuses Ana (550);
    Cem's complaint piped in as a feedback loop sends it; Uma unsubscribes in one click."""
    with open_web(tmp_path, change=with_return_path) as web:
        for email in (ANA, CEM, UMA, BEN):
            assert (
                web.signup(email, first_name="Lead", timezone="America/Chicago").status_code == 201
            )
        campaign = web.campaign
        refuse = Fault("RCPT", "550 5.1.1 no such mailbox", recipient=ANA, times=None)
        with FaultServer(refuse) as server:
            engine = build_engine(
                campaign.schedule_path, campaign.store, campaign.clock, port=server.port
            )
            campaign.clock.now = START
            assert engine.send_due().sent == 3
            sent = {c.recipients[0]: c for c in server.messages}
        complaint = receive(campaign, fill("arf-complaint.eml", sent[CEM]))
        assert complaint.returncode == 0, complaint.stderr
        assert (
            web.client.post(unsubscribe_url(sent[UMA].message), data=ONE_CLICK).status_code == 200
        )
        assert {e: web.status(e) for e in GONE} == GONE
        yield web


def test_no_way_in_takes_a_suppressed_address_again(web: Web, tmp_path: Path) -> None:
    campaign = web.campaign
    status = json.loads(campaign.cli("status", "--json").stdout)
    assert status["suppressed"] == {"bounced": 1, "complained": 1, "unsubscribed": 1}
    listed = json.loads(campaign.cli("leads", "suppressions", "--json").stdout)
    assert {item["email"]: item["reason"] for item in listed} == GONE
    assert "550" in next(item["detail"] for item in listed if item["email"] == ANA)

    for email in GONE:  # the signup form, in another letter case
        typed = email.capitalize()
        answer = web.signup(typed, first_name="Again")
        assert answer.status_code == 200, answer.text
        assert answer.json() == {"email": typed, "status": "suppressed"}, "and says no more"
        refused = campaign.cli("leads", "add", email, "--name", "Again", expect=1)
        assert f"not added: {email} is suppressed ({GONE[email]}" in refused.stderr
    csv = tmp_path / "again.csv"
    csv.write_text(f"email,first_name\n{ANA},A\nnew@example.com,New\n{CEM},C\n{UMA},U\n")
    imported = campaign.cli("leads", "import", str(csv))
    assert "imported 1, already present 0, rejected 0, suppressed 3" in imported.stdout
    for line, email in ((2, ANA), (4, CEM), (5, UMA)):
        assert f"again.csv:{line}: skipped: {email} is suppressed ({GONE[email]}" in imported.stderr
    names = web.rows("SELECT first_name FROM leads WHERE email_key != 'new@example.com'")
    assert {row["first_name"] for row in names} == {"Lead"}, "nothing about them changed"

    received = [(m["To"].addresses[0].addr_spec, step_of(m)) for m in web.send(after=WEEK)]
    assert (BEN, "pain-types") in received and not {to for to, _step in received} & set(GONE)
    assert "suppressed addresses: 3" in campaign.cli("status").stdout


def test_lifting_is_recorded_and_says_what_to_do_next(web: Web) -> None:
    campaign = web.campaign
    assert campaign.cli("leads", "unsuppress", ANA, expect=2)  # --reason is required
    assert (
        "not suppressed"
        in campaign.cli("leads", "unsuppress", BEN, "--reason", "x", expect=1).stderr
    )
    lifted = campaign.cli(
        "leads", "unsuppress", ANA.upper(), "--reason", "mailbox fixed, confirmed by phone"
    )
    assert f"lifted: {ANA} (bounced" in lifted.stdout
    assert f"leads reactivate {ANA}" in lifted.stdout, lifted.stdout
    assert web.status(ANA) == "bounced", "the lead's status is not changed back by itself"
    record = json.loads(campaign.cli("leads", "suppressions", "--lifted", "--json").stdout)
    (ana,) = [item for item in record if item["email"] == ANA]
    assert ana["lifted_reason"] == "mailbox fixed, confirmed by phone" and ana["lifted_at"]
    status = json.loads(campaign.cli("status", "--json").stdout)
    assert status["suppressed"] == {"complained": 1, "unsubscribed": 1}

    campaign.cli("leads", "reactivate", ANA)
    assert web.status(ANA) == "active"
    received = [
        (m["To"].addresses[0].addr_spec, step_of(m)) for m in web.send(after=timedelta(hours=1))
    ]
    assert received == [(ANA, "mechanisms")], "the step that bounced, sent again"
