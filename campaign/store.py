"""The lead store: leads, enrollments and deliveries, on SQLite or PostgreSQL through one code path.

The database is the single source of truth and the arbiter between workers: a delivery row
is unique per (lead, campaign, step), and a worker claims one row (status `sending`,
committed) just before its SMTP transaction, so a crash leaves at most one message per
worker in doubt. PostgreSQL claims with `FOR UPDATE SKIP LOCKED`; SQLite serialises writers
with `BEGIN IMMEDIATE`. No transaction is open while talking to SMTP.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    DateTime,
    Engine,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    create_engine,
    event,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

SCHEMA_VERSION = 1

LEAD_STATUSES = ("active", "unsubscribed", "bounced", "converted")
DELIVERY_STATUSES = ("pending", "sending", "sent", "failed", "unknown", "cancelled")
OPEN_STATUSES = ("pending", "sending")

metadata = MetaData()
Id = BigInteger().with_variant(Integer, "sqlite")  # SQLite only auto-increments INTEGER keys

meta = Table(
    "meta",
    metadata,
    Column("key", String(200), primary_key=True),
    Column("value", Text, nullable=False),
)

leads = Table(
    "leads",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("email", String(320), nullable=False, unique=True),
    Column("first_name", String(200), nullable=False, default=""),
    Column("timezone", String(64), nullable=True),
    Column("attributes", JSON, nullable=False, default=dict),
    Column("status", String(20), nullable=False, default="active"),
    Column("status_reason", Text, nullable=True),
    Column("status_at", DateTime, nullable=True),
    Column("created_at", DateTime, nullable=False),
)

enrollments = Table(
    "enrollments",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("lead_id", Id, ForeignKey("leads.id"), nullable=False),
    Column("campaign_id", String(64), nullable=False),
    Column("enrolled_at", DateTime, nullable=False),
    Column("state", String(20), nullable=False, default="active"),
    UniqueConstraint("lead_id", "campaign_id", name="uq_enrollment"),
)

deliveries = Table(
    "deliveries",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("lead_id", Id, ForeignKey("leads.id"), nullable=False),
    Column("campaign_id", String(64), nullable=False),
    Column("step_id", String(64), nullable=False),
    Column("due_at", DateTime, nullable=False),
    Column("status", String(20), nullable=False, default="pending"),
    Column("attempts", Integer, nullable=False, default=0),
    Column("last_error", Text, nullable=True),
    Column("smtp_code", Integer, nullable=True),
    Column("message_id", String(255), nullable=True),
    Column("claimed_at", DateTime, nullable=True),
    Column("claimed_by", String(100), nullable=True),
    Column("sent_at", DateTime, nullable=True),
    Column("updated_at", DateTime, nullable=False),
    UniqueConstraint("lead_id", "campaign_id", "step_id", name="uq_delivery"),
    Index("ix_deliveries_due", "campaign_id", "status", "due_at"),
    Index("ix_deliveries_sent_at", "sent_at"),
)

clicks = Table(
    "clicks",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("lead_id", Id, ForeignKey("leads.id"), nullable=False),
    Column("campaign_id", String(64), nullable=False),
    Column("step_id", String(64), nullable=False),
    Column("url", Text, nullable=False),
    Column("clicked_at", DateTime, nullable=False),
    Index("ix_clicks_campaign", "campaign_id", "step_id"),
)


def to_db(moment: datetime) -> datetime:
    """Naive UTC: the one form every backend stores and compares the same way."""
    if moment.tzinfo is None:
        raise ValueError("times must be timezone-aware")
    return moment.astimezone(UTC).replace(tzinfo=None)


def from_db(value: datetime | None) -> datetime | None:
    return None if value is None else value.replace(tzinfo=UTC)


class StoreError(RuntimeError):
    """The database cannot be used as it is (wrong schema version, unreachable)."""


@dataclass(frozen=True)
class Lead:
    id: int
    email: str
    first_name: str
    timezone: str | None
    attributes: dict[str, str]
    status: str
    created_at: datetime


@dataclass(frozen=True)
class Claim:
    """A delivery this worker now owns: committed as `sending` before any SMTP traffic."""

    delivery_id: int
    lead_id: int
    campaign_id: str
    step_id: str
    attempts: int
    due_at: datetime


@dataclass(frozen=True)
class PlannedDelivery:
    step_id: str
    due_at: datetime


@dataclass(frozen=True)
class NewLead:
    """A validated lead with its first step already planned (by the pure planner)."""

    email: str
    first_name: str
    timezone: str | None
    attributes: dict[str, str]
    first: PlannedDelivery | None


def _sqlite_pragmas(engine: Engine) -> None:
    """WAL for readers beside one writer; `BEGIN IMMEDIATE` so writers queue instead of failing."""

    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # let SQLAlchemy's begin event issue BEGIN
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(connection: Connection) -> None:
        writing = connection.get_execution_options().get("writing", False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if writing else "BEGIN")


class Store:
    """All database access. Every method is one short transaction."""

    def __init__(self, engine: Engine):
        self.engine = engine
        self.is_sqlite = engine.dialect.name == "sqlite"

    @classmethod
    def open(cls, url: str, *, create: bool = True) -> Store:
        kwargs: dict[str, Any] = {"future": True}
        if url.startswith("sqlite"):
            kwargs["connect_args"] = {"timeout": 30, "check_same_thread": False}
        else:
            kwargs["pool_pre_ping"] = True
        engine = create_engine(url, **kwargs)
        if engine.dialect.name == "sqlite":
            _sqlite_pragmas(engine)
        store = cls(engine)
        if create:
            store.migrate()
        return store

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def tx(self) -> Iterator[Connection]:
        """A write transaction (on SQLite, `BEGIN IMMEDIATE`: writers queue, never deadlock)."""
        with self.engine.connect() as conn:
            conn = conn.execution_options(writing=True)
            with conn.begin():
                yield conn

    # -- schema ----------------------------------------------------------------------------

    def migrate(self) -> None:
        """Create the schema on first use and refuse a database from a newer version."""
        metadata.create_all(self.engine)
        with self.tx() as conn:
            found = conn.execute(select(meta.c.value).where(meta.c.key == "schema_version"))
            version = found.scalar()
            if version is None:
                self._put_meta(conn, "schema_version", str(SCHEMA_VERSION))
            elif int(version) > SCHEMA_VERSION:
                raise StoreError(
                    f"the database has schema version {version}, newer than this engine "
                    f"({SCHEMA_VERSION}); upgrade the engine"
                )

    def _put_meta(self, conn: Connection, key: str, value: str) -> None:
        updated = conn.execute(update(meta).where(meta.c.key == key).values(value=value))
        if updated.rowcount == 0:
            conn.execute(insert(meta).values(key=key, value=value))

    def get_meta(self, key: str) -> str | None:
        with self.engine.connect() as conn:
            return conn.execute(select(meta.c.value).where(meta.c.key == key)).scalar()

    def init_meta(self, key: str, value: str) -> None:
        with self.tx() as conn:
            if conn.execute(select(meta.c.key).where(meta.c.key == key)).first() is None:
                conn.execute(insert(meta).values(key=key, value=value))

    def set_meta(self, key: str, value: str) -> None:
        with self.tx() as conn:
            self._put_meta(conn, key, value)

    # -- leads -----------------------------------------------------------------------------

    def add_leads(self, new: Sequence[NewLead], campaign_id: str,
                  now: datetime) -> list[tuple[int, bool]]:
        """Insert and enroll leads in one transaction; known addresses are left as they are.

        Returns (lead id, created) per input, so re-importing a file changes nothing.
        """
        if not new:
            return []
        stamp = to_db(now)
        with self.tx() as conn:
            emails = [lead.email for lead in new]
            known = dict(conn.execute(select(leads.c.email, leads.c.id)
                                      .where(leads.c.email.in_(emails))).all())
            fresh = [lead for lead in new if lead.email not in known]
            if fresh:
                conn.execute(insert(leads), [
                    {"email": lead.email, "first_name": lead.first_name,
                     "timezone": lead.timezone, "attributes": lead.attributes,
                     "status": "active", "created_at": stamp} for lead in fresh])
                ids = dict(conn.execute(select(leads.c.email, leads.c.id).where(
                    leads.c.email.in_([lead.email for lead in fresh]))).all())
                conn.execute(insert(enrollments), [
                    {"lead_id": ids[lead.email], "campaign_id": campaign_id,
                     "enrolled_at": stamp, "state": "active"} for lead in fresh])
                planned = [lead for lead in fresh if lead.first is not None]
                if planned:
                    conn.execute(insert(deliveries), [
                        {"lead_id": ids[lead.email], "campaign_id": campaign_id,
                         "step_id": lead.first.step_id, "due_at": to_db(lead.first.due_at),
                         "status": "pending", "attempts": 0, "updated_at": stamp}
                        for lead in planned])
                known.update(ids)
        created = {lead.email for lead in fresh}
        return [(known[lead.email], lead.email in created) for lead in new]

    def lead(self, lead_id: int) -> Lead | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(leads).where(leads.c.id == lead_id)).mappings().first()
        return _lead(row) if row else None

    def lead_by_email(self, email: str) -> Lead | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(leads).where(leads.c.email == email)).mappings().first()
        return _lead(row) if row else None

    def set_lead_status(self, lead_id: int, status: str, reason: str, now: datetime) -> bool:
        """Move a lead out of the series (or back); cancels whatever was still pending."""
        if status not in LEAD_STATUSES:
            raise ValueError(f"unknown lead status {status!r}")
        with self.tx() as conn:
            changed = conn.execute(
                update(leads).where(leads.c.id == lead_id, leads.c.status != status)
                .values(status=status, status_reason=reason, status_at=to_db(now))
            ).rowcount
            if changed and status != "active":
                conn.execute(update(deliveries)
                             .where(deliveries.c.lead_id == lead_id,
                                    deliveries.c.status == "pending")
                             .values(status="cancelled", last_error=f"lead {status}: {reason}",
                                     updated_at=to_db(now)))
                conn.execute(update(enrollments).where(enrollments.c.lead_id == lead_id)
                             .values(state="exited"))
            return bool(changed)

    # -- history for the planner -------------------------------------------------------------

    def enrollment(self, lead_id: int, campaign_id: str) -> tuple[datetime, list[tuple]] | None:
        """When the lead joined and its past deliveries (not the pending plan)."""
        with self.engine.connect() as conn:
            enrolled = conn.execute(
                select(enrollments.c.enrolled_at).where(enrollments.c.lead_id == lead_id,
                                                        enrollments.c.campaign_id == campaign_id)
            ).scalar()
            if enrolled is None:
                return None
            rows = conn.execute(
                select(deliveries.c.step_id, deliveries.c.status,
                       func.coalesce(deliveries.c.sent_at, deliveries.c.claimed_at,
                                     deliveries.c.updated_at))
                .where(deliveries.c.lead_id == lead_id,
                       deliveries.c.campaign_id == campaign_id,
                       deliveries.c.status.not_in(("pending", "cancelled")))
                .order_by(deliveries.c.id)
            ).all()
        return from_db(enrolled), [(s, st, from_db(at)) for s, st, at in rows]

    def enrolled_leads(self, campaign_id: str, batch: int = 1000) -> Iterator[list[int]]:
        """Ids of every lead still in the series, in batches, for replanning after an edit."""
        last = 0
        while True:
            with self.engine.connect() as conn:
                ids = conn.execute(
                    select(enrollments.c.lead_id)
                    .join(leads, leads.c.id == enrollments.c.lead_id)
                    .where(enrollments.c.campaign_id == campaign_id,
                           leads.c.status == "active", enrollments.c.lead_id > last)
                    .order_by(enrollments.c.lead_id).limit(batch)
                ).scalars().all()
            if not ids:
                return
            yield list(ids)
            last = ids[-1]

    def replace_plan(self, lead_id: int, campaign_id: str, planned: PlannedDelivery | None,
                     now: datetime) -> None:
        """Make the lead's pending row match the planner's answer; sent rows are never touched."""
        with self.tx() as conn:
            if conn.execute(select(deliveries.c.id).where(
                    deliveries.c.lead_id == lead_id, deliveries.c.campaign_id == campaign_id,
                    deliveries.c.status == "sending")).first():
                return  # in flight: the outcome will plan what comes next
            pending = deliveries.c.status == "pending"
            stale = [deliveries.c.lead_id == lead_id, deliveries.c.campaign_id == campaign_id,
                     pending]
            if planned is not None:
                stale.append(deliveries.c.step_id != planned.step_id)
            conn.execute(deliveries.delete().where(*stale))
            if planned is None:
                return
            changed = conn.execute(update(deliveries).where(
                deliveries.c.lead_id == lead_id, deliveries.c.campaign_id == campaign_id,
                deliveries.c.step_id == planned.step_id, pending,
            ).values(due_at=to_db(planned.due_at), updated_at=to_db(now))).rowcount
            if not changed:
                self._insert_planned(conn, lead_id, campaign_id, planned, now)

    def _insert_planned(self, conn: Connection, lead_id: int, campaign_id: str,
                        planned: PlannedDelivery, now: datetime) -> None:
        try:
            with conn.begin_nested():
                conn.execute(insert(deliveries).values(
                    lead_id=lead_id, campaign_id=campaign_id, step_id=planned.step_id,
                    due_at=to_db(planned.due_at), status="pending", attempts=0,
                    updated_at=to_db(now)))
        except IntegrityError:
            pass  # that step already has a row (sent or otherwise): never a second one

    # -- the queue -------------------------------------------------------------------------

    def claim_next(self, campaign_id: str, now: datetime, worker: str,
                   skip_leads: Sequence[int] = ()) -> Claim | None:
        """Claim the most overdue pending delivery of an active lead, or None."""
        candidate = (
            select(deliveries.c.id)
            .join(leads, leads.c.id == deliveries.c.lead_id)
            .where(deliveries.c.campaign_id == campaign_id, deliveries.c.status == "pending",
                   deliveries.c.due_at <= to_db(now), leads.c.status == "active")
            .order_by(deliveries.c.due_at, deliveries.c.id)
            .limit(1)
            .with_for_update(skip_locked=True, of=deliveries)
        )
        if skip_leads:
            candidate = candidate.where(deliveries.c.lead_id.not_in(list(skip_leads)))
        with self.tx() as conn:
            row = conn.execute(
                update(deliveries)
                .where(deliveries.c.id == candidate.scalar_subquery(),
                       deliveries.c.status == "pending")
                .values(status="sending", claimed_at=to_db(now), claimed_by=worker,
                        attempts=deliveries.c.attempts + 1, updated_at=to_db(now))
                .returning(deliveries.c.id, deliveries.c.lead_id, deliveries.c.campaign_id,
                           deliveries.c.step_id, deliveries.c.attempts, deliveries.c.due_at)
            ).first()
        if row is None:
            return None
        return Claim(row.id, row.lead_id, row.campaign_id, row.step_id, row.attempts,
                     from_db(row.due_at))

    def lead_status(self, lead_id: int) -> str | None:
        with self.engine.connect() as conn:
            return conn.execute(select(leads.c.status).where(leads.c.id == lead_id)).scalar()

    def record_sent(self, claim: Claim, message_id: str, sent_at: datetime,
                    following: PlannedDelivery | None) -> None:
        """Mark the delivery sent and plan the next step, in one transaction."""
        with self.tx() as conn:
            conn.execute(update(deliveries).where(deliveries.c.id == claim.delivery_id).values(
                status="sent", message_id=message_id, sent_at=to_db(sent_at), last_error=None,
                smtp_code=250, updated_at=to_db(sent_at)))
            if following is not None:
                self._insert_planned(conn, claim.lead_id, claim.campaign_id, following, sent_at)
            else:
                conn.execute(update(enrollments).where(
                    enrollments.c.lead_id == claim.lead_id,
                    enrollments.c.campaign_id == claim.campaign_id,
                    enrollments.c.state == "active").values(state="completed"))

    def record_retry(self, claim: Claim, error: str, code: int | None, retry_at: datetime,
                     now: datetime) -> None:
        with self.tx() as conn:
            conn.execute(update(deliveries).where(deliveries.c.id == claim.delivery_id).values(
                status="pending", due_at=to_db(retry_at), last_error=error, smtp_code=code,
                claimed_at=None, claimed_by=None, updated_at=to_db(now)))

    def record_failed(self, claim: Claim, error: str, code: int | None, now: datetime,
                      following: PlannedDelivery | None) -> None:
        with self.tx() as conn:
            conn.execute(update(deliveries).where(deliveries.c.id == claim.delivery_id).values(
                status="failed", last_error=error, smtp_code=code, updated_at=to_db(now)))
            if following is not None:
                self._insert_planned(conn, claim.lead_id, claim.campaign_id, following, now)

    def release(self, claim: Claim, error: str, now: datetime) -> None:
        """Give a claim back untouched (the whole account was refused, not this message)."""
        with self.tx() as conn:
            conn.execute(update(deliveries).where(deliveries.c.id == claim.delivery_id).values(
                status="pending", attempts=deliveries.c.attempts - 1, last_error=error,
                claimed_at=None, claimed_by=None, updated_at=to_db(now)))

    def cancel(self, claim: Claim, reason: str, now: datetime) -> None:
        with self.tx() as conn:
            conn.execute(update(deliveries).where(deliveries.c.id == claim.delivery_id).values(
                status="cancelled", last_error=reason, updated_at=to_db(now)))

    def expire_leases(self, now: datetime, lease: timedelta) -> list[tuple[int, str]]:
        """Claims older than the lease are in doubt: mark them `unknown`, never resend them."""
        cutoff = to_db(now - lease)
        with self.tx() as conn:
            rows = conn.execute(
                update(deliveries)
                .where(deliveries.c.status == "sending", deliveries.c.claimed_at < cutoff)
                .values(status="unknown", updated_at=to_db(now),
                        last_error="claimed but never confirmed: the worker stopped mid-send")
                .returning(deliveries.c.lead_id, deliveries.c.campaign_id)
            ).all()
        return [(r.lead_id, r.campaign_id) for r in rows]

    def next_due_at(self, campaign_id: str) -> datetime | None:
        with self.engine.connect() as conn:
            value = conn.execute(
                select(func.min(deliveries.c.due_at))
                .join(leads, leads.c.id == deliveries.c.lead_id)
                .where(deliveries.c.campaign_id == campaign_id,
                       deliveries.c.status == "pending", leads.c.status == "active")
            ).scalar()
        return from_db(value)

    # -- reporting -------------------------------------------------------------------------

    def delivery_counts(self, campaign_id: str) -> dict[str, dict[str, int]]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(deliveries.c.step_id, deliveries.c.status, func.count())
                .where(deliveries.c.campaign_id == campaign_id)
                .group_by(deliveries.c.step_id, deliveries.c.status)
            ).all()
        counts: dict[str, dict[str, int]] = {}
        for step_id, status, count in rows:
            counts.setdefault(step_id, {})[status] = count
        return counts

    def lead_counts(self) -> dict[str, int]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(leads.c.status, func.count()).group_by(leads.c.status))
            return {status: count for status, count in rows}

    def deliveries_with_status(self, campaign_id: str, status: str) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(deliveries.c.id, leads.c.email, deliveries.c.step_id,
                       deliveries.c.claimed_at, deliveries.c.last_error)
                .join(leads, leads.c.id == deliveries.c.lead_id)
                .where(deliveries.c.campaign_id == campaign_id, deliveries.c.status == status)
                .order_by(deliveries.c.id)
            ).mappings().all()
        return [dict(r) for r in rows]


def _lead(row: Any) -> Lead:
    attributes = row["attributes"]
    if isinstance(attributes, str):  # pragma: no cover - some drivers hand JSON back as text
        attributes = json.loads(attributes)
    return Lead(row["id"], row["email"], row["first_name"], row["timezone"], attributes or {},
                row["status"], from_db(row["created_at"]))
