"""The tables, their indexes, and the migrations: create on first use, refuse a newer one.

A delivery row is unique per (lead, campaign, step), so no step is ever planned, or sent,
twice. Times are stored as naive UTC (`database.to_db`).
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    bindparam,
    func,
    insert,
    inspect,
    select,
    text,
    update,
)
from sqlalchemy.engine import Connection

from campaign.model import (
    NOT_HISTORY,
    QUEUED,
    SUPPRESSING,
    ClickSource,
    DeliveryStatus,
    EnrollmentState,
    LeadStatus,
    address_key,
    utc_now,
)
from campaign.store.database import Database, StoreError, to_db

# 2: leads.email_key, one lead per address whatever its letter case;
# 3: the suppression list, and clicks told apart by who made them (`clicks.source`);
# 4: the subject a delivery went out with, for subject tests (`deliveries.variant`); consent
#    records (`consents`) and the operators' audit log (`audit_log`).
SCHEMA_VERSION = 4
MIGRATION_LOCK = 0x63616D70  # PostgreSQL advisory lock key held while creating the schema
VERSION_KEY = "schema_version"

# The status groups as column values, in the enum's order so that a statement's text is the
# same in every process.
QUEUED_STATUSES = tuple(s for s in DeliveryStatus if s in QUEUED)
NOT_HISTORY_STATUSES = tuple(s for s in DeliveryStatus if s in NOT_HISTORY)

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
    # The address's identity (`model.address_key`: letter case does not count), unique so two
    # writers can never hold one mailbox twice; empty only on rows merged away (`_merge`).
    Column("email_key", String(320), nullable=True),
    Column("first_name", String(200), nullable=False, default=""),
    Column("timezone", String(64), nullable=True),
    Column("attributes", JSON, nullable=False, default=dict),
    Column("status", String(20), nullable=False, default=LeadStatus.ACTIVE),
    Column("status_reason", Text, nullable=True),
    Column("status_at", DateTime, nullable=True),
    Column("created_at", DateTime, nullable=False),
    Index("uq_leads_email_key", "email_key", unique=True),
)

# `state`: active, completed (every step done) or exited (the lead left the series).
enrollments = Table(
    "enrollments",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("lead_id", Id, ForeignKey("leads.id"), nullable=False),
    Column("campaign_id", String(64), nullable=False),
    Column("enrolled_at", DateTime, nullable=False),
    Column("state", String(20), nullable=False, default=EnrollmentState.ACTIVE.value),
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
    Column("status", String(20), nullable=False, default=DeliveryStatus.PENDING),
    Column("attempts", Integer, nullable=False, default=0),
    Column("last_error", Text, nullable=True),
    Column("smtp_code", Integer, nullable=True),
    Column("message_id", String(255), nullable=True),
    Column("claimed_at", DateTime, nullable=True),
    Column("claimed_by", String(100), nullable=True),
    Column("sent_at", DateTime, nullable=True),
    Column("updated_at", DateTime, nullable=False),
    # Which of the step's subjects went out (0: the first; a subject test has several),
    # recorded when the message is put in flight; empty for a row never started.
    Column("variant", Integer, nullable=True),
    UniqueConstraint("lead_id", "campaign_id", "step_id", name="uq_delivery"),
    # The queue: only pending rows, in claim order, so finding the next due delivery stays one
    # short index range scan however many millions of sent rows pile up beside it.
    Index(
        "ix_deliveries_due",
        "campaign_id",
        "due_at",
        "id",
        postgresql_where=text(f"status = '{DeliveryStatus.PENDING}'"),
        sqlite_where=text(f"status = '{DeliveryStatus.PENDING}'"),
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
    # Who clicked (`web.scanners`): a person, or a link scanner, which never converts anyone.
    Column("source", String(20), nullable=False, server_default=ClickSource.PERSON.value),
    Column("source_reason", Text, nullable=True),
    Index("ix_clicks_campaign", "campaign_id", "step_id"),
    Index("ix_clicks_email", "lead_id", "campaign_id", "step_id", "clicked_at"),  # one email's
)

# Addresses never to be mailed again by any series or import: bounced, complained or
# unsubscribed (`reason`, a lead status), written with the lead's status change. A lifted row
# stays as the record of who may be mailed again and why; at most one standing row (not
# lifted) per address key (`model.address_key`).
suppressions = Table(
    "suppressions",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("email_key", String(320), nullable=False),
    Column("email", String(320), nullable=False),  # as the lead typed it
    Column("reason", String(20), nullable=False),
    Column("detail", Text, nullable=False, default=""),
    Column("created_at", DateTime, nullable=False),
    Column("lifted_at", DateTime, nullable=True),
    Column("lifted_reason", Text, nullable=True),
    Index(
        "uq_suppressions_standing",
        "email_key",
        unique=True,
        postgresql_where=text("lifted_at IS NULL"),
        sqlite_where=text("lifted_at IS NULL"),
    ),
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

# Every message that came back (campaign.inbound), once each: `message_key` is its Message-ID
# (else a digest of its bytes), so the same DSN delivered twice is recorded and acted on once.
# `raw` keeps the message itself where a person may need it: replies and what matched nothing.
inbound_messages = Table(
    "inbound_messages",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("message_key", String(255), nullable=False, unique=True),
    Column("kind", String(20), nullable=False),
    Column("received_at", DateTime, nullable=False),
    Column("lead_id", Id, ForeignKey("leads.id"), nullable=True),
    Column("campaign_id", String(64), nullable=True),
    Column("step_id", String(64), nullable=True),
    Column("delivery_id", Id, nullable=True),
    Column("status_code", String(20), nullable=True),
    Column("sender", String(320), nullable=False, default=""),
    Column("subject", Text, nullable=False, default=""),
    Column("reason", Text, nullable=False, default=""),
    Column("outcome", Text, nullable=False, default=""),
    Column("raw", LargeBinary, nullable=True),
    Index("ix_inbound_received", "received_at"),
    Index("ix_inbound_delivery", "delivery_id", "kind"),
)

# One row per time a person gave consent: where (`source`: web form, `import FILE.csv`,
# command line), when, and for the web the peer address, user agent and the consent wording
# or its version as the signup sent it. Deleted when the lead is erased.
consents = Table(
    "consents",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("lead_id", Id, ForeignKey("leads.id"), nullable=False),
    Column("source", String(300), nullable=False),
    Column("given_at", DateTime, nullable=False),
    Column("ip", String(64), nullable=True),
    Column("user_agent", Text, nullable=True),
    Column("text", Text, nullable=True),
    Index("ix_consents_lead", "lead_id"),
)

# What operators did (imports, adds, unsubscribes, reactivations, erasures, exports, ...),
# appended and never changed. `target` names a lead by id (`lead 12`), never by address, so
# erasing a lead leaves nothing personal here.
audit_log = Table(
    "audit_log",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("at", DateTime, nullable=False),
    Column("actor", String(200), nullable=False),
    Column("action", String(64), nullable=False),
    Column("target", String(300), nullable=False, default=""),
    Column("detail", Text, nullable=False, default=""),
    Index("ix_audit_target", "target"),
)


def migrate(db: Database) -> None:
    """Create the schema on first use and refuse a database from a newer version.

    Workers started together on a fresh database would race to create it: PostgreSQL
    serialises them on an advisory lock, SQLite on its write lock. Indexes added to a
    table after it was created are added too (`create_all` skips existing tables), and
    an index an earlier version defined on other columns under the same name is rebuilt.
    """
    with db.tx() as conn:
        if not db.is_sqlite:
            conn.execute(select(func.pg_advisory_xact_lock(MIGRATION_LOCK)))
        metadata.create_all(conn)
        found = conn.execute(select(meta.c.value).where(meta.c.key == VERSION_KEY))
        version = found.scalar()
        if version is not None and int(version) > SCHEMA_VERSION:
            raise StoreError(
                f"the database has schema version {version}, newer than this engine "
                f"({SCHEMA_VERSION}); upgrade the engine"
            )
        if version is not None and int(version) < 2:
            _add_email_keys(conn)
        if version is not None and int(version) < 3:
            _add_click_sources(conn)
            _fill_suppressions(conn)
        if version is not None and int(version) < 4:
            _add_variants(conn)
        _update_indexes(conn)
        if version is None:
            # Only one migration runs at a time (the lock above), so nobody else adds it.
            conn.execute(insert(meta).values(key=VERSION_KEY, value=str(SCHEMA_VERSION)))
        elif int(version) < SCHEMA_VERSION:
            conn.execute(
                update(meta).where(meta.c.key == VERSION_KEY).values(value=str(SCHEMA_VERSION))
            )


def _update_indexes(conn: Connection) -> None:
    """Add the indexes a table lacks, and rebuild those now defined on other columns."""
    for table in metadata.sorted_tables:
        found = {i["name"]: i["column_names"] for i in inspect(conn).get_indexes(table.name)}
        for index in table.indexes:
            if found.get(index.name, index.columns.keys()) != index.columns.keys():
                index.drop(conn)
            index.create(conn, checkfirst=True)


# -- version 2: one lead per address, whatever its letter case ------------------------------

KEY_BATCH = 10_000
# Which row of a same-address group stays the lead: one that left the series first (the
# person's opt-out or booking must hold), then a confirmed one over an unconfirmed one.
_KEEP_FIRST = (
    LeadStatus.UNSUBSCRIBED,
    LeadStatus.BOUNCED,
    LeadStatus.CONVERTED,
    LeadStatus.ACTIVE,
    LeadStatus.PENDING,
)


def _add_email_keys(conn: Connection) -> None:
    """Give every lead its `email_key`, then merge the leads that share one (`_merge`)."""
    if "email_key" not in {c["name"] for c in inspect(conn).get_columns("leads")}:
        conn.execute(text("ALTER TABLE leads ADD COLUMN email_key VARCHAR(320)"))
    last = 0
    while True:
        rows = conn.execute(
            select(leads.c.id, leads.c.email)
            .where(leads.c.id > last, leads.c.email_key.is_(None))
            .order_by(leads.c.id)
            .limit(KEY_BATCH)
        ).all()
        if not rows:
            break
        conn.execute(
            update(leads).where(leads.c.id == bindparam("lead")).values(email_key=bindparam("key")),
            [{"lead": lead_id, "key": address_key(email)} for lead_id, email in rows],
        )
        last = rows[-1].id
    shared = conn.execute(
        select(leads.c.email_key)
        .where(leads.c.email_key.is_not(None))
        .group_by(leads.c.email_key)
        .having(func.count() > 1)
    ).scalars()
    for key in list(shared):
        _merge(conn, key)


def _merge(conn: Connection, key: str) -> None:
    """Make the leads sharing `key` one lead, losing no history.

    The lead kept is the first by `_KEEP_FIRST`, then the one furthest in its series (most
    emails sent), then the oldest. Each other row stays as history under status `merged`,
    without a key: what it was sent stays with it, what was still queued for it is
    cancelled, its enrollments end, its clicks move to the kept lead, and so does its
    conversion in any campaign where the kept lead has none (otherwise it stays with the
    row). Links in emails sent to a merged row act on the kept lead (`store.leads`).
    """
    sent = (
        select(func.count())
        .where(deliveries.c.lead_id == leads.c.id, deliveries.c.status == DeliveryStatus.SENT)
        .scalar_subquery()
    )
    rows = conn.execute(
        select(leads.c.id, leads.c.status, sent).where(leads.c.email_key == key)
    ).all()
    rank = {status: n for n, status in enumerate(_KEEP_FIRST)}
    kept, *others = sorted(rows, key=lambda r: (rank.get(r[1], len(rank)), -r[2], r[0]))
    now = to_db(utc_now())
    for lead_id, _status, _sent in others:
        reason = f"same address as lead {kept[0]} (merged when letter case stopped counting)"
        conn.execute(
            update(deliveries)
            .where(deliveries.c.lead_id == lead_id, deliveries.c.status.in_(QUEUED_STATUSES))
            .values(status=DeliveryStatus.CANCELLED, last_error=reason, updated_at=now)
        )
        conn.execute(
            update(enrollments)
            .where(enrollments.c.lead_id == lead_id)
            .values(state="exited")  # as `store.leads` ends an enrollment
        )
        conn.execute(update(clicks).where(clicks.c.lead_id == lead_id).values(lead_id=kept[0]))
        held = select(conversions.c.campaign_id).where(conversions.c.lead_id == kept[0])
        conn.execute(
            update(conversions)
            .where(conversions.c.lead_id == lead_id, conversions.c.campaign_id.not_in(held))
            .values(lead_id=kept[0])
        )
        conn.execute(
            update(leads)
            .where(leads.c.id == lead_id)
            .values(email_key=None, status=LeadStatus.MERGED, status_reason=reason, status_at=now)
        )


# -- version 3: the suppression list and who clicked -----------------------------------------


def _add_click_sources(conn: Connection) -> None:
    """Every click recorded before scanners were told apart counts as a person's, as it did."""
    found = {c["name"] for c in inspect(conn).get_columns("clicks")}
    if "source" not in found:
        conn.execute(
            text(
                "ALTER TABLE clicks ADD COLUMN source VARCHAR(20) NOT NULL "
                f"DEFAULT '{ClickSource.PERSON}'"
            )
        )
    if "source_reason" not in found:
        conn.execute(text("ALTER TABLE clicks ADD COLUMN source_reason TEXT"))


def _fill_suppressions(conn: Connection) -> None:
    """Suppress the address of every lead already bounced, complained or unsubscribed, from
    when and why its status says."""
    statuses = [s.value for s in LeadStatus if s in SUPPRESSING]
    conn.execute(
        insert(suppressions).from_select(
            ["email_key", "email", "reason", "detail", "created_at"],
            select(
                leads.c.email_key,
                leads.c.email,
                leads.c.status,
                func.coalesce(leads.c.status_reason, ""),
                func.coalesce(leads.c.status_at, leads.c.created_at),
            ).where(leads.c.status.in_(statuses), leads.c.email_key.is_not(None)),
        )
    )


# -- version 4: subject tests -----------------------------------------------------------------


def _add_variants(conn: Connection) -> None:
    """Every email sent before subject tests went out with its step's one subject."""
    if "variant" not in {c["name"] for c in inspect(conn).get_columns("deliveries")}:
        conn.execute(text("ALTER TABLE deliveries ADD COLUMN variant INTEGER"))
    conn.execute(
        update(deliveries)
        .where(deliveries.c.status.in_([DeliveryStatus.SENT, DeliveryStatus.UNKNOWN]))
        .values(variant=0)
    )
