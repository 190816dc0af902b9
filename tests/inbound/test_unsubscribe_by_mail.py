"""Mail-based unsubscribe (RFC 2369, 8058): the `mailto:` of List-Unsubscribe is the email's
own VERP return path, and a message sent there unsubscribes the lead of that email.

Each test sends step 1 to two leads through the real engine and the catcher, reads the
List-Unsubscribe header as it arrived, then pipes a message to that address into the real
`run.py inbound receive` on the same SQLite file; the real `send-due` a week later shows
who still gets the drip.
"""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

import dkim
import pytest

from campaign.devtools.catcher import Caught
from harness.clock import iso
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
    with_return_path,
)

SAMPLE = "mailto-unsubscribe.eml"
REPLY_TO = "frontdesk@evergreen-acupuncture.example.com"  # the shipped schedule's


def unsubscribe_header(caught: Caught) -> str:
    return " ".join(str(caught.message["List-Unsubscribe"]).split())


@pytest.mark.slow
def test_mail_to_the_mailto_address_unsubscribes_that_lead_only(campaign: Campaign) -> None:
    start(campaign)
    ana, ben = last_to(campaign, ANA), last_to(campaign, BEN)
    assert ana.sender != ben.sender, "each email its own return path"
    for caught in (ana, ben):
        assert caught.sender.startswith("bounces+"), caught.sender
        mailto = f"<mailto:{caught.sender}?subject=unsubscribe>"
        assert unsubscribe_header(caught).endswith(", " + mailto), unsubscribe_header(caught)

    message = fill(SAMPLE, ana)
    result = receive(campaign, message, "--rcpt", ana.sender)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"unsubscribe: {ANA} (mechanisms): lead unsubscribed")
    assert "envelope recipient" in result.stdout, result.stdout
    assert (status(campaign, ANA), status(campaign, BEN)) == ("unsubscribed", "active")
    suppressed = campaign.store.suppressions.find(ANA)
    assert suppressed is not None and suppressed.reason == "unsubscribed"
    assert campaign.store.suppressions.find(BEN) is None
    [(_, kind, lead_id, step, _)] = inbound_rows(campaign)
    assert (kind, step) == ("unsubscribe", "mechanisms") and lead_id is not None

    before = everything(campaign)
    again = receive(campaign, message, "--rcpt", ana.sender)
    assert again.returncode == 0 and "already recorded" in again.stdout, again.stdout
    assert everything(campaign) == before

    campaign.send_due_cli(DAY0 + WEEK + timedelta(hours=1))
    assert steps_received(campaign, ANA) == ["mechanisms"]
    assert steps_received(campaign, BEN) == ["mechanisms", "pain-types"]


@pytest.mark.slow
def test_a_mail_program_writing_from_another_address_to_it_unsubscribes(
    campaign: Campaign,
) -> None:
    """No envelope recipient (an IMAP mailbox or a pipe without `--rcpt`): the address in To
    is enough. A forwarding address as sender and `Auto-Submitted: auto-generated` (a mail
    program answering the mailto) still unsubscribe: only Ana's email carried the token."""
    start(campaign)
    ana = last_to(campaign, ANA)
    message = fill(SAMPLE, ana).replace(
        f"From: Ana <{ANA}>".encode(),
        b"From: Ana <ana.forwarded@example.net>\nAuto-Submitted: auto-generated",
    )
    result = receive(campaign, message)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"unsubscribe: {ANA} (mechanisms): lead unsubscribed")
    assert "To/Cc" in result.stdout, result.stdout
    assert (status(campaign, ANA), status(campaign, BEN)) == ("unsubscribed", "active")


@pytest.mark.slow
def test_a_forged_token_changes_nothing(campaign: Campaign) -> None:
    start(campaign)
    ana = last_to(campaign, ANA)
    forged = ana.sender.replace("bounces+", "bounces+aa", 1)
    before = everything(campaign)[:3]
    message = fill(SAMPLE, ana).replace(ana.sender.encode(), forged.encode())
    result = receive(campaign, message, "--rcpt", forged)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("reply: no lead: matched nothing"), result.stdout
    assert everything(campaign)[:3] == before
    assert (status(campaign, ANA), status(campaign, BEN)) == ("active", "active")


@pytest.mark.slow
def test_a_reply_to_the_front_desk_saying_unsubscribe_is_a_reply(campaign: Campaign) -> None:
    """Matched only by In-Reply-To, the message went to the front desk (a copy reaches the
    inbound path): it ends the series as `replied`, as every reply does, and unsubscribes
    no one, even when the lead's text quotes the return path."""
    start(campaign)
    ana = last_to(campaign, ANA)
    reply = fill("human-reply.eml", ana)
    reply = reply.replace(
        f"Subject: Re: {ana.message['Subject']}".encode(), b"Subject: unsubscribe"
    )
    reply = reply.replace(b"Hello, thanks", f"Sent to {ana.sender}. Hello, thanks".encode())
    result = receive(campaign, reply)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"reply: {ANA} (mechanisms): series stopped"), result.stdout
    assert status(campaign, ANA) == "replied"
    assert campaign.store.suppressions.find(ANA) is None


@pytest.mark.slow
def test_without_a_return_path_the_mailto_is_the_reply_to(campaign: Campaign) -> None:
    start(campaign, return_path=False)
    for email in (ANA, BEN):
        caught = last_to(campaign, email)
        assert caught.sender == "care@evergreen-acupuncture.example.com"
        header = unsubscribe_header(caught)
        assert header.endswith(f", <mailto:{REPLY_TO}?subject=unsubscribe>"), header


@pytest.mark.slow
def test_the_verp_mailto_is_signed_by_dkim(campaign: Campaign, tmp_path: Path) -> None:
    """`dkim keygen`, then the real `send-due` with a return path: the List-Unsubscribe that
    names the VERP address verifies against the record keygen printed, and is signed."""
    key_file = tmp_path / "dkim.pem"
    made = campaign.cli("dkim", "keygen", "--selector", "s1", "--out", str(key_file))
    name = re.search(r"^\s*name:\s+(\S+)$", made.stdout, re.M)
    value = re.search(r"^\s*value:\s+(v=DKIM1;.*)$", made.stdout, re.M)
    assert name and value, made.stdout

    def dns(query: bytes, timeout: float = 5) -> bytes | None:
        return value[1].encode() if query.decode().rstrip(".") == name[1] else None

    campaign.edit(with_return_path)
    campaign.enroll(DAY0, (ANA, "Ana", "America/Chicago"))
    env = {"CAMPAIGN_DKIM_SELECTOR": "s1", "CAMPAIGN_DKIM_PRIVATE_KEY_FILE": str(key_file)}
    campaign.cli("send-due", "--now", iso(DAY0), env=env)
    ana = last_to(campaign, ANA)
    assert f"<mailto:{ana.sender}?subject=unsubscribe>" in unsubscribe_header(ana)
    assert dkim.verify(ana.data, dnsfunc=dns), ana.data[:600]
    signed = re.search(rb"^DKIM-Signature:.*?\bh=([^;]*)", ana.data, re.S | re.M)
    assert signed and b"list-unsubscribe" in re.sub(rb"\s", b"", signed[1]).lower().split(b":")
