"""The front desk's view of leads, one at a time: who is where in the series (`leads list`),
everything held about one lead (`leads show`), and an unsubscribe taken by phone.

A phoned-in unsubscribe goes through the same status change as the one-click link
(`leads._change_status`): the address is suppressed and whatever was queued for the lead is
cancelled in the same transaction, so no sender can pick it up afterwards.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import and_, func, select
from sqlalchemy.engine import Connection
from sqlalchemy.sql import ColumnElement, Select

from campaign.model import (
    PASSED,
    ClickSource,
    DeliveryStatus,
    Lead,
    LeadStatus,
    address_key,
)
from campaign.store.audit import Audit, lead_target
from campaign.store.database import Database, from_db, from_db_or_none
from campaign.store.leads import _change_status, lead_from_row
from campaign.store.reads import LeadPlan, _batch_plans
from campaign.store.schema import (
    QUEUED_STATUSES,
    clicks,
    consents,
    conversions,
    deliveries,
    enrollments,
    inbound_messages,
    leads,
    suppressions,
)
from campaign.store.suppressions import COLUMNS as SUPPRESSION_COLUMNS
from campaign.store.suppressions import Suppression, _from_row

# Rows that say which step a lead waits for: planned, reserved, or in flight right now.
WAITING = (*QUEUED_STATUSES, DeliveryStatus.SENDING)
PASSED_STATUSES = tuple(s for s in DeliveryStatus if s in PASSED)
# A lead who asks to stop is unsubscribed from any of these; a bounced or complained lead is
# never mailed again already, and keeps that status (the stronger reason).
UNSUBSCRIBE_FROM = (
    LeadStatus.ACTIVE,
    LeadStatus.PENDING,
    LeadStatus.CONVERTED,
    LeadStatus.REPLIED,
)


@dataclass(frozen=True)
class LeadLine:
    """One lead of `leads list`: its planner state and pending row, and its name."""

    plan: LeadPlan
    first_name: str


@dataclass(frozen=True)
class LeadPage:
    """A page of leads and how many match in all, so the page can say how many more."""

    leads: list[LeadLine]
    total: int


@dataclass(frozen=True)
class DeliveryLine:
    step_id: str
    status: DeliveryStatus
    due_at: datetime
    sent_at: datetime | None
    attempts: int
    last_error: str | None
    smtp_code: int | None
    variant: int | None = None  # which subject of a subject test went out


@dataclass(frozen=True)
class ClickLine:
    step_id: str
    url: str
    at: datetime
    source: ClickSource
    reason: str | None


@dataclass(frozen=True)
class ConversionLine:
    step_id: str | None
    source: str
    at: datetime


@dataclass(frozen=True)
class InboundLine:
    received_at: datetime
    kind: str
    step_id: str | None
    reason: str
    outcome: str


@dataclass(frozen=True)
class ConsentLine:
    """One time the lead gave consent: how, when, and from the web where and with what."""

    source: str
    given_at: datetime
    ip: str | None
    user_agent: str | None
    text: str | None


@dataclass(frozen=True)
class LeadRecord:
    """Everything the store holds about one lead in one series."""

    lead: Lead
    status_reason: str | None
    status_at: datetime | None
    # active, completed (every step done) or exited; None when not enrolled in this series
    enrollment: str | None
    plan: LeadPlan | None  # None when not enrolled in this series
    deliveries: tuple[DeliveryLine, ...]
    clicks: tuple[ClickLine, ...]
    conversion: ConversionLine | None
    inbound: tuple[InboundLine, ...]
    suppressions: tuple[Suppression, ...]  # the standing one and any lifted, oldest first
    consents: tuple[ConsentLine, ...] = ()  # each time consent was given, oldest first


class Unsubscribe(enum.StrEnum):
    """What a phoned-in unsubscribe did."""

    DONE = "unsubscribed"
    ALREADY = "already unsubscribed"
    OUT = "already never mailed"  # bounced or complained: kept as it is


@dataclass(frozen=True)
class Unsubscribed:
    outcome: Unsubscribe
    email: str
    status: LeadStatus  # the lead's status now
    since: datetime | None
    cancelled: int  # emails that were queued and are cancelled


class Records:
    """Every method is one short transaction."""

    def __init__(self, db: Database):
        self.db = db

    def page(
        self,
        campaign_id: str,
        *,
        status: LeadStatus | None = None,
        step_id: str | None = None,
        offset: int = 0,
        limit: int = 50,
    ) -> LeadPage:
        """The series' leads in enrollment order, filtered by status and by the step each is
        at: the one it waits for, else the last one it passed."""
        where: list[ColumnElement[bool]] = []
        if status is not None:
            where.append(leads.c.status == status)
        if step_id is not None:
            where.append(_current_step(campaign_id) == step_id)
        query = _enrolled(campaign_id).where(*where)
        with self.db.read() as conn:
            total = conn.execute(select(func.count()).select_from(query.subquery())).scalar_one()
            rows = conn.execute(query.order_by(leads.c.id).offset(offset).limit(limit)).all()
            plans = _batch_plans(conn, campaign_id, rows) if rows else []
        names = {row.id: row.first_name for row in rows}
        return LeadPage([LeadLine(plan, names[plan.lead_id]) for plan in plans], total)

    def record(self, campaign_id: str, email: str) -> LeadRecord | None:
        """The lead with this address (any letter case) and its whole history in the series."""
        with self.db.read() as conn:
            row = (
                conn.execute(select(leads).where(leads.c.email_key == address_key(email)))
                .mappings()
                .first()
            )
            if row is None:
                return None
            lead = lead_from_row(row)
            enrolled = conn.execute(_enrolled(campaign_id).where(leads.c.id == lead.id)).first()
            return LeadRecord(
                lead,
                row["status_reason"],
                from_db_or_none(row["status_at"]),
                _enrollment_state(conn, lead.id, campaign_id),
                _batch_plans(conn, campaign_id, [enrolled])[0] if enrolled else None,
                _deliveries(conn, lead.id, campaign_id),
                _clicks(conn, lead.id, campaign_id),
                _conversion(conn, lead.id, campaign_id),
                _inbound(conn, lead.id),
                _suppressions(conn, lead.email),
                _consents(conn, lead.id),
            )

    def unsubscribe(
        self, email: str, reason: str, now: datetime, actor: str
    ) -> Unsubscribed | None:
        """Unsubscribe the lead with this address as the one-click link does, written to the
        audit log as `actor`'s in the same transaction; None when no lead has it. Asking
        again changes nothing (and logs nothing)."""
        with self.db.tx() as conn:
            row = conn.execute(
                select(leads.c.id, leads.c.email, leads.c.status, leads.c.status_at)
                .where(leads.c.email_key == address_key(email))
                .with_for_update()
            ).first()
            if row is None:
                return None
            queued = conn.execute(
                select(func.count()).where(
                    deliveries.c.lead_id == row.id, deliveries.c.status.in_(QUEUED_STATUSES)
                )
            ).scalar_one()
            status = LeadStatus(row.status)
            if status not in UNSUBSCRIBE_FROM:
                already = Unsubscribe.ALREADY if status is LeadStatus.UNSUBSCRIBED else None
                return Unsubscribed(
                    already or Unsubscribe.OUT,
                    row.email,
                    status,
                    from_db_or_none(row.status_at),
                    0,
                )
            _change_status(
                conn, row.id, LeadStatus.UNSUBSCRIBED, reason, now, only_from=UNSUBSCRIBE_FROM
            )
            Audit.record(conn, actor, "unsubscribe", lead_target(row.id), reason, now)
            return Unsubscribed(Unsubscribe.DONE, row.email, LeadStatus.UNSUBSCRIBED, now, queued)


def _enrolled(campaign_id: str) -> Select:
    """The columns a dry run's plan is built from, for leads enrolled in the series."""
    return select(
        leads.c.id,
        leads.c.email,
        leads.c.first_name,
        leads.c.timezone,
        leads.c.status,
        enrollments.c.enrolled_at,
        enrollments.c.state,
    ).join(
        enrollments,
        and_(enrollments.c.lead_id == leads.c.id, enrollments.c.campaign_id == campaign_id),
    )


def _current_step(campaign_id: str) -> ColumnElement[str]:
    """The step a lead is at: the one it waits for (queued or in flight), else the last one
    it passed (sent, failed or in doubt)."""
    mine = and_(deliveries.c.lead_id == leads.c.id, deliveries.c.campaign_id == campaign_id)
    waiting = (
        select(deliveries.c.step_id)
        .where(mine, deliveries.c.status.in_(WAITING))
        .order_by(deliveries.c.id.desc())
        .limit(1)
        .scalar_subquery()
    )
    when = func.coalesce(deliveries.c.sent_at, deliveries.c.updated_at)
    passed = (
        select(deliveries.c.step_id)
        .where(mine, deliveries.c.status.in_(PASSED_STATUSES))
        .order_by(when.desc(), deliveries.c.id.desc())
        .limit(1)
        .scalar_subquery()
    )
    return func.coalesce(waiting, passed)


def _enrollment_state(conn: Connection, lead_id: int, campaign_id: str) -> str | None:
    state = conn.execute(
        select(enrollments.c.state).where(
            enrollments.c.lead_id == lead_id, enrollments.c.campaign_id == campaign_id
        )
    ).scalar()
    return None if state is None else str(state)


def _deliveries(conn: Connection, lead_id: int, campaign_id: str) -> tuple[DeliveryLine, ...]:
    rows = conn.execute(
        select(
            deliveries.c.step_id,
            deliveries.c.status,
            deliveries.c.due_at,
            deliveries.c.sent_at,
            deliveries.c.attempts,
            deliveries.c.last_error,
            deliveries.c.smtp_code,
            deliveries.c.variant,
        )
        .where(deliveries.c.lead_id == lead_id, deliveries.c.campaign_id == campaign_id)
        .order_by(deliveries.c.id)
    ).all()
    return tuple(
        DeliveryLine(
            r.step_id,
            DeliveryStatus(r.status),
            from_db(r.due_at),
            from_db_or_none(r.sent_at),
            r.attempts,
            r.last_error,
            r.smtp_code,
            r.variant,
        )
        for r in rows
    )


def _clicks(conn: Connection, lead_id: int, campaign_id: str) -> tuple[ClickLine, ...]:
    rows = conn.execute(
        select(
            clicks.c.step_id,
            clicks.c.url,
            clicks.c.clicked_at,
            clicks.c.source,
            clicks.c.source_reason,
        )
        .where(clicks.c.lead_id == lead_id, clicks.c.campaign_id == campaign_id)
        .order_by(clicks.c.clicked_at, clicks.c.id)
    ).all()
    return tuple(
        ClickLine(r.step_id, r.url, from_db(r.clicked_at), ClickSource(r.source), r.source_reason)
        for r in rows
    )


def _conversion(conn: Connection, lead_id: int, campaign_id: str) -> ConversionLine | None:
    row = conn.execute(
        select(conversions.c.step_id, conversions.c.source, conversions.c.converted_at).where(
            conversions.c.lead_id == lead_id, conversions.c.campaign_id == campaign_id
        )
    ).first()
    return None if row is None else ConversionLine(row[0], row[1], from_db(row[2]))


def _inbound(conn: Connection, lead_id: int) -> tuple[InboundLine, ...]:
    """Mail that came back about the lead, from any series (a webhook may name no series)."""
    rows = conn.execute(
        select(
            inbound_messages.c.received_at,
            inbound_messages.c.kind,
            inbound_messages.c.step_id,
            inbound_messages.c.reason,
            inbound_messages.c.outcome,
        )
        .where(inbound_messages.c.lead_id == lead_id)
        .order_by(inbound_messages.c.received_at, inbound_messages.c.id)
    ).all()
    return tuple(InboundLine(from_db(r[0]), *r[1:]) for r in rows)


def _suppressions(conn: Connection, email: str) -> tuple[Suppression, ...]:
    rows = conn.execute(
        select(*SUPPRESSION_COLUMNS)
        .where(suppressions.c.email_key == address_key(email))
        .order_by(suppressions.c.created_at, suppressions.c.id)
    ).all()
    return tuple(_from_row(row) for row in rows)


def _consents(conn: Connection, lead_id: int) -> tuple[ConsentLine, ...]:
    rows = conn.execute(
        select(
            consents.c.source,
            consents.c.given_at,
            consents.c.ip,
            consents.c.user_agent,
            consents.c.text,
        )
        .where(consents.c.lead_id == lead_id)
        .order_by(consents.c.id)
    ).all()
    return tuple(
        ConsentLine(r.source, from_db(r.given_at), r.ip, r.user_agent, r.text) for r in rows
    )
