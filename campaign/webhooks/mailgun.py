"""POST /webhooks/mailgun: Mailgun's event webhooks (the JSON ones, since 2018).

Each post is one event: `{"signature": {"timestamp", "token", "signature"},
"event-data": {...}}`. The signature is the hex HMAC-SHA256 of timestamp followed by token,
keyed with the domain's webhook signing key; with CAMPAIGN_MAILGUN_WEBHOOK_SIGNING_KEY set
a post without a valid one, or signed more than `MAX_AGE` away from now (a replay), is
refused.

`event-data.message.headers.message-id` is our Message-ID (without its angle brackets), so
the event finds its delivery; `event-data.id` with the event's timestamp makes it unique.
A `failed` event of severity `permanent` is a hard bounce, unless Mailgun gave up after
retrying a temporary failure (reason `old`, or a 4xx code), which is a soft bounce; a
`temporary` failure is a notice (Mailgun retries); `complained` is a complaint;
unsubscribes and rejections are notices; deliveries, opens and clicks are left out.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import datetime, timedelta
from typing import Any

from campaign.inbound.classify import Kind
from campaign.webhooks.base import (
    Parsed,
    Posted,
    Provider,
    WebhookEvent,
    digest,
    forbidden,
    malformed,
    obj,
    status_in,
    text,
)

MAX_AGE = timedelta(minutes=15)  # Mailgun signs each post when it sends it
_ROUTINE = ("accepted", "delivered", "opened", "clicked")


class MailgunWebhook(Provider):
    name = "mailgun"

    def __init__(self, signing_key: str | None):
        self.signing_key = signing_key.encode("utf-8") if signing_key else None

    def verify(self, post: dict[str, Any], now: datetime) -> None:
        if self.signing_key is None:
            return
        signed = obj(post, "signature")
        timestamp, token = text(signed, "timestamp") or "", text(signed, "token") or ""
        given = text(signed, "signature") or ""
        expected = hmac.new(self.signing_key, (timestamp + token).encode(), hashlib.sha256)
        if not hmac.compare_digest(given.encode(), expected.hexdigest().encode()):
            forbidden("the Mailgun signature does not match (check the webhook signing key)")
        try:
            age = abs(now.timestamp() - float(timestamp))
        except ValueError:
            age = float("inf")
        if not age <= MAX_AGE.total_seconds():
            forbidden("the Mailgun signature's timestamp is stale: a replayed post?")

    def read(self, posted: Posted, now: datetime) -> Parsed:
        post = posted.json()
        if not isinstance(post, dict):
            malformed(
                "a Mailgun webhook posts one JSON object (the legacy form posts are not read)"
            )
        self.verify(post, now)
        data = post.get("event-data")
        if not isinstance(data, dict):
            malformed("a Mailgun event has event-data")
        what = text(data, "event")
        if what is None:
            malformed("a Mailgun event-data has an event")
        if what in _ROUTINE:
            return Parsed([], ignored=1)
        kind, why = _kind(data, what)
        message = obj(data, "message")
        headers = obj(message, "headers")
        status = obj(data, "delivery-status")
        detail = text(status, "description") or text(status, "message") or ""
        event_id = text(data, "id")
        event = WebhookEvent(
            provider=self.name,
            event_id=f"{event_id}:{text(data, 'timestamp')}" if event_id else digest(data),
            kind=kind,
            recipient=text(data, "recipient"),
            message_id=text(headers, "message-id"),
            reason=f"Mailgun {why}: {detail or text(data, 'reason') or 'no details'}",
            status=text(status, "enhanced-code") or status_in(detail),
            envelope_sender=text(obj(data, "envelope"), "sender"),
            subject=text(headers, "subject") or "",
            raw=json.dumps(data).encode("utf-8"),
        )
        return Parsed([event])


def _kind(data: dict[str, Any], what: str) -> tuple[Kind, str]:
    """The kind of a Mailgun event, and what to call it."""
    if what == "complained":
        return Kind.COMPLAINT, "complaint"
    if what != "failed":
        return Kind.NOTICE, what
    severity = text(data, "severity") or "permanent"
    if severity != "permanent":
        return Kind.NOTICE, f"{severity} failure (Mailgun retries)"
    code = text(obj(data, "delivery-status"), "code") or ""
    if text(data, "reason") == "old" or code.startswith("4"):
        return Kind.SOFT_BOUNCE, "failure after retries"
    return Kind.HARD_BOUNCE, "permanent failure"
