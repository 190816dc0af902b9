"""`run.py inbound receive`: real-format bounces, complaints, auto-replies and replies, each
written here in its MTA's or provider's format, about an email the engine really sent.

Each test sends step 1 to two leads through the real engine and the catcher, fills a sample
with what the catcher got (the VERP envelope sender, the Message-ID, the subject, the
date), pipes it into the real `run.py inbound receive` on the same SQLite file, then runs
the real `send-due` a week later: the lead the message names gets nothing more when it
should not, and the other lead's drip goes on.
"""

from __future__ import annotations

import json
import subprocess
from datetime import timedelta
from pathlib import Path

import pytest

from harness.cli import CLI_TIMEOUT, cli_env, run_py_argv
from harness.engine import Campaign
from harness.inbound import (
    ANA,
    BEN,
    DAY0,
    WEEK,
    everything,
    fill,
    inbound_rows,
    last_to,
    receive,
    start,
    status,
    steps_received,
)
from harness.schedule import REPO

CASES = [
    # sample, pass the VERP envelope recipient, configure a return path, kind, lead status
    ("postfix-dsn.eml", True, True, "hard-bounce", "bounced"),
    ("exim-bounce.eml", False, True, "hard-bounce", "bounced"),
    ("office365-ndr.eml", False, True, "hard-bounce", "bounced"),
    ("gmail-dsn.eml", False, False, "hard-bounce", "bounced"),  # Message-ID only
    ("arf-complaint.eml", False, True, "complaint", "complained"),
    ("vacation-auto-reply.eml", False, True, "auto-reply", "active"),
    ("human-reply.eml", False, True, "reply", "replied"),
]


@pytest.mark.slow
@pytest.mark.parametrize(("sample", "rcpt", "return_path", "kind", "after"), CASES)
def test_each_format_reaches_its_lead_only(
    campaign: Campaign, sample: str, rcpt: bool, return_path: bool, kind: str, after: str
) -> None:
    start(campaign, return_path)
    sent = last_to(campaign, ANA)
    if return_path:
        assert sent.sender.startswith("bounces+") and sent.sender.endswith("@bounce.clinic.example")
    else:
        assert sent.sender == "care@evergreen-acupuncture.example.com"
    args = ("--rcpt", sent.sender) if rcpt else ()
    result = receive(campaign, fill(sample, sent), *args)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"{kind}: {ANA} (mechanisms)"), result.stdout
    assert status(campaign, ANA) == after
    assert status(campaign, BEN) == "active"
    [(_, recorded_kind, lead_id, step, _)] = inbound_rows(campaign)
    assert (recorded_kind, step) == (kind, "mechanisms") and lead_id is not None

    campaign.send_due_cli(DAY0 + WEEK + timedelta(hours=1))
    assert steps_received(campaign, BEN) == ["mechanisms", "pain-types"]
    expected = ["mechanisms", "pain-types"] if after == "active" else ["mechanisms"]
    assert steps_received(campaign, ANA) == expected


@pytest.mark.slow
def test_soft_bounces_in_a_row_bounce_the_lead(campaign: Campaign) -> None:
    """A full mailbox (4.2.2) is counted; the third email in a row to bounce so ends it."""
    start(campaign)
    at = DAY0
    for number in (1, 2, 3):
        sent = last_to(campaign, ANA)
        result = receive(campaign, fill("soft-mailbox-full.eml", sent, f"s{number}"))
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith(f"soft-bounce: {ANA}"), result.stdout
        if number < 3:
            assert f"soft bounce {number} of 3 in a row" in result.stdout
            assert status(campaign, ANA) == "active"
            at += WEEK
            assert campaign.send_due(at).sent == 2  # both leads' next step
    assert status(campaign, ANA) == "bounced"
    assert "3 soft bounces in a row" in result.stdout
    at += WEEK
    assert campaign.send_due(at).sent == 1
    assert steps_received(campaign, ANA) == ["mechanisms", "pain-types", "process"]
    assert steps_received(campaign, BEN) == ["mechanisms", "pain-types", "process", "faqs"]


@pytest.mark.slow
def test_a_dsn_delivered_twice_changes_nothing_the_second_time(campaign: Campaign) -> None:
    start(campaign)
    dsn = fill("postfix-dsn.eml", last_to(campaign, ANA))
    assert receive(campaign, dsn).returncode == 0
    before = everything(campaign)
    again = receive(campaign, dsn)
    assert again.returncode == 0 and "already recorded" in again.stdout
    assert everything(campaign) == before
    assert len(inbound_rows(campaign)) == 1


@pytest.mark.slow
def test_soft_reports_about_one_email_count_once(campaign: Campaign) -> None:
    """Two different DSNs about the same email (say, from two relays) are one soft bounce."""
    start(campaign)
    sent = last_to(campaign, ANA)
    for unique in ("a", "b"):
        result = receive(campaign, fill("soft-mailbox-full.eml", sent, unique))
        assert "soft bounce 1 of 3 in a row" in result.stdout, result.stdout
    assert len(inbound_rows(campaign)) == 2


@pytest.mark.slow
def test_what_matches_nothing_is_kept_and_listed(campaign: Campaign) -> None:
    start(campaign)
    sent = last_to(campaign, ANA)
    before = everything(campaign)[:3]
    # A bounce of an email this engine never sent, to a forged return-path token.
    forged = sent.sender.replace("bounces+", "bounces+aa", 1)
    stranger = (
        fill("postfix-dsn.eml", sent)
        .replace(sent.sender.encode(), forged.encode())
        .replace(str(sent.message["Message-ID"]).encode(), b"<d999.0123456789ab@elsewhere.example>")
    )
    result = receive(campaign, stranger, "--rcpt", forged)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("hard-bounce: no lead: matched nothing"), result.stdout
    assert "return-path token is not valid" in result.stdout
    assert everything(campaign)[:3] == before
    listed = subprocess.run(
        run_py_argv("--schedule", str(campaign.schedule_path), "inbound", "list"),
        cwd=REPO,
        env=cli_env(**campaign.env()),
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT,
    )
    assert listed.returncode == 0, listed.stderr
    assert "hard-bounce" in listed.stdout and "matched nothing" in listed.stdout
    assert "1 message(s)" in listed.stdout


@pytest.mark.slow
def test_a_bounce_naming_another_address_changes_no_lead(campaign: Campaign) -> None:
    """The VERP token names Ana's email but the report says Ben's address failed: neither
    lead changes (Ben's email was never the one returned)."""
    start(campaign)
    sent = last_to(campaign, ANA)
    dsn = fill("postfix-dsn.eml", sent).replace(
        b"Final-Recipient: rfc822; " + ANA.encode(), b"Final-Recipient: rfc822; " + BEN.encode()
    )
    dsn = dsn.replace(
        b"Original-Recipient: rfc822;" + ANA.encode(), b"Original-Recipient: rfc822;" + BEN.encode()
    )
    result = receive(campaign, dsn, "--rcpt", sent.sender)
    assert result.returncode == 0
    assert "not the lead's address" in result.stdout, result.stdout
    assert (status(campaign, ANA), status(campaign, BEN)) == ("active", "active")


@pytest.mark.slow
def test_a_reply_from_another_address_does_not_stop_the_series(campaign: Campaign) -> None:
    start(campaign)
    reply = fill("human-reply.eml", last_to(campaign, ANA)).replace(
        f"Ana <{ANA}>".encode(), b"Someone <someone@example.net>"
    )
    result = receive(campaign, reply)
    assert result.returncode == 0 and "another address" in result.stdout, result.stdout
    assert status(campaign, ANA) == "active"


@pytest.mark.slow
@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"", "empty input"),
        (b"\x00\x01\x02\xff" * 1000, "binary data"),
        (b"just some words, no header at all\n", "not an email message"),
        (b"Subject: x\n\n" + b"A" * (10 * 1024 * 1024 + 10), "larger than"),
    ],
    ids=["empty", "binary", "no-header", "huge"],
)
def test_input_that_is_no_message_is_refused_and_changes_nothing(
    campaign: Campaign, data: bytes, why: str
) -> None:
    start(campaign)
    before = everything(campaign)
    result = receive(campaign, data)
    assert result.returncode == 65, (result.stdout, result.stderr)
    assert why in result.stderr
    assert everything(campaign) == before


@pytest.mark.slow
def test_broken_mime_is_recorded_without_harm(campaign: Campaign) -> None:
    """A report with a truncated body, a boundary that never closes and garbage where the
    delivery status should be: recorded, and no lead changes."""
    start(campaign)
    sent = last_to(campaign, ANA)
    broken = (
        b"From: MAILER-DAEMON@mail.example.org\nTo: " + sent.sender.encode() + b"\n"
        b"Subject: Undelivered Mail Returned to Sender\nMessage-ID: <broken.1@mail.example.org>\n"
        b'Content-Type: multipart/report; report-type=delivery-status; boundary="zz"\n\n'
        b"--zz\nContent-Type: message/delivery-status\n\n\xff\xfe\x00garbage: \x80\x81\n"
        b"Action: \xc3\x28failed\nStatus: 9.9.9.9\n--z"
    )
    result = receive(campaign, broken)
    assert result.returncode == 0, result.stderr
    assert status(campaign, BEN) == "active"
    assert len(inbound_rows(campaign)) == 1


@pytest.mark.slow
def test_a_database_that_fails_asks_the_mta_to_try_again(
    campaign: Campaign, tmp_path: Path
) -> None:
    """Exit 75 (EX_TEMPFAIL): the MTA keeps the message; nothing is recorded anywhere."""
    start(campaign)
    dsn = fill("postfix-dsn.eml", last_to(campaign, ANA))
    missing = tmp_path / "gone" / "campaign.db"
    argv = run_py_argv("--schedule", str(campaign.schedule_path), "inbound", "receive")
    env = cli_env(**{**campaign.env(), "CAMPAIGN_DB": f"sqlite:///{missing}"})
    result = subprocess.run(argv, input=dsn, cwd=REPO, env=env, capture_output=True, timeout=60)
    assert result.returncode == 75, result.stderr
    assert b"try again later" in result.stderr and b"Traceback" not in result.stderr
    assert not missing.exists()
    assert inbound_rows(campaign) == [] and status(campaign, ANA) == "active"


@pytest.mark.slow
def test_status_and_report_show_what_came_back(campaign: Campaign) -> None:
    """Per step and in total: a bounce about Ana, an out-of-office and a reply from Ben."""
    start(campaign)
    ana, ben = last_to(campaign, ANA), last_to(campaign, BEN)
    vacation = fill("vacation-auto-reply.eml", ben).replace(ANA.encode(), BEN.encode())
    reply = fill("human-reply.eml", ben).replace(ANA.encode(), BEN.encode())
    for message in (fill("postfix-dsn.eml", ana), vacation, reply):
        assert receive(campaign, message).returncode == 0
    assert status(campaign, BEN) == "replied"

    snapshot = json.loads(campaign.cli("status", "--json").stdout)
    assert snapshot["inbound"] == {"auto-reply": 1, "hard-bounce": 1, "reply": 1}
    [first] = [row for row in snapshot["steps"] if row["step"] == "mechanisms"]
    assert (first["bounces"], first["complaints"], first["replies"]) == (1, 0, 1)
    shown = campaign.cli("status").stdout
    assert "inbound messages: 3, auto-reply 1, hard-bounce 1, reply 1" in shown

    assert "came back by mail or webhook: bounces 1, complaints 0, replies 1" in (
        campaign.cli("report").stdout
    )
    report = json.loads(campaign.cli("report", "--json").stdout)
    assert {k: report["total"][k] for k in ("bounces", "complaints", "replies")} == {
        "bounces": 1,
        "complaints": 0,
        "replies": 1,
    }
