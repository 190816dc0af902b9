"""Which delivery an inbound message is about.

Clues, best first: the envelope recipient when the MTA passes it (a VERP address), the
In-Reply-To and References of a reply, the returned message's own headers (its Message-ID
and Return-Path), then any VERP address or sent Message-ID anywhere in the message (the
text of a bounce that quotes them). A clue only counts once the store confirms it: a VERP
token must carry a valid signature, a Message-ID must be exactly the one stored for its
delivery (`<dID.RANDOM@domain>`, as the dispatcher makes them). So nothing a sender writes
can point a message at a lead it was not about.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from email.message import Message

from campaign.inbound.classify import header
from campaign.inbound.verp import ReturnPath
from campaign.store.inbound import DeliveryRef, InboundStore

# The dispatcher's Message-IDs: `<d{delivery id}.{48 random bits in hex}@{domain}>`.
SENT_MESSAGE_ID = re.compile(r"<d(\d{1,18})\.[0-9a-f]{12}@[^<>\s]{1,255}>", re.IGNORECASE)
MAX_CLUES = 50  # a message quoting hundreds of ids is not about any one of them


@dataclass(frozen=True)
class Clue:
    delivery_id: int
    message_id: str | None  # to compare with the stored one; None for a signed VERP token
    where: str


@dataclass(frozen=True)
class Match:
    delivery: DeliveryRef | None
    how: str  # how it was found, or why nothing was


def _message_ids(text: str, where: str) -> Iterator[Clue]:
    for found in SENT_MESSAGE_ID.finditer(text):
        yield Clue(int(found.group(1)), found.group(0), where)


def _verp(return_path: ReturnPath | None, text: str, where: str) -> Iterator[Clue]:
    if return_path is not None:
        for delivery_id in return_path.find(text):
            yield Clue(delivery_id, None, where)


def clues(
    msg: Message, text: str, rcpt: str | None, original: Message | None, rp: ReturnPath | None
) -> Iterator[Clue]:
    if rcpt and rp is not None:
        delivery_id = rp.read_address(rcpt)
        if delivery_id is not None:
            yield Clue(delivery_id, None, "envelope recipient")
    yield from _message_ids(header(msg, "In-Reply-To"), "In-Reply-To")
    references = list(_message_ids(header(msg, "References"), "References"))
    yield from reversed(references)  # the last one is the message answered
    if original is not None:
        yield from _message_ids(header(original, "Message-ID"), "returned Message-ID")
        yield from _verp(rp, header(original, "Return-Path"), "returned Return-Path")
    yield from _verp(rp, text, "VERP address in the message")
    yield from _message_ids(text, "Message-ID in the message")


def find_delivery(
    store: InboundStore,
    msg: Message,
    text: str,
    rcpt: str | None,
    original: Message | None,
    return_path: ReturnPath | None,
) -> Match:
    """The first clue the store confirms, or why none was."""
    tried: set[tuple[int, str | None]] = set()
    rejected = ""
    if (
        rcpt
        and return_path is not None
        and return_path.pattern.fullmatch(rcpt.strip("<> "))
        and return_path.read_address(rcpt) is None
    ):
        rejected = "the envelope recipient's return-path token is not valid"
    found = _first_confirmed(store, clues(msg, text, rcpt, original, return_path), tried)
    if found is not None:
        return found
    why = rejected or (
        "no return-path address or Message-ID of a sent email in it"
        if not tried
        else "it names no delivery this database sent"
    )
    return Match(None, why)


def _first_confirmed(
    store: InboundStore, candidates: Iterable[Clue], tried: set[tuple[int, str | None]]
) -> Match | None:
    """The first clue the store confirms; `tried` collects the clues looked at."""
    for clue in candidates:
        if (clue.delivery_id, clue.message_id) in tried:
            continue
        tried.add((clue.delivery_id, clue.message_id))
        if len(tried) > MAX_CLUES:
            break
        ref = store.delivery(clue.delivery_id)
        if ref is None:
            continue
        if (
            clue.message_id is not None
            and (ref.message_id or "").lower() != clue.message_id.lower()
        ):
            continue
        return Match(ref, clue.where)
    return None


def find_reported(
    store: InboundStore,
    message_id: str | None,
    envelope_sender: str | None,
    recipient: str | None,
    return_path: ReturnPath | None,
) -> Match:
    """The delivery a provider's event is about: the Message-ID we sent (as the provider
    reports it, with or without its angle brackets), else the VERP envelope sender, else
    only the lead, by the recipient's address (then which email it is about is unknown)."""
    candidates: list[Clue] = []
    if message_id:
        wrapped = message_id.strip()
        if not wrapped.startswith("<"):
            wrapped = f"<{wrapped}>"
        candidates.extend(_message_ids(wrapped[:300], "the Message-ID the provider reports"))
    if envelope_sender:
        candidates.extend(_verp(return_path, envelope_sender[:320], "the envelope sender"))
    found = _first_confirmed(store, candidates, set())
    if found is not None:
        return found
    ref = store.lead_ref(recipient) if recipient else None
    if ref is not None:
        return Match(ref, "the recipient's address (which email is unknown)")
    why = "no Message-ID we sent, and no lead has the recipient's address"
    return Match(None, why if recipient else "no Message-ID we sent, and no recipient")
