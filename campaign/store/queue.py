"""The lead store: leads, enrollments and deliveries, on SQLite or PostgreSQL through one code path.

The database is the single source of truth and the arbiter between workers: a delivery row
is unique per (lead, campaign, step). A worker reserves a short run of due rows at once
(status `claimed`: taken from the queue, not yet attempted) and then starts them one at a
time: a row turns `sending`, committed, just before its SMTP transaction, and only after
the previous row of that connection was settled. So a crash leaves at most one message per
connection in doubt, and the reserved rows behind it simply go back to the queue.
PostgreSQL reserves with `FOR UPDATE SKIP LOCKED`; SQLite serialises writers with
`BEGIN IMMEDIATE`. No transaction is open while talking to SMTP.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
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
    bindparam,
    create_engine,
    event,
    exists,
    func,
    insert,
    inspect,
    literal_column,
    select,
    text,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DisconnectionError, IntegrityError
from sqlalchemy.sql import Select, Update

from campaign.model import Claim, Lead, NewLead, PlannedDelivery, Sent, Start
from campaign.store.prepared import Prepared, execute
from campaign.store.writelock import WriteLock

SCHEMA_VERSION = 1
IDLE_PING_AFTER = 2.0  # seconds idle after which a pooled connection is checked before use
MIGRATION_LOCK = 0x63616D70  # PostgreSQL advisory lock key held while creating the schema

# `pending`: signed up on the web with double opt-in, waiting for the confirmation click.
LEAD_STATUSES = ("active", "pending", "unsubscribed", "bounced", "converted")
DELIVERY_STATUSES = ("pending", "claimed", "sending", "sent", "failed", "unknown", "cancelled")
QUEUED = ("pending", "claimed")  # planned and not yet attempted: a replan or a leaver may drop it
PENDING = literal_column("'pending'")  # inline, as in the partial index's WHERE clause

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
    # The queue: only pending rows, in claim order, so finding the next due delivery stays one
    # short index range scan however many millions of sent rows pile up beside it.
    Index(
        "ix_deliveries_due",
        "campaign_id",
        "due_at",
        "id",
        postgresql_where=text("status = 'pending'"),
        sqlite_where=text("status = 'pending'"),
    ),
    Index("ix_deliveries_status", "status", "campaign_id"),  # leases, reports, in-doubt lists
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

# At most one conversion per lead and campaign, kept even if the lead later unsubscribes, so
# reports still credit the step that brought the booking.
conversions = Table(
    "conversions",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("lead_id", Id, ForeignKey("leads.id"), nullable=False),
    Column("campaign_id", String(64), nullable=False),
    Column("step_id", String(64), nullable=True),
    Column("source", String(20), nullable=False),
    Column("converted_at", DateTime, nullable=False),
    UniqueConstraint("lead_id", "campaign_id", name="uq_conversion"),
)


# -- the per-message statements, built once: building one costs more than running it --------


def _due(campaign: Any, now: Any, limit: Any) -> Select:
    """The next due deliveries of active leads, in claim order (served by ix_deliveries_due).

    `'pending'` is a literal so the partial index matches even in a generic prepared plan.
    """
    return (
        select(deliveries.c.id)
        .join(leads, leads.c.id == deliveries.c.lead_id)
        .where(
            deliveries.c.campaign_id == campaign,
            deliveries.c.status == PENDING,
            deliveries.c.due_at <= now,
            leads.c.status == "active",
        )
        .order_by(deliveries.c.due_at, deliveries.c.id)
        .limit(limit)
        .with_for_update(skip_locked=True, of=deliveries)
    )


def _reserve(candidates: Select) -> Update:
    """Take rows out of the queue for one connection. `attempts` is not counted yet: a
    reserved row that is never started goes back untouched.

    The candidates are a materialised CTE: as a plain `IN (subquery)` PostgreSQL may run
    the locking subquery once per outer row and take more rows than the limit. They are
    matched by id alone, so that SQLite looks each one up by its key rather than scanning
    every pending row; they are still pending when updated, because they are read under
    the same lock (`BEGIN IMMEDIATE`, `FOR UPDATE`).
    """
    now = bindparam("claim_now", type_=DateTime)
    due = candidates.cte("due").prefix_with("MATERIALIZED")
    return (
        update(deliveries)
        .where(deliveries.c.id.in_(select(due.c.id)))
        .values(status="claimed", claimed_at=now, claimed_by=bindparam("claim_worker"))
        .returning(
            deliveries.c.id,
            deliveries.c.lead_id,
            deliveries.c.campaign_id,
            deliveries.c.step_id,
            deliveries.c.attempts,
            deliveries.c.due_at,
        )
    )


DUE = _due(
    bindparam("campaign", type_=String),
    bindparam("due_before", type_=DateTime),
    bindparam("limit", type_=Integer),
)
RESERVE = _reserve(DUE)
LEADS_AND_ENROLLMENTS = (
    select(leads, enrollments.c.enrolled_at)
    .outerjoin(
        enrollments,
        (enrollments.c.lead_id == leads.c.id)
        & (enrollments.c.campaign_id == bindparam("campaign")),
    )
    .where(leads.c.id.in_(bindparam("leads", expanding=True)))
)
PAST = ("pending", "claimed", "cancelled")  # not history: planned, or never attempted
HISTORY_COLUMNS = (
    deliveries.c.step_id,
    deliveries.c.status,
    func.coalesce(deliveries.c.sent_at, deliveries.c.claimed_at, deliveries.c.updated_at),
)
HISTORY = (
    select(*HISTORY_COLUMNS)
    .where(
        deliveries.c.lead_id == bindparam("lead"),
        deliveries.c.campaign_id == bindparam("campaign"),
        deliveries.c.status.not_in(PAST),
    )
    .order_by(deliveries.c.id)
)
HISTORIES = (
    select(deliveries.c.lead_id, *HISTORY_COLUMNS)
    .where(
        deliveries.c.lead_id.in_(bindparam("leads", expanding=True)),
        deliveries.c.campaign_id == bindparam("campaign"),
        deliveries.c.status.not_in(PAST),
    )
    .order_by(deliveries.c.id)
)
# The point of no return: a reserved row becomes the connection's one message in flight,
# only if it is still this worker's and its lead is still in the series (the last look).
START = (
    update(deliveries)
    .where(
        deliveries.c.id == bindparam("delivery"),
        deliveries.c.status == "claimed",
        deliveries.c.claimed_by == bindparam("worker"),
        exists().where(leads.c.id == deliveries.c.lead_id, leads.c.status == "active"),
    )
    .values(
        status="sending",
        claimed_at=bindparam("start_now", type_=DateTime),
        attempts=deliveries.c.attempts + 1,
        updated_at=bindparam("start_now", type_=DateTime),
    )
)
MARK_SENT = (
    update(deliveries)
    .where(deliveries.c.id == bindparam("delivery"))
    .values(
        status="sent",
        message_id=bindparam("sent_message_id"),
        sent_at=bindparam("sent_now", type_=DateTime),
        last_error=None,
        smtp_code=250,
        updated_at=bindparam("sent_now", type_=DateTime),
    )
)

# What planning a step sets; the rest of the row takes its defaults.
PLANNED_COLUMNS = (
    "lead_id",
    "campaign_id",
    "step_id",
    "due_at",
    "status",
    "attempts",
    "updated_at",
)

# What a claimed row goes back to when it is to be tried again (or not at all, yet).
UNCLAIMED = {"status": PENDING, "claimed_at": None, "claimed_by": None}


def _settled(claim: Claim, now: datetime, **values: Any) -> Update:
    """The one statement that ends a claim: the outcome's columns plus the time it changed."""
    return (
        update(deliveries)
        .where(deliveries.c.id == claim.delivery_id)
        .values(**values, updated_at=to_db(now))
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


def _sqlite_pragmas(engine: Engine) -> None:
    """WAL for readers beside one writer, and transactions begun by the store itself.

    pysqlite's own transaction handling would begin a transaction only at the first write,
    so the store turns it off and says BEGIN itself (`Store.read`, `Store.tx`). Not through
    SQLAlchemy's `begin` event: any connection event makes every statement dispatch the
    execution events too, which cost a fifth of the database time of a send.
    """

    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # the store issues BEGIN itself: read(), tx()
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()


def _ping_when_idle(engine: Engine) -> None:
    """Check a pooled connection before use only if it sat idle: a server restart or an idle
    timeout closes idle connections, while one used a moment ago is known to be alive.

    `pool_pre_ping` would ping before every checkout, one extra round trip per query.
    """

    @event.listens_for(engine, "checkin")
    def _checkin(_dbapi_connection: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _checkout(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        if time.monotonic() - record.info.get("idle_since", 0.0) < IDLE_PING_AFTER:
            return
        try:
            cursor = dbapi_connection.cursor()
            cursor.execute("SELECT 1")
            cursor.close()
        except engine.dialect.loaded_dbapi.Error as exc:
            raise DisconnectionError(f"dropped while idle: {exc}") from exc  # pool reconnects


class Store:
    """All database access. Every method is one short transaction."""

    def __init__(self, engine: Engine):
        self.engine = engine
        self.is_sqlite = engine.dialect.name == "sqlite"
        # The statements a sender runs for every message, compiled once for this database.
        dialect = engine.dialect
        self._start_sql = Prepared(START, dialect)
        self._mark_sent_sql = Prepared(MARK_SENT, dialect)
        self._plan_sql = Prepared(
            self._insert(deliveries).inline().on_conflict_do_nothing(), dialect, PLANNED_COLUMNS
        )
        self._held = threading.local()  # see `holding`
        # SQLite has one writer at a time: writers queue (campaign.writelock) instead of
        # polling SQLite's busy handler, which sleeps in steps of milliseconds.
        self._writer: AbstractContextManager[Any] = nullcontext()
        if self.is_sqlite:
            database = engine.url.database
            on_disk = database and database != ":memory:" and not database.startswith("file:")
            self._writer = WriteLock(f"{database}-lock" if on_disk else None)

    @classmethod
    def open(cls, url: str, *, create: bool = True) -> Store:
        kwargs: dict[str, Any] = {"future": True}
        if url.startswith("sqlite"):
            kwargs["connect_args"] = {"timeout": 30, "check_same_thread": False}
        engine = create_engine(url, **kwargs)
        if engine.dialect.name == "sqlite":
            _sqlite_pragmas(engine)
        else:
            _ping_when_idle(engine)
        store = cls(engine)
        if create:
            store.migrate()
        return store

    def close(self) -> None:
        self.engine.dispose()
        if isinstance(self._writer, WriteLock):
            self._writer.close()

    @contextmanager
    def tx(self) -> Iterator[Connection]:
        """A write transaction (on SQLite, `BEGIN IMMEDIATE`: writers queue, never deadlock)."""
        held = getattr(self._held, "connection", None)
        connection = nullcontext(held) if held else self.engine.connect()
        with self._writer, connection as conn, conn.begin():
            if self.is_sqlite:
                execute(conn, "BEGIN IMMEDIATE")
            yield conn

    @contextmanager
    def holding(self) -> Iterator[None]:
        """Keep one connection for this thread's write transactions until the block ends.

        A sender writes once per message; taking a connection from the pool and handing it
        back (with the pool's rollback) each time costs a tenth of that. Held only for one
        run, so a connection never sits idle in between (`_ping_when_idle` still checks it).
        """
        with self.engine.connect() as conn:
            self._held.connection = conn
            try:
                yield
            finally:
                self._held.connection = None

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """A read transaction: on SQLite every statement in it sees the same committed state;
        on PostgreSQL (READ COMMITTED) each statement sees what was committed when it began."""
        with self.engine.connect() as conn:
            if self.is_sqlite:
                execute(conn, "BEGIN")
            yield conn

    # -- schema ----------------------------------------------------------------------------

    def migrate(self) -> None:
        """Create the schema on first use and refuse a database from a newer version.

        Workers started together on a fresh database would race to create it: PostgreSQL
        serialises them on an advisory lock, SQLite on its write lock. Indexes added to a
        table after it was created are added too (`create_all` skips existing tables), and
        an index an earlier version defined on other columns under the same name is rebuilt.
        """
        with self.tx() as conn:
            if not self.is_sqlite:
                conn.execute(select(func.pg_advisory_xact_lock(MIGRATION_LOCK)))
            metadata.create_all(conn)
            for table in metadata.sorted_tables:
                found = {
                    i["name"]: i["column_names"] for i in inspect(conn).get_indexes(table.name)
                }
                for index in table.indexes:
                    if found.get(index.name, index.columns.keys()) != index.columns.keys():
                        index.drop(conn)
                    index.create(conn, checkfirst=True)
            found = conn.execute(select(meta.c.value).where(meta.c.key == "schema_version"))
            version = found.scalar()
            if version is None:
                self._put_meta(conn, "schema_version", str(SCHEMA_VERSION))
            elif int(version) > SCHEMA_VERSION:
                raise StoreError(
                    f"the database has schema version {version}, newer than this engine "
                    f"({SCHEMA_VERSION}); upgrade the engine"
                )

    def _insert(self, table: Table) -> Any:
        """The dialect's INSERT, which knows `ON CONFLICT` (PostgreSQL and SQLite ≥ 3.24)."""
        return (sqlite.insert if self.is_sqlite else postgresql.insert)(table)

    def _put_meta(self, conn: Connection, key: str, value: str) -> None:
        """An upsert: two workers setting the same key at once must not collide."""
        conn.execute(
            self._insert(meta)
            .values(key=key, value=value)
            .on_conflict_do_update(index_elements=[meta.c.key], set_={"value": value})
        )

    def get_meta(self, key: str) -> str | None:
        with self.read() as conn:
            return conn.execute(select(meta.c.value).where(meta.c.key == key)).scalar()

    def init_meta(self, key: str, value: str) -> None:
        """Set the key unless it is already set (first writer wins, concurrent ones too)."""
        with self.tx() as conn:
            conn.execute(self._insert(meta).values(key=key, value=value).on_conflict_do_nothing())

    def set_meta(self, key: str, value: str) -> None:
        with self.tx() as conn:
            self._put_meta(conn, key, value)

    def book_slot(self, key: str, spacing: float, now: float, within: float) -> float:
        """The next free moment (seconds since the epoch) on the cadence kept under `key`,
        never before `now`. It is booked, moving the next free one `spacing` later, only
        if it is at most `within` seconds away. One transaction, the row locked, so two
        workers never book the same slot."""
        with self.tx() as conn:
            conn.execute(
                self._insert(meta).values(key=key, value=repr(now)).on_conflict_do_nothing()
            )
            stored = conn.execute(
                select(meta.c.value).where(meta.c.key == key).with_for_update()
            ).scalar_one()
            slot = max(float(stored), now)
            if slot - now <= within:
                conn.execute(
                    update(meta).where(meta.c.key == key).values(value=repr(slot + spacing))
                )
        return slot

    # -- leads -----------------------------------------------------------------------------

    def add_leads(
        self, new: Sequence[NewLead], campaign_id: str, now: datetime
    ) -> list[tuple[int, bool]]:
        """Insert and enroll leads in one transaction; known addresses are left as they are.

        Returns (lead id, created) per input, so re-importing a file changes nothing.
        """
        if not new:
            return []
        stamp = to_db(now)
        with self.tx() as conn:
            emails = [lead.email for lead in new]
            known = dict(
                conn.execute(
                    select(leads.c.email, leads.c.id).where(leads.c.email.in_(emails))
                ).all()
            )
            fresh = [lead for lead in new if lead.email not in known]
            if fresh:
                conn.execute(
                    insert(leads),
                    [
                        {
                            "email": lead.email,
                            "first_name": lead.first_name,
                            "timezone": lead.timezone,
                            "attributes": lead.attributes,
                            "status": lead.status,
                            "created_at": stamp,
                        }
                        for lead in fresh
                    ],
                )
                ids = dict(
                    conn.execute(
                        select(leads.c.email, leads.c.id).where(
                            leads.c.email.in_([lead.email for lead in fresh])
                        )
                    ).all()
                )
                conn.execute(
                    insert(enrollments),
                    [
                        {
                            "lead_id": ids[lead.email],
                            "campaign_id": campaign_id,
                            "enrolled_at": stamp,
                            "state": "active",
                        }
                        for lead in fresh
                    ],
                )
                planned = [lead for lead in fresh if lead.first is not None]
                if planned:
                    conn.execute(
                        insert(deliveries),
                        [
                            {
                                "lead_id": ids[lead.email],
                                "campaign_id": campaign_id,
                                "step_id": lead.first.step_id,
                                "due_at": to_db(lead.first.due_at),
                                "status": "pending",
                                "attempts": 0,
                                "updated_at": stamp,
                            }
                            for lead in planned
                        ],
                    )
                known.update(ids)
        created = {lead.email for lead in fresh}
        return [(known[lead.email], lead.email in created) for lead in new]

    def lead(self, lead_id: int) -> Lead | None:
        with self.read() as conn:
            row = conn.execute(select(leads).where(leads.c.id == lead_id)).mappings().first()
        return _lead(row) if row else None

    def lead_by_email(self, email: str) -> Lead | None:
        with self.read() as conn:
            row = conn.execute(select(leads).where(leads.c.email == email)).mappings().first()
        return _lead(row) if row else None

    def set_lead_status(self, lead_id: int, status: str, reason: str, now: datetime) -> bool:
        """Move a lead out of the series (or back); cancels whatever was still pending."""
        with self.tx() as conn:
            return self._change_status(conn, lead_id, status, reason, now)

    def _change_status(
        self,
        conn: Connection,
        lead_id: int,
        status: str,
        reason: str,
        now: datetime,
        only_from: Sequence[str] = (),
    ) -> bool:
        """`only_from` limits the change to leads in those statuses, so that, for example, an
        unsubscribed lead who books later stays unsubscribed."""
        if status not in LEAD_STATUSES:
            raise ValueError(f"unknown lead status {status!r}")
        where = [leads.c.id == lead_id, leads.c.status != status]
        if only_from:
            where.append(leads.c.status.in_(list(only_from)))
        changed = conn.execute(
            update(leads)
            .where(*where)
            .values(status=status, status_reason=reason, status_at=to_db(now))
        ).rowcount
        if changed and status != "active":
            conn.execute(
                update(deliveries)
                .where(deliveries.c.lead_id == lead_id, deliveries.c.status.in_(QUEUED))
                .values(
                    status="cancelled", last_error=f"lead {status}: {reason}", updated_at=to_db(now)
                )
            )
            conn.execute(
                update(enrollments).where(enrollments.c.lead_id == lead_id).values(state="exited")
            )
        return bool(changed)

    def confirm_lead(
        self, lead_id: int, campaign_id: str, first: PlannedDelivery | None, now: datetime
    ) -> bool:
        """Double opt-in: a pending lead turns active, enrolled from now, with step 1 planned.

        Only a `pending` lead changes, so a second click, or a click after unsubscribing from
        the confirmation email, does nothing.
        """
        with self.tx() as conn:
            changed = conn.execute(
                update(leads)
                .where(leads.c.id == lead_id, leads.c.status == "pending")
                .values(status="active", status_reason="confirmed", status_at=to_db(now))
            ).rowcount
            if not changed:
                return False
            conn.execute(
                update(enrollments)
                .where(enrollments.c.lead_id == lead_id, enrollments.c.campaign_id == campaign_id)
                .values(enrolled_at=to_db(now))
            )
            if first is not None:
                self._insert_planned(conn, lead_id, campaign_id, first, now)
            return True

    # -- engagement: clicks and conversions --------------------------------------------------

    def record_click(
        self, lead_id: int, campaign_id: str, step_id: str, url: str, now: datetime
    ) -> None:
        with self.tx() as conn:
            conn.execute(
                insert(clicks).values(
                    lead_id=lead_id,
                    campaign_id=campaign_id,
                    step_id=step_id,
                    url=url,
                    clicked_at=to_db(now),
                )
            )

    def record_conversion(
        self,
        lead_id: int,
        campaign_id: str,
        step_id: str | None,
        source: str,
        now: datetime,
        *,
        stop: bool,
    ) -> bool:
        """Remember the lead's first conversion; with `stop` the series ends for the lead.

        Returns False if the lead had already converted (a booking system may call twice).
        """
        with self.tx() as conn:
            try:
                with conn.begin_nested():
                    conn.execute(
                        insert(conversions).values(
                            lead_id=lead_id,
                            campaign_id=campaign_id,
                            step_id=step_id,
                            source=source,
                            converted_at=to_db(now),
                        )
                    )
                created = True
            except IntegrityError:
                created = False
            if stop:
                self._change_status(
                    conn,
                    lead_id,
                    "converted",
                    f"converted ({source})",
                    now,
                    only_from=("active", "pending"),
                )
            return created

    def attributed_step(self, lead_id: int, campaign_id: str) -> str | None:
        """The step a conversion is credited to: the last one clicked, else the last one sent."""
        with self.read() as conn:
            clicked = conn.execute(
                select(clicks.c.step_id)
                .where(clicks.c.lead_id == lead_id, clicks.c.campaign_id == campaign_id)
                .order_by(clicks.c.clicked_at.desc(), clicks.c.id.desc())
                .limit(1)
            ).scalar()
            if clicked is not None:
                return clicked
            return conn.execute(
                select(deliveries.c.step_id)
                .where(
                    deliveries.c.lead_id == lead_id,
                    deliveries.c.campaign_id == campaign_id,
                    deliveries.c.status == "sent",
                )
                .order_by(deliveries.c.sent_at.desc(), deliveries.c.id.desc())
                .limit(1)
            ).scalar()

    # -- history for the planner -------------------------------------------------------------

    @staticmethod
    def _history(
        conn: Connection, lead_id: int, campaign_id: str
    ) -> list[tuple[str, str, datetime]]:
        rows = conn.execute(HISTORY, {"lead": lead_id, "campaign": campaign_id}).all()
        return [(s, st, from_db(at)) for s, st, at in rows]

    def enrolled_leads(self, campaign_id: str, batch: int = 1000) -> Iterator[list[int]]:
        """Ids of every lead still in the series, in batches, for replanning after an edit."""
        last = 0
        while True:
            with self.read() as conn:
                ids = (
                    conn.execute(
                        select(enrollments.c.lead_id)
                        .join(leads, leads.c.id == enrollments.c.lead_id)
                        .where(
                            enrollments.c.campaign_id == campaign_id,
                            leads.c.status == "active",
                            enrollments.c.lead_id > last,
                        )
                        .order_by(enrollments.c.lead_id)
                        .limit(batch)
                    )
                    .scalars()
                    .all()
                )
            if not ids:
                return
            yield list(ids)
            last = ids[-1]

    def replace_plan(
        self,
        lead_id: int,
        campaign_id: str,
        plan: Callable[[datetime, list[tuple[str, str, datetime]]], PlannedDelivery | None],
        now: datetime,
    ) -> None:
        """Make the lead's pending row match the planner's answer; sent rows are never touched.

        `plan` gets when the lead enrolled and its history (not the pending plan) as read
        inside this transaction, with the lead's rows locked (on SQLite the whole write lock
        is held): a sender recording or starting one of them meanwhile cannot make the
        answer stale, and drop the lead's next step. A lead not enrolled is left alone.
        """
        with self.tx() as conn:
            statuses = conn.execute(
                select(deliveries.c.status)
                .where(deliveries.c.lead_id == lead_id, deliveries.c.campaign_id == campaign_id)
                .with_for_update()
            ).scalars()
            if "sending" in set(statuses):
                return  # in flight: the outcome will plan what comes next
            enrolled = conn.execute(
                select(enrollments.c.enrolled_at).where(
                    enrollments.c.lead_id == lead_id, enrollments.c.campaign_id == campaign_id
                )
            ).scalar()
            if enrolled is None:
                return
            planned = plan(from_db(enrolled), self._history(conn, lead_id, campaign_id))
            pending = deliveries.c.status.in_(QUEUED)  # a reserved row is taken back too
            stale = [
                deliveries.c.lead_id == lead_id,
                deliveries.c.campaign_id == campaign_id,
                pending,
            ]
            if planned is not None:
                stale.append(deliveries.c.step_id != planned.step_id)
            conn.execute(deliveries.delete().where(*stale))
            if planned is None:
                return
            changed = conn.execute(
                update(deliveries)
                .where(
                    deliveries.c.lead_id == lead_id,
                    deliveries.c.campaign_id == campaign_id,
                    deliveries.c.step_id == planned.step_id,
                    pending,
                )
                .values(**UNCLAIMED, due_at=to_db(planned.due_at), updated_at=to_db(now))
            ).rowcount
            if not changed:
                self._insert_planned(conn, lead_id, campaign_id, planned, now)

    def _insert_planned(
        self,
        conn: Connection,
        lead_id: int,
        campaign_id: str,
        planned: PlannedDelivery,
        now: datetime,
    ) -> None:
        """Plan a step, unless it already has a row (sent or otherwise): never a second one.

        `ON CONFLICT DO NOTHING` rather than a savepoint: one statement, not three.
        """
        self._plan_sql.run(
            conn,
            {
                "lead_id": lead_id,
                "campaign_id": campaign_id,
                "step_id": planned.step_id,
                "due_at": to_db(planned.due_at),
                "status": "pending",
                "attempts": 0,
                "updated_at": to_db(now),
            },
        )

    # -- the queue -------------------------------------------------------------------------

    def reserve(
        self, campaign_id: str, due_before: datetime, worker: str, now: datetime, limit: int
    ) -> list[Claim]:
        """Take up to `limit` of the most overdue pending deliveries of active leads (due by
        `due_before`) out of the queue for one connection, in the order to send them.

        One transaction also reads their leads, enrollments and histories, so that sending
        needs no other read to render and to plan each lead's next step. Nothing is in doubt
        yet: a reserved row that is never started goes back to the queue when released or
        when its lease runs out.
        """
        params = {
            "campaign": campaign_id,
            "due_before": to_db(due_before),
            "limit": limit,
            "claim_now": to_db(now),
            "claim_worker": worker,
        }
        with self.tx() as conn:
            rows = sorted(conn.execute(RESERVE, params).all(), key=lambda r: (r.due_at, r.id))
            if not rows:
                return []
            ids = sorted({row.lead_id for row in rows})
            found = conn.execute(LEADS_AND_ENROLLMENTS, {"leads": ids, "campaign": campaign_id})
            people = {row["id"]: row for row in found.mappings()}
            histories: dict[int, list[tuple[str, str, datetime]]] = {i: [] for i in ids}
            past = conn.execute(HISTORIES, {"leads": ids, "campaign": campaign_id})
            for lead_id, step_id, status, at in past:
                histories[lead_id].append((step_id, status, from_db(at)))
        return [
            Claim(
                row.id,
                row.lead_id,
                row.campaign_id,
                row.step_id,
                row.attempts + 1,
                from_db(row.due_at),
                worker,
                _lead(people[row.lead_id]),  # the reservation only takes active leads' rows
                from_db(people[row.lead_id]["enrolled_at"]),
                tuple(histories[row.lead_id]),
            )
            for row in rows
        ]

    def start(self, claim: Claim, now: datetime, after: Sent | None = None) -> Start:
        """Put a reserved row in flight, committed before any SMTP traffic, and record the
        connection's previous message (`after`) in the same transaction: one commit per
        message, and still one message in flight."""
        with self.tx() as conn:
            if after is not None:
                self._record_sent(conn, after)
            return self._start(conn, claim, now)

    def _start(self, conn: Connection, claim: Claim, now: datetime) -> Start:
        params = {"delivery": claim.delivery_id, "worker": claim.worker, "start_now": to_db(now)}
        if self._start_sql.run(conn, params):
            return Start.GO
        return self._not_ours(conn, claim)

    @staticmethod
    def _not_ours(conn: Connection, claim: Claim) -> Start:
        """Why a reserved row could not be taken any further."""
        status = conn.execute(
            select(deliveries.c.status).where(deliveries.c.id == claim.delivery_id)
        ).scalar()
        return Start.LEFT if status == "cancelled" else Start.GONE

    def settle_unsent(
        self,
        claim: Claim,
        now: datetime,
        after: Sent | None,
        outcome: str,
        error: str,
        following: PlannedDelivery | None,
    ) -> Start:
        """End a reserved row that cannot be sent (its step was removed, or its message
        cannot be built) without ever putting it in flight: nothing went out, so even a
        crash right after leaves nothing in doubt. A failure counts as an attempt, a
        cancellation does not. The connection's previous message (`after`) is recorded
        in the same transaction, as `start` does."""
        with self.tx() as conn:
            if after is not None:
                self._record_sent(conn, after)
            ended = _settled(
                claim,
                now,
                status=outcome,
                last_error=error,
                attempts=deliveries.c.attempts + int(outcome == "failed"),
                claimed_at=to_db(now),  # when it ended, as `start` records when it began
            )
            still_ours = (deliveries.c.status == "claimed", deliveries.c.claimed_by == claim.worker)
            changed = conn.execute(ended.where(*still_ours)).rowcount
            if not changed:
                return self._not_ours(conn, claim)
            if following is not None:
                self._insert_planned(conn, claim.lead_id, claim.campaign_id, following, now)
            return Start.GO

    def release_reserved(self, claims: Sequence[Claim], now: datetime) -> None:
        """Put reserved rows that were never started back in the queue, as they were."""
        if not claims:
            return
        with self.tx() as conn:
            conn.execute(
                update(deliveries)
                .where(
                    deliveries.c.id.in_([claim.delivery_id for claim in claims]),
                    deliveries.c.status == "claimed",
                    deliveries.c.claimed_by == claims[0].worker,
                )
                .values(**UNCLAIMED, updated_at=to_db(now))
            )

    def record_sent(self, sent: Sent) -> None:
        """Mark the delivery sent and plan the lead's next step, in one transaction."""
        with self.tx() as conn:
            self._record_sent(conn, sent)

    def _record_sent(self, conn: Connection, sent: Sent) -> None:
        claim = sent.claim
        self._mark_sent_sql.run(
            conn,
            {
                "delivery": claim.delivery_id,
                "sent_message_id": sent.message_id,
                "sent_now": to_db(sent.sent_at),
            },
        )
        if sent.following is not None:
            self._insert_planned(
                conn, claim.lead_id, claim.campaign_id, sent.following, sent.sent_at
            )
        else:
            conn.execute(
                update(enrollments)
                .where(
                    enrollments.c.lead_id == claim.lead_id,
                    enrollments.c.campaign_id == claim.campaign_id,
                    enrollments.c.state == "active",
                )
                .values(state="completed")
            )

    def record_retry(
        self, claim: Claim, error: str, code: int | None, retry_at: datetime, now: datetime
    ) -> None:
        self._settle(
            claim, now, **UNCLAIMED, due_at=to_db(retry_at), last_error=error, smtp_code=code
        )

    def record_failed(
        self,
        claim: Claim,
        error: str,
        code: int | None,
        now: datetime,
        following: PlannedDelivery | None,
        outcome: str = "failed",
    ) -> None:
        """The delivery's last word (`failed`, or `unknown` when it may have arrived), and the
        lead's next step planned in the same transaction: the series goes on."""
        with self.tx() as conn:
            conn.execute(_settled(claim, now, status=outcome, last_error=error, smtp_code=code))
            if following is not None:
                self._insert_planned(conn, claim.lead_id, claim.campaign_id, following, now)

    def release(self, claim: Claim, error: str, now: datetime) -> None:
        """Give a started claim back untouched (the whole account was refused, not this
        message)."""
        self._settle(claim, now, **UNCLAIMED, attempts=deliveries.c.attempts - 1, last_error=error)

    def _settle(self, claim: Claim, now: datetime, **values: Any) -> None:
        with self.tx() as conn:
            conn.execute(_settled(claim, now, **values))

    def expire_leases(self, now: datetime, lease: timedelta) -> list[tuple[int, str]]:
        """Started claims older than the lease are in doubt: mark them `unknown`, never resend
        them.

        Reserved rows were never started, so they all go back to the queue at once, whatever
        their age: a crashed worker's reservation waits for no lease. Taking back a live
        worker's reservation cannot double a message, since `start` checks the row is still
        its own; it only costs that worker a wasted `start`. Rows another transaction holds
        right now (a worker starting or recording them) are skipped, not waited for: they are
        in live hands, and taking them in a different order than that worker would deadlock.
        """
        cutoff = to_db(now - lease)

        def unlocked(*where: Any) -> Any:
            return deliveries.c.id.in_(
                select(deliveries.c.id)
                .where(*where)
                .order_by(deliveries.c.id)
                .with_for_update(skip_locked=True)
            )

        with self.tx() as conn:
            conn.execute(  # reserved, never started: nothing was sent, back to the queue
                update(deliveries)
                .where(unlocked(deliveries.c.status == "claimed"))
                .values(**UNCLAIMED, updated_at=to_db(now))
            )
            stale = (deliveries.c.status == "sending", deliveries.c.claimed_at < cutoff)
            rows = conn.execute(
                update(deliveries)
                .where(unlocked(*stale))
                .values(
                    status="unknown",
                    updated_at=to_db(now),
                    last_error="claimed but never confirmed: the worker stopped mid-send",
                )
                .returning(deliveries.c.lead_id, deliveries.c.campaign_id)
            ).all()
        return [(r.lead_id, r.campaign_id) for r in rows]

    def next_due_at(self, campaign_id: str) -> datetime | None:
        """The earliest pending due time: the first entry of `ix_deliveries_due`, not a MIN()
        over every pending row (the join on active leads would defeat that shortcut)."""
        with self.read() as conn:
            value = conn.execute(
                select(deliveries.c.due_at)
                .join(leads, leads.c.id == deliveries.c.lead_id)
                .where(
                    deliveries.c.campaign_id == campaign_id,
                    deliveries.c.status == PENDING,
                    leads.c.status == "active",
                )
                .order_by(deliveries.c.due_at, deliveries.c.id)
                .limit(1)
            ).scalar()
        return from_db(value)

    def sent_since(self, since: datetime) -> int:
        """Messages sent after `since` by any process and campaign: rate limits belong to the
        SMTP account, so every worker sharing this database counts against one budget."""
        with self.read() as conn:
            return conn.execute(
                select(func.count())
                .select_from(deliveries)
                .where(deliveries.c.sent_at > to_db(since))
            ).scalar_one()

    # -- reporting -------------------------------------------------------------------------

    def delivery_counts(self, campaign_id: str) -> dict[str, dict[str, int]]:
        with self.read() as conn:
            rows = conn.execute(
                select(deliveries.c.step_id, deliveries.c.status, func.count())
                .where(deliveries.c.campaign_id == campaign_id)
                .group_by(deliveries.c.step_id, deliveries.c.status)
            ).all()
        counts: dict[str, dict[str, int]] = {}
        for step_id, status, count in rows:
            counts.setdefault(step_id, {})[status] = count
        return counts

    def engagement_counts(self, campaign_id: str) -> dict[str, dict[str, int]]:
        """Per step: leads who clicked a link in it, and conversions credited to it."""
        with self.read() as conn:
            clicked = conn.execute(
                select(clicks.c.step_id, func.count(clicks.c.lead_id.distinct()))
                .where(clicks.c.campaign_id == campaign_id)
                .group_by(clicks.c.step_id)
            ).all()
            converted = conn.execute(
                select(conversions.c.step_id, func.count())
                .where(conversions.c.campaign_id == campaign_id, conversions.c.step_id.is_not(None))
                .group_by(conversions.c.step_id)
            ).all()
        counts: dict[str, dict[str, int]] = {}
        for name, rows in (("clicked", clicked), ("converted", converted)):
            for step_id, count in rows:
                counts.setdefault(step_id, {})[name] = count
        return counts

    def lead_counts(self) -> dict[str, int]:
        with self.read() as conn:
            rows = conn.execute(select(leads.c.status, func.count()).group_by(leads.c.status))
            return {status: count for status, count in rows}

    def deliveries_with_status(self, campaign_id: str, status: str) -> list[dict[str, Any]]:
        with self.read() as conn:
            rows = (
                conn.execute(
                    select(
                        deliveries.c.id,
                        leads.c.email,
                        deliveries.c.step_id,
                        deliveries.c.claimed_at,
                        deliveries.c.last_error,
                    )
                    .join(leads, leads.c.id == deliveries.c.lead_id)
                    .where(deliveries.c.campaign_id == campaign_id, deliveries.c.status == status)
                    .order_by(deliveries.c.id)
                )
                .mappings()
                .all()
            )
        return [dict(r) for r in rows]


def _lead(row: Any) -> Lead:
    attributes = row["attributes"]
    if isinstance(attributes, str):  # pragma: no cover - some drivers hand JSON back as text
        attributes = json.loads(attributes)
    return Lead(
        row["id"],
        row["email"],
        row["first_name"],
        row["timezone"],
        attributes or {},
        row["status"],
        from_db(row["created_at"]),
    )
