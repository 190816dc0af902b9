"""The front desk, through the real `run.py` in a subprocess: after the engine sent step 1
over SMTP to the catcher, a person clicked a link through the real web app and an
out-of-office reply came back, `leads list` and `leads show` say who is where and what comes
next; `send-test` mails one step to a marketer, marked, recording nothing; `leads
unsubscribe` taken by phone stops one lead while the other's drip goes on."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from email.message import EmailMessage
from pathlib import Path

import pytest

from harness.cli import lines_of
from harness.db import dump_tables, read_rows
from harness.inbound import fill, receive
from harness.mail import (
    BASE_URL,
    anchors,
    link_named,
    signer,
    step_of,
    text_part,
    unsubscribe_url,
)
from harness.web import START, WEEK, Web, open_web

ANN = "ann@example.com"  # Chicago; clicks a link; her drip goes on
BOB = "bob@example.com"  # New York; out of office, then unsubscribes by phone
MARKETER = "marketer@clinic.example"
BROWSER = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/124.0 Safari/537.36"
ABOUT = '<p><a href="https://clinic.example.com/about">About the clinic</a></p>\n'
LATER = START + timedelta(hours=2)
STEPS = "mechanisms, pain-types, process, faqs, booking"
pytestmark = pytest.mark.slow  # every test runs `run.py` in subprocesses


@pytest.fixture
def web(tmp_path: Path) -> Iterator[Web]:
    """Ann and Bob signed up over HTTP and sent step 1 at START; Ann clicked "About the
    clinic" an hour later as a person; Bob's mailbox answered with an out-of-office."""
    with open_web(tmp_path) as web:
        template = web.campaign.schedule_path.parent / "templates/emails/mechanisms.html.j2"
        source = template.read_text(encoding="utf-8")
        template.write_text(source.replace('<p class="note">', ABOUT + '<p class="note">', 1))
        assert web.signup(ANN, first_name="Ann", timezone="America/Chicago").status_code == 201
        assert web.signup(BOB, first_name="Bob", timezone="America/New_York").status_code == 201
        sent = {str(m["To"]).rpartition("<")[2].rstrip(">"): m for m in web.send()}
        assert sorted(sent) == [ANN, BOB]
        web.campaign.clock.now = START + timedelta(hours=1)
        about = link_named(sent[ANN], "About the clinic")
        answer = web.client.get(about, headers={"User-Agent": BROWSER}, follow_redirects=False)
        assert answer.status_code == 302
        bob_mail = [c for c in web.campaign.catcher.messages if c.recipients == [BOB]][-1]
        assert receive(web.campaign, fill("vacation-auto-reply.eml", bob_mail)).returncode == 0
        yield web


def cli(web: Web, *args: str, expect: int = 0) -> str:
    """`run.py ARGS` on the campaign; stdout, or stderr when a failure is expected."""
    result = web.campaign.cli(*args, expect=expect)
    return result.stdout if expect == 0 else result.stderr


def received_since(web: Web, count: int) -> list[EmailMessage]:
    return [caught.message for caught in web.campaign.catcher.messages[count:]]


def test_list_says_who_is_where_and_when_the_next_email_goes(web: Web) -> None:
    out = lines_of(cli(web, "leads", "list", "--now", LATER.isoformat()))
    assert out[0] == "acupuncture-back-pain: 2 lead(s), showing 1-2"
    assert out[1].split() == ["EMAIL", "NAME", "STATUS", "LAST", "SENT", "NEXT", "EMAIL"]
    # Both were sent step 1 at START; step 2 waits a week, 9 March after the US clock change.
    assert out[2].split() == [
        *(ANN, "Ann", "active", "mechanisms", "2026-03-02", "16:00Z"),
        *("pain-types", "2026-03-09", "16:00Z", "(Mon", "2026-03-09", "11:00", "CDT"),
        "America/Chicago)",
    ]
    assert out[3].split()[:3] == [BOB, "Bob", "active"]
    assert out[3].endswith("(Mon 2026-03-09 12:00 EDT America/New_York)")
    assert len(out) == 4

    first = lines_of(cli(web, "leads", "list", "--limit", "1", "--now", LATER.isoformat()))
    assert first[0].endswith("showing 1-1") and first[2].startswith(ANN)
    assert first[-1] == "1 more: --offset 1"
    rest = lines_of(cli(web, "leads", "list", "--offset", "1", "--now", LATER.isoformat()))
    assert rest[0].endswith("showing 2-2") and rest[2].startswith(BOB) and len(rest) == 3

    data = json.loads(cli(web, "leads", "list", "--json", "--now", LATER.isoformat()))
    assert (data["total"], data["more"]) == (2, 0)
    ann = data["leads"][0]
    assert ann["last_sent"] == {"step": "mechanisms", "at": "2026-03-02T16:00:00+00:00"}
    assert ann["next"] == {
        "step": "pain-types",
        "due_at": "2026-03-09T16:00:00+00:00",
        "local": "2026-03-09T11:00:00-05:00",
        "timezone": "America/Chicago",
        "overdue": False,
    }

    # Filters: by the step each waits for, and by status (in any letter case).
    waiting = json.loads(cli(web, "leads", "list", "--step", "pain-types", "--json"))
    assert [lead["email"] for lead in waiting["leads"]] == [ANN, BOB]
    assert json.loads(cli(web, "leads", "list", "--step", "mechanisms", "--json"))["total"] == 0
    assert json.loads(cli(web, "leads", "list", "--status", "Bounced", "--json"))["total"] == 0


def test_list_refuses_an_unknown_step_or_status_naming_the_choices(web: Web) -> None:
    err = cli(web, "leads", "list", "--step", "pain", expect=2)
    assert "no step 'pain'" in err and STEPS in err
    err = cli(web, "leads", "list", "--status", "gone", expect=2)
    assert "'gone' is not one of" in err and "'unsubscribed'" in err


def test_show_tells_everything_about_one_lead_in_any_letter_case(web: Web) -> None:
    out = cli(web, "leads", "show", "ANN@Example.COM", "--now", LATER.isoformat())
    lines = lines_of(out)
    assert lines[0] == f"{ANN}  Ann"
    assert "  status: active" in lines
    assert "  acupuncture-back-pain: enrolled 2026-03-02 16:00Z (active)" in lines
    assert lines[lines.index("deliveries (2):") + 1].split() == [
        *("mechanisms", "sent", "sent", "2026-03-02", "16:00Z", "attempts", "1")
    ]
    assert "clicks (1):" in lines
    (consent,) = [line for line in lines if line.startswith("consent: ")]
    assert consent.startswith("consent: web form 2026-03-02 16:00Z (from 127.0.0.1, python-httpx/")
    assert "  mechanisms  2026-03-02 17:00Z  person  https://clinic.example.com/about" in lines
    assert lines[-1] == (
        "next: pain-types 2026-03-09 16:00Z (Mon 2026-03-09 11:00 CDT America/Chicago)"
    )

    bob = json.loads(cli(web, "leads", "show", BOB, "--json", "--now", LATER.isoformat()))
    assert bob["timezone"] == "America/New_York" and bob["status"] == "active"
    assert [(d["step"], d["status"]) for d in bob["deliveries"]] == [
        ("mechanisms", "sent"),
        ("pain-types", "pending"),
    ]
    assert bob["clicks"] == [] and bob["conversion"] is None and bob["suppressions"] == []
    (consent,) = bob["consents"]  # signed up through the web form
    assert (consent["source"], consent["ip"]) == ("web form", "127.0.0.1")
    assert consent["user_agent"].startswith("python-httpx/")
    [reply] = bob["inbound"]
    assert (reply["kind"], reply["step"]) == ("auto-reply", "mechanisms")
    assert bob["next"]["step"] == "pain-types"

    err = cli(web, "leads", "show", "nobody@example.com", expect=1)
    assert "no lead nobody@example.com" in err


def test_send_test_mails_the_step_marked_and_records_nothing(web: Web) -> None:
    before, count = dump_tables(web.campaign.db_path), len(web.campaign.catcher.messages)
    out = cli(web, "send-test", "pain-types", "--to", MARKETER, "--lead", "Ann@example.com")
    assert f"sent pain-types to {MARKETER} with {ANN}'s data" in out
    [caught] = web.campaign.catcher.messages[count:]
    message = caught.message
    assert caught.recipients == [MARKETER] and str(message["To"]) == MARKETER
    assert str(message["Subject"]) == "[TEST] Which kinds of back pain acupuncture can help"
    assert step_of(message) == "pain-types"
    assert dump_tables(web.campaign.db_path) == before  # no delivery row, no lead changed

    # Its links are Ann's own: the marketer can click through them as Ann would.
    ann = web.campaign.store.leads.lead_by_email(ANN)
    assert ann is not None
    tracked = [href for _text, href in anchors(message) if href.startswith(f"{BASE_URL}/c/")]
    assert tracked and {signer().read_click(h.rpartition("/")[2]).lead_id for h in tracked} == {
        ann.id
    }
    assert signer().read_unsubscribe(unsubscribe_url(message).rpartition("/")[2]).lead_id == ann.id
    answer = web.client.get(tracked[0], headers={"User-Agent": BROWSER}, follow_redirects=False)
    assert answer.status_code == 302

    # Without --lead: the preview's sample lead, whose links are nobody's.
    out = cli(web, "send-test", "booking", "--to", MARKETER)
    assert "with the sample lead's data" in out
    [sample] = received_since(web, count + 1)
    assert str(sample["Subject"]).startswith("[TEST] Ready for a pain-free back?")
    assert "Hi Alex," in text_part(sample)
    booking = link_named(sample, "Book your first session")
    assert signer().read_click(booking.rpartition("/")[2]).lead_id == 0


def test_send_test_refuses_what_it_cannot_send(web: Web) -> None:
    count = len(web.campaign.catcher.messages)
    err = cli(web, "send-test", "pain", "--to", MARKETER, expect=2)
    assert "no step 'pain'" in err and STEPS in err
    err = cli(web, "send-test", "faqs", "--to", "marketer at clinic", expect=2)
    assert "--to:" in err and "not a valid email address" in err
    err = cli(web, "send-test", "faqs", "--to", MARKETER, "--lead", "nobody@example.com", expect=1)
    assert "no lead nobody@example.com" in err
    closed = web.campaign.cli(
        "send-test", "faqs", "--to", MARKETER, env={"CAMPAIGN_SMTP_PORT": "9"}, expect=1
    )
    assert "did not take the test email" in closed.stderr and "127.0.0.1:9" in closed.stderr
    assert len(web.campaign.catcher.messages) == count


def test_unsubscribe_by_phone_stops_that_lead_and_the_others_drip_goes_on(web: Web) -> None:
    out = cli(web, "leads", "unsubscribe", "BOB@example.com", "--reason", "phoned on Tuesday")
    assert out.strip() == f"unsubscribed {BOB}: never mailed again; 1 queued email(s) cancelled"
    again = cli(web, "leads", "unsubscribe", BOB)
    assert "is unsubscribed since" in again and "nothing changed" in again
    [row] = read_rows(web.campaign.db_path, "SELECT email, reason, detail FROM suppressions")
    assert tuple(row) == (BOB, "unsubscribed", "front desk: phoned on Tuesday")

    bob = json.loads(cli(web, "leads", "show", BOB, "--json"))
    assert (bob["status"], bob["status_reason"]) == (
        "unsubscribed",
        "front desk: phoned on Tuesday",
    )
    assert [(d["step"], d["status"]) for d in bob["deliveries"]] == [
        ("mechanisms", "sent"),
        ("pain-types", "cancelled"),
    ]
    assert bob["next"] is None and bob["suppressions"][0]["reason"] == "unsubscribed"
    listed = json.loads(cli(web, "leads", "list", "--status", "unsubscribed", "--json"))
    assert [lead["email"] for lead in listed["leads"]] == [BOB]
    # Written to the audit log once, naming the lead by id, not by address.
    audit = json.loads(cli(web, "audit", "--json"))
    unsubscribes = [entry for entry in audit if entry["action"] == "unsubscribe"]
    assert [(e["target"], e["detail"]) for e in unsubscribes] == [
        (f"lead {bob['id']}", "front desk: phoned on Tuesday")
    ]
    assert BOB not in json.dumps(audit)

    count = len(web.campaign.catcher.messages)
    web.campaign.send_due_cli(START + WEEK)
    assert [(str(m["To"]), step_of(m)) for m in received_since(web, count)] == [
        (f"Ann <{ANN}>", "pain-types")
    ]
    err = cli(web, "leads", "unsubscribe", "nobody@example.com", expect=1)
    assert "no lead nobody@example.com" in err and "nothing changed" in err
