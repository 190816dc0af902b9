"""POST /webhooks/postmark: Postmark's bounce and spam complaint webhooks.

Postmark signs nothing: the Basic credentials in the URL are its only proof. It posts one
JSON object per event, `RecordType` saying what: a `Bounce` (whose `Type` says which:
`HardBounce` and `BadEmailAddress` are hard, `SoftBounce` is soft, `SpamNotification` and
`SpamComplaint` are complaints, the rest, such as `Transient` while Postmark still retries
or `AutoResponder`, are notices), a `SpamComplaint`, or a `SubscriptionChange` (a notice);
deliveries, opens and clicks are left out. The event's `ID` makes it unique.

Postmark's `MessageID` is its own id, not our Message-ID header; ours is found only in
the bounce's `Content` (with "Include bounce content" on). Without it the event is matched
to its lead by `Email` alone and recorded with no step; a soft bounce is then not counted
toward the limit, because which email it is about is unknown.
"""

from __future__ import annotations

import json
from datetime import datetime

from campaign.inbound.classify import Kind
from campaign.inbound.match import SENT_MESSAGE_ID
from campaign.webhooks.base import (
    Parsed,
    Posted,
    Provider,
    WebhookEvent,
    digest,
    malformed,
    status_in,
    text,
)

_BOUNCES = {
    "HardBounce": Kind.HARD_BOUNCE,
    "BadEmailAddress": Kind.HARD_BOUNCE,
    "SoftBounce": Kind.SOFT_BOUNCE,
    "SpamNotification": Kind.COMPLAINT,
    "SpamComplaint": Kind.COMPLAINT,
}
_ROUTINE = ("Delivery", "Open", "Click")
MAX_CONTENT = 1024 * 1024  # of a bounce's content, searched for our Message-ID


class PostmarkWebhook(Provider):
    name = "postmark"

    def read(self, posted: Posted, now: datetime) -> Parsed:
        event = posted.json()
        if not isinstance(event, dict):
            malformed("a Postmark webhook posts one JSON object")
        record = text(event, "RecordType")
        if record is None:
            malformed("a Postmark event has a RecordType")
        if record in _ROUTINE:
            return Parsed([], ignored=1)
        kind = Kind.COMPLAINT if record == "SpamComplaint" else Kind.NOTICE
        bounce_type = text(event, "Type") or record
        if record == "Bounce":
            kind = _BOUNCES.get(bounce_type, Kind.NOTICE)
        details = text(event, "Details") or ""
        why = "; ".join(filter(None, [text(event, "Description"), details])) or "no details"
        event_id = text(event, "ID")
        quoted = SENT_MESSAGE_ID.search((text(event, "Content") or "")[:MAX_CONTENT])
        found = WebhookEvent(
            provider=self.name,
            event_id=f"{record}:{event_id}" if event_id else digest(event),
            kind=kind,
            recipient=text(event, "Email") or text(event, "Recipient"),
            message_id=quoted.group(0) if quoted else None,
            reason=f"Postmark {bounce_type}: {why}",
            status=status_in(details),
            subject=text(event, "Subject") or "",
            raw=json.dumps(event).encode("utf-8"),
        )
        return Parsed([found])
