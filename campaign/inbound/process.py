"""The one processor every way in shares (`inbound receive`, `serve` and `poll`): one
message's bytes in, recorded once, its outcome applied to the one lead it names. Provider
webhooks (`campaign.webhooks`) bring news already classified and hand it to `apply`, the
same place every outcome is decided.

Outcomes: a hard bounce makes the lead `bounced`; soft bounces are counted and the
schedule's `inbound.soft_bounce_limit` of them in a row makes it `bounced`; a complaint
makes it `complained` (never mailed again); a person's reply from the lead's own address
stops the series (`replied`, when `exit_on` has it); a person's message to an email's own
return-path address (the `mailto:` of its List-Unsubscribe) makes it `unsubscribed`;
auto-replies and notices are recorded and change nothing; a message that names no
delivery is kept, with why. Nothing here raises for what a message contains: only input
that is no email message at all (`NotAMessage`) and a failing database stop it, and both
change nothing.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from email import message_from_bytes
from email.message import Message
from email.utils import getaddresses

from campaign.config.schedule import Schedule
from campaign.inbound.classify import MAX_FIELD, Classified, Kind, classify, header, text_parts
from campaign.inbound.match import Match, find_delivery
from campaign.inbound.verp import ReturnPath
from campaign.model import Clock, address_key
from campaign.rendering.links import LinkSigner
from campaign.store import Store
from campaign.store.inbound import Action, InboundRecord

MAX_MESSAGE_BYTES = 10 * 1024 * 1024  # bounces and replies are small; this is no mailbox
MAX_KEPT_BYTES = 1024 * 1024  # a reply or an unmatched message kept for a person to read
_KEEP_RAW = (Kind.REPLY, Kind.UNREADABLE)
# A bounce names the failed address: one naming another address changes nothing.
_ABOUT_ADDRESS = (Kind.HARD_BOUNCE, Kind.SOFT_BOUNCE)


class NotAMessage(ValueError):
    """Input that is not an email message at all: empty, too large, no header."""


@dataclass(frozen=True)
class Received:
    """What became of one inbound message."""

    kind: Kind
    email: str | None
    step_id: str | None
    reason: str
    outcome: str
    duplicate: bool = False

    def line(self) -> str:
        who = f"{self.email} ({self.step_id})" if self.email else "no lead"
        return f"{self.kind}: {who}: {self.outcome}; {self.reason}"


def parse(raw: bytes) -> Message:
    """The message, or NotAMessage saying why these bytes are none."""
    if not raw.strip():
        raise NotAMessage("empty input: no message")
    if len(raw) > MAX_MESSAGE_BYTES:
        raise NotAMessage(f"larger than {MAX_MESSAGE_BYTES // 1024 // 1024} MB: not processed")
    head = raw.split(b"\n\n", 1)[0].split(b"\r\n\r\n", 1)[0]
    if b"\0" in head:
        raise NotAMessage("binary data, not an email message")
    msg = message_from_bytes(raw)
    if not msg.keys() or not any(header(msg, n) for n in ("From", "Message-ID", "Subject", "To")):
        raise NotAMessage("no From, To, Subject or Message-ID header: not an email message")
    return msg


def message_key(msg: Message, raw: bytes) -> str:
    """What makes two deliveries of a message the same: its Message-ID, else its bytes."""
    message_id = header(msg, "Message-ID")
    if message_id and len(message_id) <= 250:
        return message_id
    return "sha256:" + hashlib.sha256(raw).hexdigest()


@dataclass(frozen=True)
class News:
    """One piece of news about a delivery, classified and matched, ready to record: made
    from a message read here (`InboundProcessor.process`) or from a provider's webhook
    event (`campaign.webhooks`). `key` makes it unique: the same news twice is recorded
    and acted on once."""

    key: str
    classified: Classified
    match: Match
    sender: str = ""
    subject: str = ""
    raw: bytes | None = None  # kept for a person to read: replies and what matched nothing


class InboundProcessor:
    def __init__(
        self, store: Store, schedule: Schedule, return_path: ReturnPath | None, clock: Clock
    ):
        self.store = store
        self.schedule = schedule
        self.return_path = return_path
        self.clock = clock

    @classmethod
    def for_schedule(
        cls, store: Store, schedule: Schedule, signer: Callable[[], LinkSigner], clock: Clock
    ) -> InboundProcessor:
        """The processor of `schedule`'s inbound mail. `signer` is asked for only when the
        schedule names a return path: only then is the signing key needed."""
        address = schedule.sender.return_path
        return_path = ReturnPath.of(address, signer()) if address else None
        return cls(store, schedule, return_path, clock)

    def process(self, raw: bytes, rcpt: str | None = None) -> Received:
        """Record one message once and act on it; raises only NotAMessage and DatabaseError."""
        msg = parse(raw)
        key = message_key(msg, raw)
        classified = classify(msg)
        if self.store.inbound.known(key):
            return self._duplicate(classified)
        text = raw.decode("latin-1") + "\n" + text_parts(msg)
        match = find_delivery(
            self.store.inbound, msg, text, rcpt, classified.original, self.return_path
        )
        classified = self._unsubscribing(msg, rcpt, classified, match)
        kept = match.delivery is None or classified.kind in _KEEP_RAW
        news = News(
            key,
            classified,
            match,
            header(msg, "From"),
            header(msg, "Subject"),
            raw if kept else None,
        )
        return self.apply(news)

    def apply(self, news: News) -> Received:
        """Record news already classified and matched (a message read here, or a provider's
        webhook event) once, and apply its outcome to its lead: the one place outcomes are
        decided, whichever way the news came in. Raises only DatabaseError."""
        classified, ref = news.classified, news.match.delivery
        action, note = self._decide(news)
        record = InboundRecord(
            key=news.key,
            kind=classified.kind,
            received_at=self.clock(),
            reason=classified.reason[:MAX_FIELD],
            note=note,
            sender=news.sender,
            subject=news.subject,
            status_code=classified.status,
            delivery=ref,
            raw=news.raw[:MAX_KEPT_BYTES] if news.raw is not None else None,
        )
        outcome = self.store.inbound.record(record, action, self.schedule.inbound.soft_bounce_limit)
        if outcome is None:
            return self._duplicate(classified)
        email, step = (ref.email, ref.step_id) if ref else (None, None)
        return Received(classified.kind, email, step, record.reason, outcome)

    def _unsubscribing(
        self, msg: Message, rcpt: str | None, classified: Classified, match: Match
    ) -> Classified:
        """A person's (or a mail program's) message sent to the VERP address of the email
        it is about is a mail-based unsubscribe (RFC 2369, 8058): that address is the
        `mailto:` of the email's List-Unsubscribe. It must be the envelope recipient or in
        To/Cc: a reply found only by its In-Reply-To went to the front desk (`replied`).
        The sender need not be the lead (people write from a forwarding address): the
        token is an HMAC that only this lead's email carried, so it cannot be guessed."""
        ref = match.delivery
        # A mail program answering the mailto may mark its message `Auto-Submitted:
        # auto-generated` (RFC 3834); it keeps the mailto's subject, which no out-of-office has.
        asked = classified.kind is Kind.REPLY or (
            classified.kind is Kind.AUTO_REPLY
            and header(msg, "Subject").strip().lower() == "unsubscribe"
        )
        if not asked or ref is None or ref.delivery_id is None or self.return_path is None:
            return classified
        if rcpt and self.return_path.read_address(rcpt) == ref.delivery_id:
            where = "the envelope recipient"
        elif ref.delivery_id in self.return_path.find(f"{header(msg, 'To')} {header(msg, 'Cc')}"):
            where = "To/Cc"
        else:
            return classified
        reason = f"a message to this email's unsubscribe address ({where})"
        return Classified(Kind.UNSUBSCRIBE, reason)

    @staticmethod
    def _duplicate(classified: Classified) -> Received:
        return Received(classified.kind, None, None, classified.reason, "already recorded", True)

    def _decide(self, news: News) -> tuple[Action, str]:
        """What the news does to the delivery's lead, and, when it does nothing, why."""
        classified, match = news.classified, news.match
        ref = match.delivery
        if ref is None:
            return Action.NONE, f"matched nothing: {match.how}"
        lead = address_key(ref.email)
        named = {address_key(r) for r in classified.recipients}
        if classified.kind in _ABOUT_ADDRESS and named and lead not in named:
            shown = ", ".join(sorted(named))[:120]
            return Action.NONE, f"names {shown}, not the lead's address: nothing changed"
        match classified.kind:
            case Kind.HARD_BOUNCE:
                return Action.BOUNCE, ""
            case Kind.SOFT_BOUNCE:
                return Action.SOFT_BOUNCE, ""
            case Kind.COMPLAINT:
                return Action.COMPLAIN, ""
            case Kind.REPLY:
                senders = {address_key(a) for _, a in getaddresses([news.sender]) if a}
                if lead not in senders:
                    return Action.NONE, f"a reply from another address ({match.how}): kept"
                if "replied" not in self.schedule.exit_on:
                    return Action.NONE, "kept; exit_on has no replied, the series goes on"
                return Action.STOP_REPLIED, ""
            case Kind.UNSUBSCRIBE:
                return Action.UNSUBSCRIBE, ""
            case Kind.AUTO_REPLY:
                return Action.NONE, "ignored"
        return Action.NONE, "nothing to do"
