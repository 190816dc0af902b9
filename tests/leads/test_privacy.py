"""Consent, export, erasure and the audit log end to end: a lead signs up over HTTP with
consent, is sent step 1 over SMTP, books through the real web app and replies through the
real `run.py inbound receive`; `run.py leads export` has all of it; `run.py leads erase`
leaves the address and name nowhere in the database and every count true; no operator's add
or import brings the address back, only the person's own signup with consent; `run.py audit`
lists who did what."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from harness.inbound import fill, receive, with_return_path
from harness.mail import link_named
from harness.web import AUTH, Web, open_web

pytestmark = pytest.mark.slow

EMAIL, NAME = "zq.patient@example.com", "Zephyrine"
CONSENT = "consent-v3: I agree to receive five emails about back pain"
AGENT = "PrivacyTestBrowser/1.0"
ACTOR = {"CAMPAIGN_ACTOR": "Olga at the front desk"}
REFUSAL = "erased at the person's request; only a new signup with consent can bring it back"


def signup(web: Web, email: str, **fields: Any) -> Any:
    return web.client.post(
        "/leads", json={"email": email, **fields}, headers={**AUTH, "User-Agent": AGENT}
    )


@pytest.fixture
def web(tmp_path: Path) -> Iterator[Web]:
    """The lead signed up with consent, sent step 1, booked from it a minute later, and wrote
    back; a second lead who stays, so that counts have something beside the erased one."""
    with open_web(tmp_path, change=with_return_path) as web:
        answer = signup(web, EMAIL, first_name=NAME, timezone="America/Chicago", consent=CONSENT)
        assert answer.status_code == 201, answer.text
        assert signup(web, "stays@example.org", first_name="Stella").status_code == 201
        (message,) = [m for m in web.send() if m["To"].addresses[0].addr_spec == EMAIL]
        web.campaign.clock.now += timedelta(minutes=1)
        booked = web.client.get(link_named(message, "Book a session"), follow_redirects=False)
        assert booked.status_code == 302, booked.text
        caught = [c for c in web.campaign.catcher.messages if c.recipients == [EMAIL]][-1]
        reply = fill("human-reply.eml", caught).replace(b"Ana", NAME.encode())
        received = receive(web.campaign, reply)
        assert received.returncode == 0, received.stderr
        yield web


def text_values(db: Path) -> Iterator[tuple[str, str, str]]:
    """(table, column, value) for every text or bytes value of every table in the file."""
    with sqlite3.connect(db) as conn:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        for table in tables:
            cursor = conn.execute(f'SELECT * FROM "{table}"')
            names = [d[0] for d in cursor.description]
            for row in cursor:
                for column, value in zip(names, row, strict=True):
                    if isinstance(value, bytes):
                        value = value.decode("utf-8", "replace")
                    if isinstance(value, str):
                        yield table, column, value


def holding(db: Path, *needles: str) -> list[tuple[str, str]]:
    return sorted(
        {
            (table, column)
            for table, column, value in text_values(db)
            for needle in needles
            if needle.lower() in value.lower()
        }
    )


def counts(status: dict[str, Any]) -> dict[str, Any]:
    """What an erasure must leave as it was: every step's counts, what came back, and how
    many leads there are."""
    return {
        "steps": status["steps"],
        "inbound": status["inbound"],
        "leads": sum(status["leads"].values()),
    }


def test_export_holds_everything_and_erase_leaves_nothing(web: Web, tmp_path: Path) -> None:
    campaign = web.campaign
    exported = json.loads(campaign.cli("leads", "export", EMAIL.upper(), env=ACTOR).stdout)
    lead = exported["lead"]
    assert (lead["email"], lead["first_name"], lead["timezone"]) == (
        EMAIL,
        NAME,
        "America/Chicago",
    )
    (consent,) = exported["consents"]
    assert (consent["source"], consent["ip"], consent["user_agent"], consent["text"]) == (
        "web form",
        "127.0.0.1",
        AGENT,
        CONSENT,
    )
    sent = [d for d in exported["deliveries"] if d["status"] == "sent"]
    assert [(d["step_id"], d["attempts"], d["variant"]) for d in sent] == [("mechanisms", 1, 0)]
    assert sent[0]["sent_at"] and sent[0]["message_id"]
    assert [c["step_id"] for c in exported["clicks"]] == ["mechanisms"]
    assert [c["step_id"] for c in exported["conversions"]] == ["mechanisms"]
    (inbound,) = exported["inbound"]
    assert inbound["kind"] == "reply" and EMAIL in inbound["sender"].lower()
    assert "lower back has been" in inbound["raw"], "the reply itself, as text"
    assert holding(campaign.db_path, NAME), "the name is held before the erasure"

    before = json.loads(campaign.cli("status", "--json").stdout)
    report_before = json.loads(campaign.cli("report", "--json").stdout)["steps"]
    (left_as,) = [
        r["status"] for r in web.rows(f"SELECT status FROM leads WHERE id = {lead['id']}")
    ]
    assert left_as != "active"  # she booked: she had left the series before asking
    refused = campaign.cli("leads", "erase", EMAIL, expect=2, env={"CAMPAIGN_SECRET_KEY": ""})
    assert "CAMPAIGN_SECRET_KEY is not set" in refused.stderr
    erased = campaign.cli("leads", "erase", EMAIL.title(), "--yes", env=ACTOR)
    assert f"erased lead {lead['id']}" in erased.stdout

    assert holding(campaign.db_path, EMAIL, NAME, "zq.patient") == []
    after = json.loads(campaign.cli("status", "--json").stdout)
    assert json.loads(campaign.cli("report", "--json").stdout)["steps"] == report_before
    assert counts(after) == counts(before)
    # Who left how stays counted (the booking, its step's credit); the address is gone.
    assert after["leads"] == before["leads"] and after["suppressed"].get("erased") == 1
    rows = web.rows(f"SELECT status, email_key, attributes FROM leads WHERE id = {lead['id']}")
    assert [tuple(r) for r in rows] == [(left_as, None, "{}")]
    assert web.rows(f"SELECT * FROM consents WHERE lead_id = {lead['id']}") == []
    gone = campaign.cli("leads", "export", EMAIL, expect=1)
    assert f"no lead has the address {EMAIL}" in gone.stderr

    # No operator brings it back, in any letter case.
    for typed in (EMAIL, "ZQ.Patient@example.com"):
        added = campaign.cli("leads", "add", typed, "--name", NAME, expect=1)
        assert f"not added: {typed} was {REFUSAL}" in added.stderr
    csv = tmp_path / "again.csv"
    csv.write_text(f"email,first_name\nnew@example.com,New\nZq.PATIENT@example.com,{NAME}\n")
    imported = campaign.cli("leads", "import", str(csv))
    assert "imported 1, already present 0, rejected 0, suppressed 1" in imported.stdout
    assert f"again.csv:3: skipped: Zq.PATIENT@example.com was {REFUSAL}" in imported.stderr
    keyless = campaign.cli(
        "leads", "add", "other@example.com", expect=2, env={"CAMPAIGN_SECRET_KEY": ""}
    )
    assert "CAMPAIGN_SECRET_KEY is not set" in keyless.stderr
    assert holding(campaign.db_path, EMAIL, NAME) == []

    # The person may: without consent the form learns only that the address gets nothing.
    answer = signup(web, EMAIL, first_name=NAME)
    assert answer.status_code == 200 and answer.json() == {"email": EMAIL, "status": "suppressed"}
    answer = signup(web, EMAIL, first_name=NAME, consent="consent-v4")
    assert answer.status_code == 201, answer.text
    fresh = answer.json()["id"]
    assert fresh != lead["id"] and answer.json()["status"] == "active"
    renewed = web.rows(f"SELECT source, text FROM consents WHERE lead_id = {fresh}")
    assert [tuple(r) for r in renewed] == [("web form", "consent-v4")]

    audit = json.loads(campaign.cli("audit", "--json").stdout)
    made = [(e["actor"], e["action"], e["target"]) for e in reversed(audit)]
    assert made == [
        ("Olga at the front desk", "export", f"lead {lead['id']}"),
        ("Olga at the front desk", "erase", f"lead {lead['id']}"),
        (made[2][0], "import", "file again.csv"),
        ("web", "consent-renewed", f"lead {fresh}"),
    ]
    assert all(e["at"] for e in audit)
    listed = campaign.cli("audit", "--limit", "1").stdout
    assert "web  consent-renewed" in listed and "Olga" not in listed and "1 entry" in listed


def test_consent_field_is_checked(web: Web) -> None:
    for bad, why in (
        ("two\nlines", "one line"),
        ("x" * 1001, "longer than 1000"),
        (["a list"], "must be text"),
    ):
        answer = signup(web, "new@example.com", consent=bad)
        assert answer.status_code == 400 and why in answer.json()["errors"]["consent"], answer.text
    assert web.rows("SELECT * FROM leads WHERE email = 'new@example.com'") == []


def test_command_line_adds_record_their_source(web: Web, tmp_path: Path) -> None:
    campaign = web.campaign
    campaign.cli("leads", "add", "one@example.com", env=ACTOR)
    csv = tmp_path / "clinic-list.csv"
    csv.write_text("email\ntwo@example.com\nthree@example.com\n")
    campaign.cli("leads", "import", str(csv), env=ACTOR)
    sources = web.rows(
        "SELECT l.email, c.source FROM consents c JOIN leads l ON l.id = c.lead_id "
        "WHERE l.email NOT IN ('zq.patient@example.com', 'stays@example.org') ORDER BY l.id"
    )
    assert [tuple(r) for r in sources] == [
        ("one@example.com", "command line"),
        ("two@example.com", "import clinic-list.csv"),
        ("three@example.com", "import clinic-list.csv"),
    ]
    audit = json.loads(campaign.cli("audit", "--json").stdout)
    assert [(e["action"], e["target"], e["actor"]) for e in audit[:2]] == [
        ("import", "file clinic-list.csv", "Olga at the front desk"),
        ("add", "lead 3", "Olga at the front desk"),
    ]
