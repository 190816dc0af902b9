"""POST /webhooks/ses: Amazon SES bounce and complaint notifications, delivered by SNS.

SNS posts three kinds of message (its `x-amz-sns-message-type` header says which, and
must agree with the body): a `SubscriptionConfirmation` when the topic's HTTPS
subscription is made, confirmed here by fetching its SubscribeURL (so no one has to paste
a token into the AWS console); `Notification`s, whose `Message` is SES's own JSON (both
the notification format, `notificationType`, and the event-publishing format,
`eventType`); and an `UnsubscribeConfirmation`, which is only noted. Every one is checked
against Amazon's signature first, unless CAMPAIGN_SNS_VERIFY_SIGNATURES=0.

SES reports our Message-ID header in `mail.commonHeaders.messageId`, so an event finds
its delivery; `mail.source` is the envelope sender (the VERP address, when configured).
A `Permanent` bounce is hard; `Transient` (a full mailbox, a message too large) and
`Undetermined` are soft; a complaint is a complaint unless its feedback type is
`not-spam`. Deliveries, sends, opens and clicks are left out.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from campaign.inbound.classify import Kind
from campaign.webhooks.base import (
    MAX_EVENTS,
    Parsed,
    Posted,
    Provider,
    WebhookEvent,
    forbidden,
    items,
    malformed,
    obj,
    text,
)
from campaign.webhooks.sns import SnsFetcher, SnsRefused, verify

# What SNS says once a topic is set up for SES: nothing to do.
_VALIDATED = "Successfully validated SNS topic for Amazon SES event publishing."
_NOTICES = ("DeliveryDelay", "Reject", "Rendering Failure")


class SesWebhook(Provider):
    name = "ses"

    def __init__(self, fetcher: SnsFetcher, verify_signatures: bool = True):
        self.fetcher = fetcher
        self.verify_signatures = verify_signatures

    def read(self, posted: Posted, now: datetime) -> Parsed:
        message = posted.json()
        if not isinstance(message, dict):
            malformed("an SNS message is a JSON object")
        kind = text(message, "Type")
        if posted.headers.get("x-amz-sns-message-type") != kind:
            malformed("the x-amz-sns-message-type header does not match the message's Type")
        try:
            if self.verify_signatures:
                verify(message, self.fetcher)
            if kind == "SubscriptionConfirmation":
                self.fetcher.get(str(message.get("SubscribeURL")), "SubscribeURL")
                return Parsed([], note=f"subscribed to {text(message, 'TopicArn')}")
        except SnsRefused as exc:
            forbidden(str(exc))
        if kind != "Notification":
            return Parsed([], ignored=1, note=f"{kind} noted")
        return self._notification(message)

    def _notification(self, message: dict[str, Any]) -> Parsed:
        body = text(message, "Message") or ""
        if body == _VALIDATED:
            return Parsed([], ignored=1)
        try:
            ses = json.loads(body)
        except (ValueError, RecursionError):
            malformed("the SNS Message is not SES's JSON")
        if not isinstance(ses, dict):
            malformed("the SNS Message is not an SES event object")
        events = _events(ses, text(message, "MessageId") or "")
        return Parsed(events, ignored=0 if events else 1)


def _events(ses: dict[str, Any], sns_id: str) -> list[WebhookEvent]:
    """One event per bounced or complaining recipient of an SES notification."""
    what = text(ses, "notificationType") or text(ses, "eventType") or ""
    mail = obj(ses, "mail")
    common = obj(mail, "commonHeaders")
    found: list[tuple[Kind, str, str | None, str]] = []  # kind, address, status, why
    if what == "Bounce":
        bounce = obj(ses, "bounce")
        severity = text(bounce, "bounceType") or "Undetermined"
        kind = Kind.HARD_BOUNCE if severity == "Permanent" else Kind.SOFT_BOUNCE
        label = f"SES {severity}/{text(bounce, 'bounceSubType') or 'General'} bounce"
        for r in items(bounce, "bouncedRecipients"):
            why = text(r, "diagnosticCode") or text(r, "status") or "no diagnostic"
            found.append(
                (kind, text(r, "emailAddress") or "", text(r, "status"), f"{label}: {why}")
            )
    elif what == "Complaint":
        complaint = obj(ses, "complaint")
        feedback = text(complaint, "complaintFeedbackType") or "unspecified"
        kind = Kind.NOTICE if feedback == "not-spam" else Kind.COMPLAINT
        for r in items(complaint, "complainedRecipients"):
            why = f"SES complaint ({feedback})"
            found.append((kind, text(r, "emailAddress") or "", None, why))
    elif what in _NOTICES:
        destination = mail.get("destination")
        for address in (destination if isinstance(destination, list) else [])[:MAX_EVENTS]:
            if isinstance(address, str):
                found.append((Kind.NOTICE, address, None, f"SES {what}"))
    raw = json.dumps(ses).encode("utf-8")
    return [
        WebhookEvent(
            provider="ses",
            event_id=f"{sns_id}:{address.lower()}",
            kind=kind,
            recipient=address or None,
            message_id=text(common, "messageId"),
            reason=why,
            status=status,
            envelope_sender=text(mail, "source"),
            subject=text(common, "subject") or "",
            raw=raw,
        )
        for kind, address, status, why in found
    ]
