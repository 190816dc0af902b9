"""POST /webhooks/postmark: Postmark's bounce and spam complaint webhooks, in the shapes
Postmark documents, about an email the engine really sent: the lead is bounced or
complained and gets nothing more, the other lead's drip goes on, and the same post twice
changes nothing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from harness.inbound import ANA
from harness.webhooks import NOW, Hooks, open_hooks

POSTMARK_ID = "883953f4-6105-42a2-a16a-77a8eac79483"  # Postmark's own id, not our header


def bounce(hooks: Hooks, kind: str = "HardBounce", content: bool = True, **extra: Any) -> dict:
    """A bounce as Postmark posts it; `content` includes the bounce's text ("Include bounce
    content" on), which quotes the headers of the email we sent."""
    event = {
        "RecordType": "Bounce",
        "MessageStream": "outbound",
        "ID": 4323372036854775807,
        "Type": kind,
        "TypeCode": {"HardBounce": 1, "SoftBounce": 4096, "Transient": 2}.get(kind, 1),
        "Name": "Hard bounce" if kind == "HardBounce" else kind,
        "Tag": "",
        "MessageID": POSTMARK_ID,
        "Metadata": {},
        "ServerID": 23,
        "Description": "The server was unable to deliver your message (ex: unknown user).",
        "Details": "smtp;550 5.1.1 The email account that you tried to reach does not exist.",
        "Email": ANA,
        "From": "care@evergreen-acupuncture.example.com",
        "BouncedAt": NOW.isoformat(),
        "DumpAvailable": True,
        "Inactive": kind == "HardBounce",
        "CanActivate": True,
        "Subject": hooks.subject(),
    }
    if content:
        event["Content"] = (
            "Return-Path: <>\r\nReceived: by mx.example.com\r\n"
            f"Message-ID: {hooks.message_id()}\r\nSubject: {hooks.subject()}\r\n\r\n"
            "550 5.1.1 unknown user\r\n"
        )
    return event | extra


def complaint(hooks: Hooks) -> dict:
    return {
        "RecordType": "SpamComplaint",
        "MessageStream": "outbound",
        "ID": 42,
        "Type": "SpamComplaint",
        "TypeCode": 512,
        "Name": "Spam complaint",
        "Tag": "",
        "MessageID": POSTMARK_ID,
        "Metadata": {},
        "ServerID": 23,
        "Description": "The subscriber explicitly marked this message as spam.",
        "Details": "Test spam complaint details",
        "Email": ANA,
        "From": "care@evergreen-acupuncture.example.com",
        "BouncedAt": NOW.isoformat(),
        "DumpAvailable": True,
        "Inactive": True,
        "CanActivate": False,
        "Subject": hooks.subject(),
    }


@pytest.mark.parametrize(
    ("payload", "kind", "after", "step"),
    [
        (bounce, "hard-bounce", "bounced", "mechanisms"),
        (lambda hooks: bounce(hooks, content=False), "hard-bounce", "bounced", None),
        (complaint, "complaint", "complained", None),
    ],
)
def test_bounce_and_complaint_reach_the_lead_once(
    tmp_path: Path, payload: Any, kind: str, after: str, step: str | None
) -> None:
    with open_hooks(tmp_path) as hooks:
        event = payload(hooks)
        answer = hooks.post("postmark", event)
        assert answer.status_code == 200, answer.text
        assert answer.json() == {"processed": 1, "duplicates": 0, "ignored": 0}
        assert hooks.status() == after
        [(recorded, email, recorded_step, sender, _)] = hooks.inbound()
        assert (recorded, email, recorded_step, sender) == (kind, ANA, step, "postmark webhook")

        before = hooks.state()
        again = hooks.post("postmark", event)
        assert again.json() == {"processed": 0, "duplicates": 1, "ignored": 0}
        assert hooks.state() == before

        hooks.next_week()
        assert hooks.ana_steps() == ["mechanisms"]


def test_transient_and_delivery_events_change_nothing(tmp_path: Path) -> None:
    """A Transient bounce (Postmark still retries) is recorded as a notice; a delivery is
    left out; the lead's drip goes on."""
    with open_hooks(tmp_path) as hooks:
        answer = hooks.post("postmark", bounce(hooks, "Transient", ID=7))
        assert answer.json()["processed"] == 1
        delivery = {"RecordType": "Delivery", "MessageID": POSTMARK_ID, "Recipient": ANA}
        assert hooks.post("postmark", delivery).json() == {
            "processed": 0,
            "duplicates": 0,
            "ignored": 1,
        }
        assert [row[0] for row in hooks.inbound()] == ["notice"]
        assert hooks.status() == "active"
        hooks.next_week()
        assert hooks.ana_steps() == ["mechanisms", "pain-types"]


def test_soft_bounce_without_content_is_recorded_not_counted(tmp_path: Path) -> None:
    with open_hooks(tmp_path) as hooks:
        hooks.post("postmark", bounce(hooks, "SoftBounce", content=False))
        [(kind, email, step, _, outcome)] = hooks.inbound()
        assert (kind, email, step) == ("soft-bounce", ANA, None)
        assert "not counted" in outcome
        assert hooks.status() == "active"


def test_a_bounce_for_an_unknown_address_is_kept(tmp_path: Path) -> None:
    with open_hooks(tmp_path) as hooks:
        event = bounce(hooks, content=False, Email="nobody@example.net")
        assert hooks.post("postmark", event).status_code == 200
        [(kind, email, step, _, outcome)] = hooks.inbound()
        assert (kind, email, step) == ("hard-bounce", None, None)
        assert outcome.startswith("matched nothing")
        assert hooks.status() == "active"
