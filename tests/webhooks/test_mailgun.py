"""POST /webhooks/mailgun: Mailgun's JSON event webhooks, signed as Mailgun signs them (hex
HMAC-SHA256 of timestamp and token with a signing key made here). A permanent failure or
a complaint reaches the lead its `message-id` names; a temporary failure, which Mailgun
retries, changes nothing; a bad or stale signature is refused."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from harness.inbound import ANA
from harness.webhooks import NOW, Hooks, open_hooks, settings

SIGNING_KEY = secrets.token_hex(16)  # made for this test run only


def sign(at: float, key: str = SIGNING_KEY) -> dict[str, str]:
    timestamp, token = str(int(at)), secrets.token_hex(25)
    digest = hmac.new(key.encode(), (timestamp + token).encode(), hashlib.sha256).hexdigest()
    return {"timestamp": timestamp, "token": token, "signature": digest}


def event(hooks: Hooks, what: str, event_id: str, **extra: Any) -> dict:
    """`event-data` as Mailgun posts it; our Message-ID comes without its angle brackets."""
    return {
        "id": event_id,
        "timestamp": NOW.timestamp(),
        "log-level": "error" if what == "failed" else "warn",
        "event": what,
        "recipient": ANA,
        "recipient-domain": "example.com",
        "envelope": {
            "sender": "care@evergreen-acupuncture.example.com",
            "transport": "smtp",
            "targets": ANA,
        },
        "message": {
            "headers": {
                "to": f"Ana <{ANA}>",
                "message-id": hooks.message_id().strip("<>"),
                "from": "Evergreen Acupuncture <care@evergreen-acupuncture.example.com>",
                "subject": hooks.subject(),
            },
            "attachments": [],
            "size": 4711,
        },
        "tags": [],
        "user-variables": {},
        **extra,
    }


def failed(hooks: Hooks, severity: str = "permanent", code: int = 550) -> dict:
    status = {
        "code": code,
        "message": f"{code} 5.1.1 The email account that you tried to reach does not exist.",
        "description": "",
        "attempt-no": 1,
        "tls": True,
        "mx-host": "mx.example.com",
    }
    reason = "bounce" if severity == "permanent" else "generic"
    extra = {"severity": severity, "reason": reason, "delivery-status": status}
    return event(hooks, "failed", f"G9Bn5sl1TC6nu79C8C0bwg-{severity}", **extra)


def complained(hooks: Hooks) -> dict:
    return event(hooks, "complained", "-Agny091SquKnsrW2NEKUA")


@pytest.mark.parametrize(
    ("payload", "kind", "after"),
    [(failed, "hard-bounce", "bounced"), (complained, "complaint", "complained")],
)
def test_signed_events_reach_the_lead_once(
    tmp_path: Path, payload: Any, kind: str, after: str
) -> None:
    with open_hooks(tmp_path, settings(CAMPAIGN_MAILGUN_WEBHOOK_SIGNING_KEY=SIGNING_KEY)) as hooks:
        post = {"signature": sign(NOW.timestamp()), "event-data": payload(hooks)}
        answer = hooks.post("mailgun", post)
        assert answer.status_code == 200, answer.text
        assert answer.json() == {"processed": 1, "duplicates": 0, "ignored": 0}
        assert hooks.status() == after
        [(recorded, email, step, sender, _)] = hooks.inbound()
        assert (recorded, email, step, sender) == (kind, ANA, "mechanisms", "mailgun webhook")

        # Mailgun retries with a fresh signature: still the same event, recorded once.
        before = hooks.state()
        retry = {"signature": sign(NOW.timestamp() + 60), "event-data": payload(hooks)}
        assert hooks.post("mailgun", retry).json()["duplicates"] == 1
        assert hooks.state() == before

        hooks.next_week()
        assert hooks.ana_steps() == ["mechanisms"]


def test_bad_or_stale_signatures_are_refused(tmp_path: Path) -> None:
    with open_hooks(tmp_path, settings(CAMPAIGN_MAILGUN_WEBHOOK_SIGNING_KEY=SIGNING_KEY)) as hooks:
        before = hooks.state()
        stale = NOW - timedelta(hours=1)
        for signature in [
            sign(NOW.timestamp(), key="another-domains-key"),
            sign(stale.timestamp()),
            {**sign(NOW.timestamp()), "token": "changed"},
            {},
        ]:
            answer = hooks.post("mailgun", {"signature": signature, "event-data": failed(hooks)})
            assert answer.status_code == 403, (signature, answer.text)
        assert hooks.state() == before


def test_temporary_failures_and_deliveries_change_nothing(tmp_path: Path) -> None:
    with open_hooks(tmp_path) as hooks:
        temporary = {"signature": sign(0), "event-data": failed(hooks, "temporary", 452)}
        assert hooks.post("mailgun", temporary).json()["processed"] == 1
        delivered = event(hooks, "delivered", "hK7mQVt1QtqRiOfQXta4sw")
        answer = hooks.post("mailgun", {"signature": sign(0), "event-data": delivered})
        assert answer.json() == {"processed": 0, "duplicates": 0, "ignored": 1}
        [(kind, email, step, _, outcome)] = hooks.inbound()
        assert (kind, email, step, outcome) == ("notice", ANA, "mechanisms", "nothing to do")
        hooks.next_week()
        assert hooks.ana_steps() == ["mechanisms", "pain-types"]
