"""The part every provider webhook shares: who may post, how the body is read, and what an
event becomes.

Every webhook URL carries HTTP Basic credentials whose password is CAMPAIGN_WEBHOOK_SECRET
(each provider lets the URL hold them); without the secret configured the webhooks answer
503, so an unconfigured service believes nobody. A provider's own signature is its
module's to check. Each event a provider reports becomes a `WebhookEvent`, is matched to
the delivery it is about (the Message-ID we sent, else the lead by its address) and is
handed to the inbound processor's `apply`, so a provider's bounce does exactly what the
same bounce arriving by mail does, and the same event posted twice (providers retry) is
recorded and acted on once, by its provider's event id.

Nothing a body contains answers 500: what cannot be read is 400 and says where.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import re
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar, NoReturn

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from campaign.inbound.classify import MAX_FIELD, Classified, Kind
from campaign.inbound.match import find_reported
from campaign.inbound.process import MAX_KEPT_BYTES, InboundProcessor, News
from campaign.web.replies import ApiError
from campaign.web.service import Service

log = logging.getLogger("campaign.webhooks")

MAX_WEBHOOK_BODY = 1024 * 1024  # SNS messages are at most 256 KB, SendGrid batches far less
MAX_EVENTS = 1000  # events in one post; a batch is hundreds at most
MAX_KEY = 255  # inbound_messages.message_key
_STATUS = re.compile(r"\b[245]\.\d{1,3}\.\d{1,3}\b")


def malformed(what: str) -> NoReturn:
    raise ApiError(400, {"error": what})


def forbidden(what: str) -> NoReturn:
    raise ApiError(403, {"error": what})


def _refuse_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not a number JSON allows")


@dataclass(frozen=True)
class Posted:
    """One webhook request as its provider sent it: the headers and the raw body (the
    signatures are over the exact bytes)."""

    headers: Mapping[str, str]
    body: bytes

    def json(self) -> Any:
        """The body as strict JSON (no NaN, no nesting deep enough to exhaust the parser)."""
        try:
            return json.loads(self.body, parse_constant=_refuse_constant)
        except RecursionError:
            malformed("the body nests too deeply to be a webhook event")
        except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
            malformed(f"the body is not valid JSON: {exc}")


def text(data: Mapping[str, Any], key: str) -> str | None:
    """`data[key]` when it is text or a number (providers send ids as either), else None."""
    value = data.get(key)
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        return None
    return str(value)


def obj(data: Mapping[str, Any], key: str) -> dict[str, Any]:
    """`data[key]` when it is a JSON object, else an empty one."""
    value = data.get(key)
    return value if isinstance(value, dict) else {}


def items(data: Mapping[str, Any], key: str) -> list[dict[str, Any]]:
    """The objects in the list `data[key]` (anything else in it is skipped), at most
    MAX_EVENTS."""
    value = data.get(key)
    found = value if isinstance(value, list) else []
    return [item for item in found[:MAX_EVENTS] if isinstance(item, dict)]


def status_in(words: str | None) -> str | None:
    """The first enhanced status code (RFC 3463, `5.1.1`) in a provider's text."""
    found = _STATUS.search(words or "")
    return found.group(0) if found else None


def digest(data: Any) -> str:
    """A stable id for an event whose provider gives it none: the digest of its JSON."""
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    return "sha256:" + hashlib.sha256(canonical.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class WebhookEvent:
    """One event a provider reports about one recipient of one email."""

    provider: str
    event_id: str  # the provider's own id of the event: the same event posted twice has it
    kind: Kind  # HARD_BOUNCE, SOFT_BOUNCE, COMPLAINT, or NOTICE (recorded, changes nothing)
    recipient: str | None
    message_id: str | None  # the Message-ID header we sent, as the provider reports it
    reason: str
    status: str | None = None  # the enhanced status code (RFC 3463), when reported
    envelope_sender: str | None = None  # MAIL FROM, a VERP address when return_path is set
    subject: str = ""
    raw: bytes | None = field(default=None, compare=False)  # the event's JSON, kept if unmatched

    @property
    def key(self) -> str:
        """What makes this event unique among everything inbound."""
        key = f"{self.provider}:{self.event_id}"
        if len(key) <= MAX_KEY:
            return key
        return f"{self.provider}:sha256:{hashlib.sha256(key.encode('utf-8')).hexdigest()}"


@dataclass(frozen=True)
class Parsed:
    """What one post holds: the events to record, how many routine ones (deliveries,
    opens, clicks) were left out, and what else was done (an SNS subscription confirmed)."""

    events: list[WebhookEvent]
    ignored: int = 0
    note: str = ""


class Provider(ABC):
    """One provider's webhook: its signature, if it has one, and its payloads."""

    name: ClassVar[str]

    @abstractmethod
    def read(self, posted: Posted, now: datetime) -> Parsed:
        """Check the provider's signature (403 when it is wrong) and read its events (400
        when the body is not the provider's format)."""


def _password(authorization: str) -> str | None:
    """The password of `Authorization: Basic ...`, or None when there is none."""
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except ValueError:  # binascii.Error and UnicodeDecodeError are ValueErrors
        return None
    _user, colon, password = decoded.partition(":")
    return password if colon else None


@dataclass
class Endpoint:
    """POST /webhooks/{provider}: authenticate, read, record, answer."""

    provider: Provider
    service: Service
    secret: str | None

    def authorize(self, request: Request) -> None:
        if self.secret is None:
            raise ApiError(
                503, {"error": "CAMPAIGN_WEBHOOK_SECRET is not set, so webhooks are off"}
            )
        given = _password(request.headers.get("authorization", ""))
        if given is None or not hmac.compare_digest(given.encode(), self.secret.encode()):
            # SNS sends credentials only after a 401 that names the scheme.
            raise ApiError(
                401,
                {"error": "put webhook:CAMPAIGN_WEBHOOK_SECRET in the webhook URL (Basic auth)"},
                {"WWW-Authenticate": 'Basic realm="webhooks"'},
            )

    async def receive(self, request: Request) -> Response:
        self.authorize(request)
        posted = Posted(request.headers, await request.body())
        return await run_in_threadpool(self.handle, posted)

    def handle(self, posted: Posted) -> Response:
        """Read the post, then record each event once and apply its outcome."""
        parsed = self._read(posted)
        processor = self.processor()
        received = [processor.apply(self.news(event, processor)) for event in parsed.events]
        for event, result in zip(parsed.events, received, strict=True):
            log.info("webhook %s %s: %s", self.provider.name, event.event_id, result.line())
        body: dict[str, Any] = {
            "processed": sum(not r.duplicate for r in received),
            "duplicates": sum(r.duplicate for r in received),
            "ignored": parsed.ignored,
        }
        if parsed.note:
            body["note"] = parsed.note
        return JSONResponse(body)

    def _read(self, posted: Posted) -> Parsed:
        """The provider's reading, where a body of the wrong shape is a 400, never a 500."""
        try:
            return self.provider.read(posted, self.service.clock())
        except (KeyError, TypeError, AttributeError, ValueError) as exc:
            log.warning("webhook %s: unreadable body: %r", self.provider.name, exc)
            malformed(f"not a {self.provider.name} webhook event: {type(exc).__name__} {exc}"[:300])

    def processor(self) -> InboundProcessor:
        service = self.service
        return InboundProcessor.for_schedule(
            service.store, service.renderer().schedule, lambda: service.signer, service.clock
        )

    def news(self, event: WebhookEvent, processor: InboundProcessor) -> News:
        """The event as the inbound processor takes news: classified by the provider,
        matched here."""
        recipient = event.recipient.strip().lower() if event.recipient else None
        match = find_reported(
            self.service.store.inbound,
            event.message_id,
            event.envelope_sender,
            recipient,
            processor.return_path,
        )
        classified = Classified(
            event.kind,
            event.reason[:MAX_FIELD],
            event.status[:20] if event.status else None,
            (recipient,) if recipient else (),
        )
        raw = event.raw[:MAX_KEPT_BYTES] if event.raw and match.delivery is None else None
        sender = f"{event.provider} webhook"
        return News(event.key, classified, match, sender, event.subject[:MAX_FIELD], raw)
