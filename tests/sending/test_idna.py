"""Addresses at internationalised domains, over relays with and without SMTPUTF8.

A domain has an ASCII form (IDNA: `bücher.example` is `xn--bcher-kva.example`), so an address
whose local part is ASCII goes out in ASCII, through any relay. Only a non-ASCII local part
needs SMTPUTF8; a relay that does not offer it cannot carry that message, and retrying
cannot change that: the delivery fails at once, saying so, and the series goes on.
"""

from __future__ import annotations

from email import message_from_bytes
from email.policy import default as default_policy

import pytest

from campaign.leads.intake import normalize_email
from harness.rig import Rig
from harness.schedule import set_yaml_block
from harness.smtp import FaultServer

# As typed → as it must reach the relay.
ASCII_LOCAL = {
    "jose@xn--bcher-kva.example": "jose@xn--bcher-kva.example",
    "user@bücher.example": "user@xn--bcher-kva.example",
    "ann@例子.example": "ann@xn--fsqu00a.example",
}
UNICODE_LOCAL = "josé@bücher.example"


@pytest.fixture
def rig(schedule_copy, tmp_path) -> Rig:
    set_yaml_block(schedule_copy.path, "rate_limit", "  per_second: 1000\n  per_connection: 100")
    return Rig(schedule_copy.path, tmp_path / "campaign.db", timeout=2.0)


def stored(email: str) -> str:
    """The address as the lead list keeps it (the domain in Unicode)."""
    return normalize_email(email)


def test_an_ascii_local_part_goes_out_in_ascii_through_a_relay_without_smtputf8(
    rig: Rig,
) -> None:
    rig.add(*ASCII_LOCAL, name="Jose")
    with FaultServer(smtputf8=False) as server:
        report = rig.run(server.port)
        caught = server.messages
    assert (report.sent, report.retried, report.failed) == (len(ASCII_LOCAL), 0, 0), report
    assert sorted(c.recipients[0] for c in caught) == sorted(ASCII_LOCAL.values())
    for message in caught:
        assert message.data.isascii()
        (to,) = message_from_bytes(message.data, policy=default_policy)["To"].addresses
        assert to.addr_spec == message.recipients[0]
    assert all(rig.row(stored(email))["status"] == "sent" for email in ASCII_LOCAL)


def test_a_unicode_local_part_fails_at_once_on_a_relay_without_smtputf8(rig: Rig) -> None:
    rig.add(UNICODE_LOCAL, "ann@example.com")
    with FaultServer(smtputf8=False) as server:
        report = rig.run(server.port)
        caught = server.messages
    assert (report.sent, report.failed, report.retried) == (1, 1, 0), report
    assert report.stopped is None, report
    assert [c.recipients for c in caught] == [["ann@example.com"]]
    row = rig.row(UNICODE_LOCAL)
    assert (row["status"], row["attempts"]) == ("failed", 1), row
    assert "SMTPUTF8" in row["last_error"], row
    # Not a bounce: the address may be fine. The series goes on to the next step.
    assert rig.lead_status(UNICODE_LOCAL) == "active"
    assert rig.row(UNICODE_LOCAL, "pain-types")["status"] == "pending"


def test_a_unicode_local_part_goes_out_with_smtputf8_where_the_relay_offers_it(
    rig: Rig,
) -> None:
    rig.add(UNICODE_LOCAL, "user@bücher.example")
    with FaultServer() as server:
        report = rig.run(server.port)
        caught = {c.recipients[0]: c for c in server.messages}
    assert report.sent == 2 and not report.errors, report
    assert sorted(caught) == sorted([UNICODE_LOCAL, "user@xn--bcher-kva.example"])
    assert not caught[UNICODE_LOCAL].data.isascii()  # the To address as typed, in UTF-8
    assert caught["user@xn--bcher-kva.example"].data.isascii()
