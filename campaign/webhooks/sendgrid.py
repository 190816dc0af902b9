"""POST /webhooks/sendgrid: SendGrid's event webhook, signed when it is set up so.

SendGrid posts a JSON array of events. With "Signed Event Webhook" on, each post carries
an ECDSA (P-256, SHA-256) signature over the timestamp header followed by the exact body,
in `X-Twilio-Email-Event-Webhook-Signature` and `-Timestamp`; with
CAMPAIGN_SENDGRID_VERIFICATION_KEY set (the base64 public key SendGrid shows), a post
without a valid one is refused.

`smtp-id` is our Message-ID header, so each event finds its delivery; `sg_event_id` makes
it unique. A `bounce` is hard for a 5.x.x status, soft for 4.x.x and for `blocked`
(SendGrid's word for a refusal over reputation or content, not the address); a
`spamreport` is a complaint; `dropped`, `deferred` and unsubscribes are notices;
processed, delivered, open and click events are left out.
"""

from __future__ import annotations

import base64
import json
from datetime import datetime
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_der_public_key

from campaign.inbound.classify import Kind
from campaign.webhooks.base import (
    MAX_EVENTS,
    Parsed,
    Posted,
    Provider,
    WebhookEvent,
    digest,
    forbidden,
    malformed,
    status_in,
    text,
)

SIGNATURE = "X-Twilio-Email-Event-Webhook-Signature"
TIMESTAMP = "X-Twilio-Email-Event-Webhook-Timestamp"
_ROUTINE = ("processed", "delivered", "open", "click", "group_resubscribe")
_NOTICES = ("dropped", "deferred", "unsubscribe", "group_unsubscribe")


class SendGridWebhook(Provider):
    name = "sendgrid"

    def __init__(self, verification_key: bytes | None):
        key = load_der_public_key(verification_key) if verification_key else None
        if key is not None and not isinstance(key, ec.EllipticCurvePublicKey):
            raise ValueError("SendGrid's verification key is an ECDSA key")
        self.key = key

    def verify(self, posted: Posted) -> None:
        if self.key is None:
            return
        signature = posted.headers.get(SIGNATURE, "")
        timestamp = posted.headers.get(TIMESTAMP, "")
        if not signature or not timestamp:
            forbidden(f"signed SendGrid posts carry {SIGNATURE} and {TIMESTAMP}")
        try:
            raw = base64.b64decode(signature, validate=True)
            self.key.verify(raw, timestamp.encode("utf-8") + posted.body, ec.ECDSA(hashes.SHA256()))
        except (ValueError, InvalidSignature):
            forbidden("the SendGrid signature does not match this post")

    def read(self, posted: Posted, now: datetime) -> Parsed:
        self.verify(posted)
        batch = posted.json()
        if not isinstance(batch, list):
            malformed("a SendGrid webhook posts a JSON array of events")
        events: list[WebhookEvent] = []
        ignored = 0
        for item in batch[:MAX_EVENTS]:
            event = _event(item) if isinstance(item, dict) else None
            if event is None:
                ignored += 1
            else:
                events.append(event)
        return Parsed(events, ignored=ignored + max(0, len(batch) - MAX_EVENTS))


def _kind(item: dict[str, Any]) -> Kind | None:
    what = text(item, "event")
    if what == "bounce":
        status = text(item, "status") or ""
        if text(item, "type") == "blocked" or status.startswith("4"):
            return Kind.SOFT_BOUNCE
        return Kind.HARD_BOUNCE
    if what == "spamreport":
        return Kind.COMPLAINT
    if what in _ROUTINE:
        return None
    return Kind.NOTICE  # the _NOTICES, and any event SendGrid adds later


def _event(item: dict[str, Any]) -> WebhookEvent | None:
    kind = _kind(item)
    if kind is None:
        return None
    what = text(item, "event") or "event"
    detail = text(item, "reason") or text(item, "response") or text(item, "type") or ""
    status = text(item, "status")
    return WebhookEvent(
        provider="sendgrid",
        event_id=text(item, "sg_event_id") or digest(item),
        kind=kind,
        recipient=text(item, "email"),
        message_id=text(item, "smtp-id"),
        reason=f"SendGrid {what}: {detail or 'no reason given'}",
        status=status_in(status) or status_in(detail),
        raw=json.dumps(item).encode("utf-8"),
    )
