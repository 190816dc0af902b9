"""A person's data: everything held about one lead, read for an export, and removed for an
erasure in one transaction that keeps every aggregate count true.

The rows of an erased lead stay (deliveries, clicks, conversions, inbound records) so that
the reports still add up; only what names or describes the person goes: the address, the
name, the time zone, the attributes, the consents, the messages' senders, subjects and
bodies. The address is also taken out of any free text that quoted it (an SMTP error, a
reason), and its suppression rows keep only a keyed hash of it (`suppressions.hash_address`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Column, Table, delete, func, or_, select, update
from sqlalchemy.engine import Connection

from campaign.model import DeliveryStatus, EnrollmentState, LeadStatus, address_key
from campaign.store.audit import Audit, lead_target
from campaign.store.database import Database, to_db
from campaign.store.schema import (
    QUEUED_STATUSES,
    audit_log,
    clicks,
    consents,
    conversions,
    deliveries,
    enrollments,
    inbound_messages,
    leads,
    suppressions,
)
from campaign.store.suppressions import hash_address

ERASED_REASON = "erased at the person's request"


def placeholder(lead_id: int) -> str:
    """The address an erased lead's row keeps: unique, and undeliverable (RFC 2606)."""
    return f"erased-{lead_id}@erased.invalid"


def _plain(value: Any) -> Any:
    """A column's value as JSON takes it: times in ISO 8601 (UTC), bodies as text."""
    if isinstance(value, datetime):
        return value.isoformat() + ("Z" if value.tzinfo is None else "")
    if isinstance(value, bytes | memoryview):
        return bytes(value).decode("utf-8", errors="replace")
    return value


def _rows(conn: Connection, table: Table, where: Any, skip: Sequence[str] = ()) -> list[dict]:
    columns = [c for c in table.c if c.name not in skip]
    found = conn.execute(select(*columns).where(where).order_by(table.c.id)).mappings()
    return [{name: _plain(value) for name, value in row.items()} for row in found]


@dataclass(frozen=True)
class ErasedLead:
    """What an erasure did, in counts (for the operator and the audit log)."""

    lead_id: int
    cancelled: int
    consents: int
    inbound: int
    suppressions: int


class Privacy:
    """Every method is one transaction."""

    def __init__(self, db: Database):
        self.db = db

    def export(self, email: str) -> dict[str, Any] | None:
        """Every row about the lead with this address (any letter case), as plain data, or
        None when no lead has it. Rows merged into it (an older copy of the address in other
        letter case) are included as `merged`."""
        key = address_key(email)
        with self.db.read() as conn:
            ids = _lead_ids(conn, key)
            if not ids:
                return None
            mine = lambda table: table.c.lead_id.in_(ids)  # noqa: E731
            targets = [lead_target(i) for i in ids]
            lead, *merged = _rows(conn, leads, leads.c.id.in_(ids), skip=["email_key"])
            return {
                "lead": lead,
                "merged": merged,
                "enrollments": _rows(conn, enrollments, mine(enrollments)),
                "consents": _rows(conn, consents, mine(consents)),
                "deliveries": _rows(conn, deliveries, mine(deliveries)),
                "clicks": _rows(conn, clicks, mine(clicks)),
                "conversions": _rows(conn, conversions, mine(conversions)),
                "inbound": _rows(conn, inbound_messages, _inbound_about(ids, key)),
                "suppressions": _rows(
                    conn, suppressions, suppressions.c.email_key == key, skip=["email_key"]
                ),
                "audit": _rows(conn, audit_log, audit_log.c.target.in_(targets)),
            }

    def erase(
        self, email: str, hashed: str, now: datetime, actor: str, detail: str = ""
    ) -> ErasedLead | None:
        """Remove the person's data everywhere, in one transaction with its audit entry;
        None when no lead has the address. `hashed` is the address's keyed hash
        (`suppressions.hashed_key`), which the suppression list keeps instead of it."""
        key = address_key(email)
        stamp = to_db(now)
        with self.db.tx() as conn:
            ids = _lead_ids(conn, key)
            if not ids:
                return None
            lead_id = ids[0]
            held_as = conn.execute(
                select(leads.c.id, leads.c.email, leads.c.status).where(leads.c.id.in_(ids))
            ).all()
            scrub = _Scrubber({row.email for row in held_as}, placeholder(lead_id))
            cancelled = conn.execute(
                update(deliveries)
                .where(deliveries.c.lead_id.in_(ids), deliveries.c.status.in_(QUEUED_STATUSES))
                .values(status=DeliveryStatus.CANCELLED, last_error=ERASED_REASON, updated_at=stamp)
            ).rowcount
            conn.execute(
                update(enrollments)
                .where(enrollments.c.lead_id.in_(ids))
                .values(state=EnrollmentState.EXITED)
            )
            inbound = conn.execute(
                update(inbound_messages)
                .where(_inbound_about(ids, key))
                .values(sender="", subject="", reason="", raw=None)
            ).rowcount
            given = conn.execute(delete(consents).where(consents.c.lead_id.in_(ids))).rowcount
            held = conn.execute(
                select(func.count())
                .select_from(suppressions)
                .where(suppressions.c.email_key == key)
            ).scalar()
            hash_address(conn, key, hashed, placeholder(lead_id), now)
            scrub.table(conn, deliveries, deliveries.c.lead_id.in_(ids), "last_error", "message_id")
            scrub.table(conn, clicks, clicks.c.lead_id.in_(ids), "url", "source_reason")
            scrub.table(conn, inbound_messages, inbound_messages.c.lead_id.in_(ids), "outcome")
            scrub.table(conn, suppressions, suppressions.c.email_key == hashed, "detail")
            scrub.table(conn, suppressions, suppressions.c.email_key == hashed, "lifted_reason")
            targets = [lead_target(i) for i in ids]
            scrub.table(conn, audit_log, audit_log.c.target.in_(targets), "detail")
            for one, _email, was in held_as:
                # A lead still in the series leaves it as `erased`; one that had left keeps
                # the status and time it left with (an unsubscribe, a bounce, a booking), so
                # the report still counts and credits it. Neither is ever mailed again: the
                # address is gone.
                still_in = LeadStatus(was) in (LeadStatus.ACTIVE, LeadStatus.PENDING)
                left = {"status": LeadStatus.ERASED, "status_at": stamp} if still_in else {}
                conn.execute(
                    update(leads)
                    .where(leads.c.id == one)
                    .values(
                        email=placeholder(one),
                        email_key=None,
                        first_name="",
                        timezone=None,
                        attributes={},
                        status_reason=f"{ERASED_REASON} (was {was})",
                        **left,
                    )
                )
            erased = ErasedLead(lead_id, cancelled, given, inbound, held or 0)
            summary = (
                f"cancelled {cancelled} queued email(s), deleted {given} consent record(s), "
                f"cleared {inbound} inbound message(s), hashed {held} suppression row(s)"
            )
            Audit.record(
                conn, actor, "erase", lead_target(lead_id), (detail + " " + summary).strip(), now
            )
            return erased


def _lead_ids(conn: Connection, key: str) -> list[int]:
    """The lead with this address key first, then rows merged into it (`schema._merge`)."""
    lead = conn.execute(select(leads.c.id).where(leads.c.email_key == key)).scalar()
    if lead is None:
        return []
    merged = conn.execute(
        select(leads.c.id)
        .where(leads.c.status == LeadStatus.MERGED, func.lower(leads.c.email) == key)
        .order_by(leads.c.id)
    ).scalars()
    return [lead, *merged]


def _inbound_about(ids: Sequence[int], key: str) -> Any:
    """Inbound messages about the lead: matched to it, or sent from its address (bare, or
    after a display name: `Ana <ana@example.com>`)."""
    sender = func.lower(inbound_messages.c.sender)
    return or_(
        inbound_messages.c.lead_id.in_(ids),
        sender == key,
        sender.endswith(f"<{key}>", autoescape=True),
    )


class _Scrubber:
    """Takes the erased addresses out of free text (errors, reasons) that quoted them."""

    def __init__(self, addresses: set[str], replacement: str):
        alternatives = "|".join(re.escape(a) for a in sorted(addresses, key=len, reverse=True))
        self.pattern = re.compile(alternatives, re.IGNORECASE)
        self.replacement = replacement

    def table(self, conn: Connection, table: Table, where: Any, name: str, *more: str) -> None:
        """Rewrite the named text columns of the rows `where` selects, where they quote it."""
        columns: list[Column] = [table.c[n] for n in (name, *more)]
        for row in conn.execute(select(table.c.id, *columns).where(where)).all():
            changed = {
                column.name: self.pattern.sub(self.replacement, value)
                for column, value in zip(columns, row[1:], strict=True)
                if isinstance(value, str) and self.pattern.search(value)
            }
            if changed:
                conn.execute(update(table).where(table.c.id == row.id).values(**changed))
