"""`run.py inbound poll`: the bounce mailbox read over IMAP, from a real Dovecot on 127.0.0.1.

Step 1 goes to two leads through the real engine; a Postfix DSN about Ana, a vacation notice,
a human reply and a message that is no email at all land in the mailbox; the real command
processes each once, moves each to the done folder, leaves them unread for a person, and
changes nothing when run again. Ana gets no more email, Ben's drip goes on.
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from harness.engine import Campaign
from harness.imap import DOVECOT, ImapServer, dovecot
from harness.inbound import (
    ANA,
    BEN,
    DAY0,
    WEEK,
    everything,
    fill,
    inbound_rows,
    last_to,
    start,
    status,
    steps_received,
)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        DOVECOT is None,
        reason="dovecot not found (Debian: apt-get install dovecot-imapd; .ci/run does)",
    ),
]


@pytest.fixture
def mailbox() -> ImapServer:
    with dovecot() as server:
        yield server


def test_poll_processes_each_message_once_and_moves_it(
    campaign: Campaign, mailbox: ImapServer
) -> None:
    start(campaign)
    sent = last_to(campaign, ANA)
    mailbox.append(
        fill("postfix-dsn.eml", sent),
        fill("vacation-auto-reply.eml", last_to(campaign, BEN)).replace(ANA.encode(), BEN.encode()),
        b"\x00\x01 not a message\r\n\r\n",
    )
    result = campaign.cli("inbound", "poll", env=mailbox.env())
    lines = result.stdout.splitlines()
    assert any(line.startswith(f"hard-bounce: {ANA} (mechanisms)") for line in lines), lines
    assert any(line.startswith("auto-reply:") for line in lines), lines
    assert "2 message(s) processed, 1 rejected" in result.stdout
    assert "not an email message" in result.stderr
    assert status(campaign, ANA) == "bounced" and status(campaign, BEN) == "active"
    assert mailbox.count("INBOX") == 0
    assert mailbox.count("Processed") == 3
    assert mailbox.unseen("Processed") == 3, "a person still sees them as new"

    before = everything(campaign)
    again = campaign.cli("inbound", "poll", env=mailbox.env())
    assert "0 message(s) processed" in again.stdout
    assert everything(campaign) == before

    campaign.send_due_cli(DAY0 + WEEK + timedelta(hours=1))
    assert steps_received(campaign, ANA) == ["mechanisms"]
    assert steps_received(campaign, BEN) == ["mechanisms", "pain-types"]


def test_a_message_polled_again_after_a_crash_changes_nothing(
    campaign: Campaign, mailbox: ImapServer
) -> None:
    """A poll that died after processing but before moving leaves the message in the
    folder: the next poll sees it again, records nothing new, and moves it."""
    start(campaign)
    reply = fill("human-reply.eml", last_to(campaign, ANA))
    mailbox.append(reply)
    campaign.cli("inbound", "poll", env=mailbox.env())
    assert status(campaign, ANA) == "replied"
    before = everything(campaign)
    mailbox.append(reply)  # as if the move had never happened
    again = campaign.cli("inbound", "poll", env=mailbox.env())
    assert "already recorded" in again.stdout, again.stdout
    assert everything(campaign) == before
    assert len(inbound_rows(campaign)) == 1
    assert mailbox.count("INBOX") == 0 and mailbox.count("Processed") == 2


def test_limit_leaves_the_rest_for_the_next_poll(campaign: Campaign, mailbox: ImapServer) -> None:
    start(campaign)
    sent = last_to(campaign, ANA)
    mailbox.append(*(fill("soft-mailbox-full.eml", sent, f"s{n}") for n in range(3)))
    first = campaign.cli("inbound", "poll", "--limit", "2", env=mailbox.env())
    assert "2 message(s) processed, 0 rejected, 1 left for the next poll" in first.stdout
    assert mailbox.count("INBOX") == 1
    second = campaign.cli("inbound", "poll", env=mailbox.env())
    assert "1 message(s) processed" in second.stdout
    assert mailbox.count("INBOX") == 0
    assert [row[1] for row in inbound_rows(campaign)] == ["soft-bounce"] * 3


def test_a_wrong_password_is_a_clear_error_and_moves_nothing(
    campaign: Campaign, mailbox: ImapServer
) -> None:
    start(campaign)
    mailbox.append(fill("postfix-dsn.eml", last_to(campaign, ANA)))
    result = campaign.cli(
        "inbound", "poll", env=mailbox.env(CAMPAIGN_IMAP_PASSWORD="wrong"), expect=1
    )
    assert "poll failed: cannot log in to 127.0.0.1" in result.stderr
    assert "wrong" not in result.stderr
    assert mailbox.count("INBOX") == 1 and status(campaign, ANA) == "active"


def test_polling_with_no_mailbox_configured_says_what_to_set(campaign: Campaign) -> None:
    result = campaign.cli("inbound", "poll", expect=2)
    assert "CAMPAIGN_IMAP_HOST" in result.stderr


def test_a_password_in_cleartext_to_another_host_is_refused(campaign: Campaign) -> None:
    env = {
        "CAMPAIGN_IMAP_HOST": "imap.clinic.example",
        "CAMPAIGN_IMAP_SECURITY": "none",
        "CAMPAIGN_IMAP_USER": "bounces",
        "CAMPAIGN_IMAP_PASSWORD": "secret-value-xyz",
    }
    result = campaign.cli("inbound", "poll", env=env, expect=2)
    assert "CAMPAIGN_IMAP_SECURITY=none" in result.stderr
    assert "secret-value-xyz" not in result.stderr
