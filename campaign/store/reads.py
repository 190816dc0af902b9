"""Read-only queries for the people watching the campaign: status, reports, dry runs and the
preview's lead picker. Nothing here writes, so a report or a dry run can run beside the
senders at any time."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, case, exists, func, or_, select
from sqlalchemy.engine import Connection, Row
from sqlalchemy.sql import Select

from campaign.model import (
    CONFIRM_STEP,
    QUEUED,
    Attempt,
    ClickSource,
    DeliveryStatus,
    EnrollmentState,
    Lead,
    LeadState,
    LeadStatus,
)
from campaign.store.database import Database, from_db, from_db_or_none, to_db
from campaign.store.leads import lead_from_row
from campaign.store.schema import clicks, conversions, deliveries, enrollments, leads

BATCH = 1000  # leads read per transaction by a dry run


@dataclass(frozen=True)
class Pending:
    """The store's planned next delivery for a lead (its time moves on a retry)."""

    step_id: str
    due_at: datetime
    attempts: int


@dataclass(frozen=True)
class LeadPlan:
    """One enrolled lead as a dry run sees it: its planner state and its pending row."""

    lead_id: int
    email: str
    state: LeadState
    pending: Pending | None = None
    paused: bool = False  # `leads pause`: in the series, sent nothing until resumed


@dataclass(frozen=True)
class Departure:
    """An unsubscribed lead: when they left, and the emails sent to them, oldest first."""

    lead_id: int
    left_at: datetime | None
    sent: tuple[tuple[datetime, str], ...]  # (sent at, step)


@dataclass(frozen=True)
class VariantTally:
    """One subject variant of one step: leads sent it, those of them who clicked a link in
    it (people), and those who booked after it."""

    step_id: str
    variant: int
    sent: int
    clicked: int
    booked: int


class Reads:
    """Every method reads in one transaction of its own (a dry run: one per batch)."""

    def __init__(self, db: Database):
        self.db = db

    # -- counts ----------------------------------------------------------------------------

    def sent_since(self, since: datetime) -> int:
        """Messages sent after `since` by any process and campaign: rate limits belong to the
        SMTP account, so every worker sharing this database counts against one budget."""
        with self.db.read() as conn:
            return conn.execute(
                select(func.count())
                .select_from(deliveries)
                .where(deliveries.c.sent_at > to_db(since))
            ).scalar_one()

    def delivery_counts(self, campaign_id: str) -> dict[str, dict[str, int]]:
        """Per step, deliveries per status."""
        with self.db.read() as conn:
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
        """Per step: leads who clicked a link in it (a person), leads whose links a scanner
        opened, and conversions credited to it. A conversion by a click counts only while a
        person's click backs it: a burst seen after the fact can turn that click into a
        scanner's (`web.scanners`)."""
        person = clicks.c.source == ClickSource.PERSON
        backed = exists().where(
            clicks.c.lead_id == conversions.c.lead_id,
            clicks.c.campaign_id == conversions.c.campaign_id,
            clicks.c.step_id == conversions.c.step_id,
            person,
        )
        with self.db.read() as conn:
            clicked = conn.execute(
                select(
                    clicks.c.step_id,
                    clicks.c.source,
                    func.count(clicks.c.lead_id.distinct()),
                )
                .where(clicks.c.campaign_id == campaign_id)
                .group_by(clicks.c.step_id, clicks.c.source)
            ).all()
            converted = conn.execute(
                select(conversions.c.step_id, func.count())
                .where(
                    conversions.c.campaign_id == campaign_id,
                    conversions.c.step_id.is_not(None),
                    or_(conversions.c.source != "click", backed),
                )
                .group_by(conversions.c.step_id)
            ).all()
        counts: dict[str, dict[str, int]] = {}
        for step_id, source, count in clicked:
            name = "clicked" if source == ClickSource.PERSON else "scanned"
            counts.setdefault(step_id, {})[name] = count
        for step_id, count in converted:
            counts.setdefault(step_id, {})["converted"] = count
        return counts

    def variant_counts(self, campaign_id: str) -> list[VariantTally]:
        """Per step and subject variant (`deliveries.variant`), for subject tests: emails
        sent, their leads who clicked a link in that email (people only), and their leads who
        booked after it arrived, whichever email they booked from. A booking by a click
        counts only while a person's click backs it, as in `engagement_counts`."""
        backed = exists().where(
            clicks.c.lead_id == conversions.c.lead_id,
            clicks.c.campaign_id == conversions.c.campaign_id,
            clicks.c.step_id == conversions.c.step_id,
            clicks.c.source == ClickSource.PERSON,
        )
        clicked = exists().where(
            clicks.c.lead_id == deliveries.c.lead_id,
            clicks.c.campaign_id == deliveries.c.campaign_id,
            clicks.c.step_id == deliveries.c.step_id,
            clicks.c.source == ClickSource.PERSON,
        )
        booked = exists().where(
            conversions.c.lead_id == deliveries.c.lead_id,
            conversions.c.campaign_id == deliveries.c.campaign_id,
            conversions.c.converted_at >= deliveries.c.sent_at,
            or_(conversions.c.source != "click", backed),
        )
        with self.db.read() as conn:
            rows = conn.execute(
                select(
                    deliveries.c.step_id,
                    deliveries.c.variant,
                    func.count(),
                    func.count(case((clicked, 1))),
                    func.count(case((booked, 1))),
                )
                .where(
                    deliveries.c.campaign_id == campaign_id,
                    deliveries.c.status == DeliveryStatus.SENT,
                    deliveries.c.variant.is_not(None),
                )
                .group_by(deliveries.c.step_id, deliveries.c.variant)
                .order_by(deliveries.c.step_id, deliveries.c.variant)
            ).all()
        return [VariantTally(*row) for row in rows]

    def lead_counts(self) -> dict[str, int]:
        """Leads per status, over every campaign."""
        with self.db.read() as conn:
            rows = conn.execute(select(leads.c.status, func.count()).group_by(leads.c.status))
            return {status: count for status, count in rows}

    def count_enrolled(self, campaign_id: str, email: str | None = None) -> int:
        """Leads enrolled in the campaign (ever), or only the one with `email`."""
        query = (
            select(func.count())
            .select_from(enrollments)
            .join(leads, leads.c.id == enrollments.c.lead_id)
            .where(enrollments.c.campaign_id == campaign_id)
        )
        if email is not None:
            query = query.where(func.lower(leads.c.email) == email.lower())
        with self.db.read() as conn:
            return conn.execute(query).scalar() or 0

    def unattributed_conversions(self, campaign_id: str) -> int:
        """Conversions credited to no step: the lead booked before the first email."""
        with self.db.read() as conn:
            return (
                conn.execute(
                    select(func.count())
                    .select_from(conversions)
                    .where(
                        conversions.c.campaign_id == campaign_id, conversions.c.step_id.is_(None)
                    )
                ).scalar()
                or 0
            )

    # -- rows ------------------------------------------------------------------------------

    def deliveries_with_status(
        self, campaign_id: str, status: DeliveryStatus
    ) -> list[dict[str, Any]]:
        """Deliveries in one status with their lead's address, oldest first (times as
        stored: naive UTC)."""
        with self.db.read() as conn:
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

    def departures(self, campaign_id: str) -> list[Departure]:
        """Every unsubscribed lead enrolled in the campaign, with the emails they were sent."""
        joined = and_(enrollments.c.lead_id == leads.c.id, enrollments.c.campaign_id == campaign_id)
        gone_filter = leads.c.status == LeadStatus.UNSUBSCRIBED
        with self.db.read() as conn:
            gone = conn.execute(
                select(leads.c.id, leads.c.status_at).join(enrollments, joined).where(gone_filter)
            ).all()
            sent = conn.execute(
                select(deliveries.c.lead_id, deliveries.c.step_id, deliveries.c.sent_at)
                .join(leads, leads.c.id == deliveries.c.lead_id)
                .where(
                    deliveries.c.campaign_id == campaign_id,
                    deliveries.c.status == DeliveryStatus.SENT,
                    gone_filter,
                )
                .order_by(deliveries.c.sent_at, deliveries.c.id)
            ).all()
        history: dict[int, list[tuple[datetime, str]]] = {}
        for lead_id, step_id, sent_at in sent:
            history.setdefault(lead_id, []).append((from_db(sent_at), step_id))
        return [
            Departure(lead_id, from_db_or_none(left_at), tuple(history.get(lead_id, ())))
            for lead_id, left_at in gone
        ]

    def first_leads(self, limit: int) -> list[Lead]:
        """The oldest leads, to preview an email with real data."""
        with self.db.read() as conn:
            rows = conn.execute(select(leads).order_by(leads.c.id).limit(limit)).mappings().all()
        return [lead_from_row(row) for row in rows]

    # -- dry runs --------------------------------------------------------------------------

    def lead_plans(
        self, campaign_id: str, email: str | None = None, batch: int = BATCH
    ) -> Iterator[list[LeadPlan]]:
        """Every lead enrolled in the campaign with its history and pending row, in batches
        (or only the lead with `email`); each batch is read in one transaction."""
        last = 0
        while True:
            with self.db.read() as conn:
                rows = conn.execute(_enrolled_after(campaign_id, last, batch, email)).all()
                if not rows:
                    return
                yield _batch_plans(conn, campaign_id, rows)
            last = rows[-1].id


def _enrolled_after(campaign_id: str, last: int, batch: int, email: str | None) -> Select:
    query = (
        select(
            leads.c.id,
            leads.c.email,
            leads.c.timezone,
            leads.c.status,
            enrollments.c.enrolled_at,
            enrollments.c.state,
        )
        .join(
            enrollments,
            and_(enrollments.c.lead_id == leads.c.id, enrollments.c.campaign_id == campaign_id),
        )
        .where(leads.c.id > last)
        .order_by(leads.c.id)
        .limit(batch)
    )
    if email is not None:
        query = query.where(func.lower(leads.c.email) == email.lower())
    return query


def _history_rows(conn: Connection, campaign_id: str, ids: Sequence[int]) -> Sequence[Row]:
    """The same rows and times as the queue's history, read for a whole batch of leads at
    once, with the pending row among them (told apart by its status)."""
    return conn.execute(
        select(
            deliveries.c.lead_id,
            deliveries.c.step_id,
            deliveries.c.status,
            func.coalesce(deliveries.c.sent_at, deliveries.c.claimed_at, deliveries.c.updated_at),
            deliveries.c.due_at,
            deliveries.c.attempts,
        )
        .where(
            deliveries.c.campaign_id == campaign_id,
            deliveries.c.lead_id.in_(ids),
            deliveries.c.status != DeliveryStatus.CANCELLED,
        )
        .order_by(deliveries.c.id)
    ).all()


def _behaviour(
    conn: Connection, campaign_id: str, ids: Sequence[int]
) -> tuple[dict[int, list[tuple[str, str]]], dict[int, dict[str, str]]]:
    """What a batch of leads did that a step's condition (`if:`) may ask about: the links a
    person (not a scanner) opened in this series, (step, url) in click order, and each lead's
    attributes."""
    found: dict[int, list[tuple[str, str]]] = {i: [] for i in ids}
    for lead_id, step_id, url in conn.execute(
        select(clicks.c.lead_id, clicks.c.step_id, clicks.c.url)
        .where(
            clicks.c.campaign_id == campaign_id,
            clicks.c.lead_id.in_(ids),
            clicks.c.source == ClickSource.PERSON,
        )
        .order_by(clicks.c.id)
    ):
        found[lead_id].append((step_id, url))
    attributes = {
        row["id"]: lead_from_row(row).attributes
        for row in conn.execute(select(leads).where(leads.c.id.in_(ids))).mappings()
    }
    return found, attributes


def _batch_plans(conn: Connection, campaign_id: str, rows: Sequence[Row]) -> list[LeadPlan]:
    ids = [row.id for row in rows]
    history: dict[int, list[Attempt]] = {i: [] for i in ids}
    pending: dict[int, Pending] = {}
    for lead_id, step_id, status, at, due_at, attempts in _history_rows(conn, campaign_id, ids):
        if status in QUEUED:  # claimed: reserved by a sender, not yet tried
            pending[lead_id] = Pending(step_id, from_db(due_at), attempts)
        else:
            history[lead_id].append(Attempt(step_id, DeliveryStatus(status), from_db(at)))
    found, attributes = _behaviour(conn, campaign_id, ids)
    mailed = _mailed(conn, ids)
    return [
        LeadPlan(
            row.id,
            row.email,
            LeadState(
                from_db(row.enrolled_at),
                row.timezone,
                LeadStatus(row.status),
                tuple(history[row.id]),
                tuple(found[row.id]),
                attributes.get(row.id, {}),
                tuple(mailed[row.id]),
            ),
            pending.get(row.id),
            row.state == EnrollmentState.PAUSED,
        )
        for row in rows
    ]


def _mailed(conn: Connection, ids: Sequence[int]) -> dict[int, list[datetime]]:
    """When each lead of a batch was mailed by any series (sent, in flight or in doubt; not
    the confirmation email), oldest first: what the frequency cap counts in a dry run."""
    found: dict[int, list[datetime]] = {i: [] for i in ids}
    at = func.coalesce(deliveries.c.sent_at, deliveries.c.claimed_at)
    for lead_id, when in conn.execute(
        select(deliveries.c.lead_id, at)
        .where(
            deliveries.c.lead_id.in_(ids),
            deliveries.c.status.in_(
                [DeliveryStatus.SENT, DeliveryStatus.SENDING, DeliveryStatus.UNKNOWN]
            ),
            deliveries.c.step_id != CONFIRM_STEP,
        )
        .order_by(at)
    ):
        found[lead_id].append(from_db(when))
    return found
