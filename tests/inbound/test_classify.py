"""The classifier and the return-path token on their own, in-process and quick: each sample
format read as the kind it is, and tokens that survive letter case but not tampering."""

from __future__ import annotations

from email import message_from_bytes
from pathlib import Path

import pytest

from campaign.inbound.classify import Kind, classify
from campaign.inbound.verp import ReturnPath
from harness.mail import signer

SAMPLES = Path(__file__).parent / "samples"
LEAD = "ana@example.com"


def sample(name: str) -> bytes:
    text = (SAMPLES / name).read_text(encoding="utf-8")
    values = {
        "verp": "bounces+ga434nepxul5k3lz@bounce.clinic.example",
        "message_id": "<d12.0123456789ab@evergreen-acupuncture.example.com>",
        "subject": "How acupuncture eases back pain",
        "date": "Mon, 02 Mar 2026 15:00:00 +0000",
        "lead": LEAD,
        "lead_local": "ana",
        "lead_domain": "example.com",
        "name": "Ana",
        "unique": "1",
    }
    for key, value in values.items():
        text = text.replace("{{" + key + "}}", value)
    return text.encode("utf-8")


@pytest.mark.parametrize(
    ("name", "kind", "status"),
    [
        ("postfix-dsn.eml", Kind.HARD_BOUNCE, "5.1.1"),
        ("exim-bounce.eml", Kind.HARD_BOUNCE, "5.1.1"),
        ("office365-ndr.eml", Kind.HARD_BOUNCE, "5.1.10"),
        ("gmail-dsn.eml", Kind.HARD_BOUNCE, "5.1.1"),
        ("soft-mailbox-full.eml", Kind.SOFT_BOUNCE, "4.2.2"),
        ("arf-complaint.eml", Kind.COMPLAINT, None),
        ("vacation-auto-reply.eml", Kind.AUTO_REPLY, None),
        ("human-reply.eml", Kind.REPLY, None),
    ],
)
def test_each_sample_is_read_as_its_kind(name: str, kind: Kind, status: str | None) -> None:
    found = classify(message_from_bytes(sample(name)))
    assert (found.kind, found.status) == (kind, status), found.reason
    if kind in (Kind.HARD_BOUNCE, Kind.SOFT_BOUNCE):
        assert found.recipients == (LEAD,)


def test_a_full_mailbox_is_soft_even_as_a_5xx() -> None:
    """Gmail says `552 5.2.2` for an account over quota: it empties, so it is soft."""
    data = sample("postfix-dsn.eml").replace(b"Status: 5.1.1", b"Status: 5.2.2")
    assert classify(message_from_bytes(data)).kind is Kind.SOFT_BOUNCE


def test_a_report_with_no_recipient_fields_is_still_a_bounce() -> None:
    """Some servers send a delivery-status part with only the reporting MTA's fields, the
    failed recipients in the text (as an old Netscape server did): that is a bounce, not a
    notice that all went well."""
    found = classify(message_from_bytes(sample("dsn-without-recipients.eml")))
    assert found.kind in (Kind.HARD_BOUNCE, Kind.SOFT_BOUNCE), found.reason
    assert found.recipients == (LEAD,), found.reason


def test_a_delay_warning_is_only_a_notice() -> None:
    data = sample("soft-mailbox-full.eml").replace(b"Action: failed", b"Action: delayed")
    assert classify(message_from_bytes(data)).kind is Kind.NOTICE


def test_an_arf_not_spam_report_is_no_complaint() -> None:
    data = sample("arf-complaint.eml").replace(b"Feedback-Type: abuse", b"Feedback-Type: not-spam")
    assert classify(message_from_bytes(data)).kind is Kind.NOTICE


def test_return_path_tokens_name_one_delivery_and_resist_tampering() -> None:
    path = ReturnPath.of("Bounces@Bounce.Clinic.Example", signer())
    address = path.address(812)
    local, _, domain = address.partition("@")
    assert domain == "bounce.clinic.example" and local.startswith("bounces+")
    assert len(local) <= 64 and local == local.lower()
    assert path.read_address(address) == 812
    assert path.read_address(f"<{address.upper()}>") == 812  # MTAs may fold case
    token = local.partition("+")[2]
    for position in range(len(token)):
        changed = (
            token[:position] + ("a" if token[position] != "a" else "b") + token[position + 1 :]
        )
        assert path.read_token(changed) is None
    assert path.read_token(token[:-1]) is None
    other_key = ReturnPath.of(
        "bounces@bounce.clinic.example", type(signer())("https://x", "k" * 32)
    )
    assert other_key.read_address(address) is None
    assert path.find(f"To: {address}\nX: {path.address(9)} {address}") == [812, 9]
