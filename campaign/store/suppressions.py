"""The suppression list: addresses never mailed again by any series or import.

An address goes on it in the same transaction as its lead's status change to bounced,
complained or unsubscribed (`leads._change_status` calls `suppress`), so every way a lead
gets there (an SMTP refusal, a DSN, an ARF complaint, one-click unsubscribe, a webhook)
suppresses it without the caller having to remember. Only an operator takes an address off,
with a reason, and the row stays as the record of it.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import DateTime, String, Text, and_, func, insert, literal, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Row

from campaign.model import SUPPRESSING, LeadStatus, address_key
from campaign.store.database import Database, from_db, from_db_or_none, to_db
from campaign.store.schema import leads, suppressions

STANDING = suppressions.c.lifted_at.is_(None)
# The key of an erased address's rows (`leads erase`): this prefix, then the HMAC-SHA256 of
# its address key, so the list still refuses it without holding it. A plain key has an `@`
# and never starts so.
HASHED_PREFIX = "hmac:"
HASHED = and_(
    suppressions.c.email_key >= HASHED_PREFIX,
    suppressions.c.email_key < HASHED_PREFIX[:-1] + chr(ord(HASHED_PREFIX[-1]) + 1),
)


def hashed_key(key: bytes, email: str) -> str:
    """The key an erased address is known by on the list: a keyed hash of its address key,
    which no one without `key` can match or reverse."""
    digest = hmac.new(key, address_key(email).encode("utf-8"), hashlib.sha256).hexdigest()
    return HASHED_PREFIX + digest


@dataclass(frozen=True)
class Suppression:
    """One address on the list, or taken off it (`lifted_at`)."""

    email: str
    reason: LeadStatus  # bounced, complained or unsubscribed
    detail: str
    created_at: datetime
    lifted_at: datetime | None = None
    lifted_reason: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "email": self.email,
            "reason": self.reason.value,
            "detail": self.detail,
            "created_at": self.created_at.isoformat(),
            "lifted_at": self.lifted_at.isoformat() if self.lifted_at else None,
            "lifted_reason": self.lifted_reason,
        }


def _from_row(row: Row) -> Suppression:
    return Suppression(
        row.email,
        LeadStatus(row.reason),
        row.detail,
        from_db(row.created_at),
        from_db_or_none(row.lifted_at),
        row.lifted_reason,
    )


COLUMNS = (
    suppressions.c.email,
    suppressions.c.reason,
    suppressions.c.detail,
    suppressions.c.created_at,
    suppressions.c.lifted_at,
    suppressions.c.lifted_reason,
)


def suppress(
    conn: Connection, lead_id: int, status: LeadStatus, detail: str, now: datetime
) -> None:
    """Put the lead's address on the list in `conn`'s transaction, if `status` suppresses
    and it is not there already (the first reason stands). One statement: the address is
    read from the lead's row as it is inserted."""
    if status not in SUPPRESSING:
        return
    upsert = (sqlite.insert if conn.dialect.name == "sqlite" else postgresql.insert)(suppressions)
    source = select(
        leads.c.email_key,
        leads.c.email,
        literal(status.value, String),
        literal(detail[:500], Text),
        literal(to_db(now), DateTime),
    ).where(leads.c.id == lead_id, leads.c.email_key.is_not(None))
    conn.execute(
        upsert.from_select(
            ["email_key", "email", "reason", "detail", "created_at"], source
        ).on_conflict_do_nothing()
    )


def lift_for_lead(
    conn: Connection, lead_id: int, reason: LeadStatus, why: str, now: datetime
) -> None:
    """Lift the lead's standing suppression for `reason` in `conn`'s transaction (a bounce
    the sender caused, undone by `leads reactivate`)."""
    key = select(leads.c.email_key).where(leads.c.id == lead_id).scalar_subquery()
    conn.execute(
        update(suppressions)
        .where(suppressions.c.email_key == key, STANDING, suppressions.c.reason == reason)
        .values(lifted_at=to_db(now), lifted_reason=why)
    )


class Suppressions:
    """Every method is one short transaction."""

    def __init__(self, db: Database):
        self.db = db

    def standing(self, emails: Iterable[str]) -> dict[str, Suppression]:
        """The standing suppressions among these addresses, by address key (one query)."""
        return self._standing({address_key(e) for e in emails})

    def _standing(self, keys: Iterable[str]) -> dict[str, Suppression]:
        """The standing suppressions among these keys (address keys or hashed ones)."""
        wanted = sorted(set(keys))
        if not wanted:
            return {}
        with self.db.read() as conn:
            rows = conn.execute(
                select(suppressions.c.email_key, *COLUMNS).where(
                    suppressions.c.email_key.in_(wanted), STANDING
                )
            ).all()
        return {row.email_key: _from_row(row) for row in rows}

    def find(self, email: str) -> Suppression | None:
        return self.standing([email]).get(address_key(email))

    def listing(self, *, lifted: bool = False) -> list[Suppression]:
        """The standing suppressions, oldest first; with `lifted`, the lifted ones too."""
        query = select(*COLUMNS).order_by(suppressions.c.created_at, suppressions.c.id)
        if not lifted:
            query = query.where(STANDING)
        with self.db.read() as conn:
            return [_from_row(row) for row in conn.execute(query)]

    def lift(self, email: str, why: str, now: datetime) -> Suppression | None:
        """Take the address off the list, recording when and why; the lead's own status is
        left as it is. None when the address is not suppressed."""
        key = address_key(email)
        with self.db.tx() as conn:
            row = conn.execute(
                update(suppressions)
                .where(suppressions.c.email_key == key, STANDING)
                .values(lifted_at=to_db(now), lifted_reason=why)
                .returning(*COLUMNS)
            ).first()
        return _from_row(row) if row is not None else None

    def has_hashed(self) -> bool:
        """Whether any erased address stands on the list (only then must imports hash)."""
        with self.db.read() as conn:
            found = conn.execute(select(suppressions.c.id).where(HASHED, STANDING).limit(1))
            return found.first() is not None

    def standing_hashed(self, keys: Iterable[str]) -> dict[str, Suppression]:
        """The standing suppressions among these hashed keys (`hashed_key`), in one query."""
        return self._standing(keys)

    def lift_hashed(self, key: str, why: str, now: datetime) -> bool:
        """Lift an erased address's standing entry (a new signup with consent)."""
        with self.db.tx() as conn:
            lifted = conn.execute(
                update(suppressions)
                .where(suppressions.c.email_key == key, STANDING)
                .values(lifted_at=to_db(now), lifted_reason=why)
            ).rowcount
        return bool(lifted)

    def counts(self) -> dict[str, int]:
        """Standing suppressions per reason."""
        with self.db.read() as conn:
            rows = conn.execute(
                select(suppressions.c.reason, func.count())
                .where(STANDING)
                .group_by(suppressions.c.reason)
            ).all()
        return {reason: count for reason, count in rows}


def hash_address(conn: Connection, key: str, hashed: str, placeholder: str, now: datetime) -> None:
    """In an erasure's transaction: the address's rows keep their reasons and times under
    `hashed` and `placeholder`, and an `erased` entry stands if none did."""
    conn.execute(
        update(suppressions)
        .where(suppressions.c.email_key == key)
        .values(email_key=hashed, email=placeholder)
    )
    standing = conn.execute(
        select(suppressions.c.id).where(suppressions.c.email_key == hashed, STANDING)
    ).first()
    if standing is None:
        conn.execute(
            insert(suppressions).values(
                email_key=hashed,
                email=placeholder,
                reason=LeadStatus.ERASED.value,
                detail="erased at the person's request",
                created_at=to_db(now),
            )
        )
