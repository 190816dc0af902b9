"""Mail that came back: the deliveries it names, its record, and what it does to the lead.

Recording a message and acting on it are one transaction, and the record is unique by the
message's key: the same DSN delivered twice (an MTA retrying, `receive` run again) finds
its record already there and changes nothing.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select, update
from sqlalchemy.engine import Connection

from campaign.model import DeliveryStatus, LeadStatus, address_key
from campaign.store.database import Database, from_db, to_db
from campaign.store.leads import _change_status, _current_id
from campaign.store.schema import deliveries, inbound_messages, leads


class Action(enum.StrEnum):
    """What a recorded message does to its lead."""

    NONE = "none"
    BOUNCE = "bounce"  # hard bounce: the lead is `bounced`
    SOFT_BOUNCE = "soft-bounce"  # counted; the limit in a row makes the lead `bounced`
    COMPLAIN = "complain"  # the lead is `complained`, never mailed again
    STOP_REPLIED = "stop-replied"  # the lead wrote back: `replied`, the series stops
    UNSUBSCRIBE = "unsubscribe"  # mail to the List-Unsubscribe address: `unsubscribed`


# A stronger status is never overwritten by a weaker one: an unsubscribed lead who bounces
# stays unsubscribed; a complaint overrides everything but a merge.
_BOUNCE_FROM = (LeadStatus.ACTIVE, LeadStatus.PENDING, LeadStatus.CONVERTED, LeadStatus.REPLIED)
_COMPLAIN_FROM = tuple(s for s in LeadStatus if s not in (LeadStatus.MERGED, LeadStatus.COMPLAINED))
# A lead who bounced or complained is suppressed already, and stays so for that reason.
_UNSUBSCRIBE_FROM = (
    LeadStatus.ACTIVE,
    LeadStatus.PENDING,
    LeadStatus.CONVERTED,
    LeadStatus.REPLIED,
)


@dataclass(frozen=True)
class DeliveryRef:
    """A delivery an inbound message names, with its lead's address to check it against.

    A provider's webhook may name only the recipient's address: then the ref is the lead's
    alone (`delivery_id`, `campaign_id` and `step_id` None), since which email it is about
    is unknown."""

    delivery_id: int | None
    lead_id: int
    campaign_id: str | None
    step_id: str | None
    message_id: str | None
    email: str


@dataclass(frozen=True)
class InboundRecord:
    """One inbound message as it is kept."""

    key: str
    kind: str
    received_at: datetime
    reason: str
    note: str = ""  # what the processor decided when the message changes nothing, and why
    sender: str = ""
    subject: str = ""
    status_code: str | None = None
    delivery: DeliveryRef | None = None
    raw: bytes | None = None


@dataclass(frozen=True)
class InboundRow:
    """An inbound record as `inbound list` shows it."""

    received_at: datetime
    kind: str
    email: str | None
    step_id: str | None
    sender: str
    subject: str
    reason: str
    outcome: str


class InboundStore:
    def __init__(self, db: Database):
        self.db = db

    def delivery(self, delivery_id: int) -> DeliveryRef | None:
        with self.db.read() as conn:
            row = conn.execute(
                select(
                    deliveries.c.id,
                    deliveries.c.lead_id,
                    deliveries.c.campaign_id,
                    deliveries.c.step_id,
                    deliveries.c.message_id,
                    leads.c.email,
                )
                .join(leads, leads.c.id == deliveries.c.lead_id)
                .where(deliveries.c.id == delivery_id)
            ).first()
        return DeliveryRef(*row) if row is not None else None

    def lead_ref(self, email: str) -> DeliveryRef | None:
        """The lead with this address (any letter case), as a ref with no delivery."""
        with self.db.read() as conn:
            row = conn.execute(
                select(leads.c.id, leads.c.email).where(leads.c.email_key == address_key(email))
            ).first()
        return DeliveryRef(None, row.id, None, None, None, row.email) if row is not None else None

    def known(self, key: str) -> bool:
        with self.db.read() as conn:
            found = conn.execute(
                select(inbound_messages.c.id).where(inbound_messages.c.message_key == key)
            ).first()
        return found is not None

    def record(self, record: InboundRecord, action: Action, soft_limit: int) -> str | None:
        """Keep `record` and apply `action` to its lead, in one transaction; returns what was
        done, or None when this message was already recorded (then nothing changes)."""
        ref = record.delivery
        with self.db.tx() as conn:
            added = conn.execute(
                self.db.insert(inbound_messages)
                .on_conflict_do_nothing()
                .returning(inbound_messages.c.id),
                {
                    "message_key": record.key,
                    "kind": record.kind,
                    "received_at": to_db(record.received_at),
                    "lead_id": ref.lead_id if ref else None,
                    "campaign_id": ref.campaign_id if ref else None,
                    "step_id": ref.step_id if ref else None,
                    "delivery_id": ref.delivery_id if ref else None,
                    "status_code": record.status_code,
                    "sender": record.sender[:320],
                    "subject": record.subject,
                    "reason": record.reason,
                    "outcome": "",
                    "raw": record.raw,
                },
            ).scalar()
            if added is None:
                return None
            outcome = record.note or "nothing changed"
            if ref is not None and action is not Action.NONE:
                outcome = _apply(conn, ref, action, record, soft_limit)
            conn.execute(
                update(inbound_messages)
                .where(inbound_messages.c.id == added)
                .values(outcome=outcome)
            )
            return outcome

    def counts(self, campaign_id: str) -> dict[str, dict[str, int]]:
        """How many messages came back, per kind: `{step_id: {kind: n}}` for this campaign's
        steps, and under "" everything that named no step of it (unmatched mail, another
        series, a webhook matched by address alone)."""
        step = func.coalesce(inbound_messages.c.step_id, "")
        query = (
            select(step.label("step"), inbound_messages.c.kind, func.count().label("n"))
            .where(
                (inbound_messages.c.campaign_id == campaign_id)
                | inbound_messages.c.campaign_id.is_(None)
            )
            .group_by(step, inbound_messages.c.kind)
        )
        counts: dict[str, dict[str, int]] = {}
        with self.db.read() as conn:
            for row in conn.execute(query):
                counts.setdefault(row.step, {})[row.kind] = row.n
        return counts

    def recent(self, limit: int = 50, kind: str | None = None) -> list[InboundRow]:
        query = (
            select(
                inbound_messages.c.received_at,
                inbound_messages.c.kind,
                leads.c.email,
                inbound_messages.c.step_id,
                inbound_messages.c.sender,
                inbound_messages.c.subject,
                inbound_messages.c.reason,
                inbound_messages.c.outcome,
            )
            .outerjoin(leads, leads.c.id == inbound_messages.c.lead_id)
            .order_by(inbound_messages.c.received_at.desc(), inbound_messages.c.id.desc())
            .limit(limit)
        )
        if kind is not None:
            query = query.where(inbound_messages.c.kind == kind)
        with self.db.read() as conn:
            rows = conn.execute(query).all()
        return [InboundRow(from_db(r[0]), *r[1:]) for r in rows]


def _apply(
    conn: Connection, ref: DeliveryRef, action: Action, record: InboundRecord, soft_limit: int
) -> str:
    lead_id = _current_id(conn, ref.lead_id)
    now = record.received_at
    reason = f"{record.kind}: {record.reason}"[:500]
    match action:
        case Action.BOUNCE:
            changed = _change_status(
                conn, lead_id, LeadStatus.BOUNCED, reason, now, only_from=_BOUNCE_FROM
            )
            return "lead bounced" if changed else "lead already out of the series"
        case Action.COMPLAIN:
            changed = _change_status(
                conn, lead_id, LeadStatus.COMPLAINED, reason, now, only_from=_COMPLAIN_FROM
            )
            return "lead complained: never mailed again" if changed else "already complained"
        case Action.STOP_REPLIED:
            changed = _change_status(
                conn, lead_id, LeadStatus.REPLIED, reason, now, only_from=(LeadStatus.ACTIVE,)
            )
            return "series stopped (replied)" if changed else "lead already out of the series"
        case Action.UNSUBSCRIBE:
            changed = _change_status(
                conn, lead_id, LeadStatus.UNSUBSCRIBED, reason, now, only_from=_UNSUBSCRIBE_FROM
            )
            return "lead unsubscribed: never mailed again" if changed else "lead already left"
        case Action.SOFT_BOUNCE:
            if ref.delivery_id is None:
                return "soft bounce recorded; which email it is about is unknown: not counted"
            in_row = _soft_bounces_in_a_row(conn, lead_id, soft_limit)
            if in_row < soft_limit:
                return f"soft bounce {in_row} of {soft_limit} in a row"
            why = f"{soft_limit} emails in a row soft-bounced; last: {record.reason}"[:500]
            changed = _change_status(
                conn, lead_id, LeadStatus.BOUNCED, why, now, only_from=_BOUNCE_FROM
            )
            return f"lead bounced ({soft_limit} soft bounces in a row)" if changed else "counted"
    return "nothing changed"  # pragma: no cover - every action is handled above


def _soft_bounces_in_a_row(conn: Connection, lead_id: int, limit: int) -> int:
    """How many of the lead's last `limit` emails sent, newest first and without a gap,
    soft-bounced (several reports about one email count once)."""
    last = conn.execute(
        select(deliveries.c.id)
        .where(deliveries.c.lead_id == lead_id, deliveries.c.status == DeliveryStatus.SENT)
        .order_by(deliveries.c.sent_at.desc(), deliveries.c.id.desc())
        .limit(limit)
    ).scalars()
    ids = list(last)
    bounced = set(
        conn.execute(
            select(inbound_messages.c.delivery_id).where(
                inbound_messages.c.delivery_id.in_(ids),
                inbound_messages.c.kind == "soft-bounce",
            )
        ).scalars()
    )
    count = 0
    for delivery_id in ids:
        if delivery_id not in bounced:
            break
        count += 1
    return count
