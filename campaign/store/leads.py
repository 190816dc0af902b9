"""Leads and what they do: sign-ups and enrollments, status changes, clicks and conversions.

A lead who leaves (unsubscribes, bounces, converts) has whatever was still queued for them
cancelled in the same transaction, so no sender can pick it up after the change.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import insert, select, update
from sqlalchemy.engine import Connection, RowMapping
from sqlalchemy.exc import IntegrityError

from campaign.model import (
    DeliveryStatus,
    EnrollmentState,
    Lead,
    LeadStatus,
    NewLead,
    PlannedDelivery,
)
from campaign.store.database import Database, from_db, to_db
from campaign.store.schema import (
    QUEUED_STATUSES,
    clicks,
    conversions,
    deliveries,
    enrollments,
    leads,
)

if TYPE_CHECKING:
    from campaign.store.queue import Queue


def lead_from_row(row: RowMapping) -> Lead:
    """A lead as read from the `leads` table (every column, by name)."""
    attributes = row["attributes"]
    if isinstance(attributes, str):  # pragma: no cover - some drivers hand JSON back as text
        attributes = json.loads(attributes)
    return Lead(
        row["id"],
        row["email"],
        row["first_name"],
        row["timezone"],
        attributes or {},
        LeadStatus(row["status"]),
        from_db(row["created_at"]),
    )


class Leads:
    """Every method is one short transaction."""

    def __init__(self, db: Database, queue: Queue):
        self.db = db
        self._queue = queue  # plans a confirmed lead's first step

    def add_leads(
        self, new: Sequence[NewLead], campaign_id: str, now: datetime
    ) -> list[tuple[int, bool]]:
        """Insert and enroll leads in one transaction; known addresses are left as they are.

        Returns (lead id, created) per input, so re-importing a file changes nothing.
        """
        if not new:
            return []
        with self.db.tx() as conn:
            known = _ids_by_email(conn, [lead.email for lead in new])
            fresh = [lead for lead in new if lead.email not in known]
            if fresh:
                known.update(_insert_leads(conn, fresh, campaign_id, to_db(now)))
        created = {lead.email for lead in fresh}
        return [(known[lead.email], lead.email in created) for lead in new]

    def lead(self, lead_id: int) -> Lead | None:
        with self.db.read() as conn:
            row = conn.execute(select(leads).where(leads.c.id == lead_id)).mappings().first()
        return lead_from_row(row) if row else None

    def lead_by_email(self, email: str) -> Lead | None:
        with self.db.read() as conn:
            row = conn.execute(select(leads).where(leads.c.email == email)).mappings().first()
        return lead_from_row(row) if row else None

    def set_lead_status(self, lead_id: int, status: LeadStatus, reason: str, now: datetime) -> bool:
        """Move a lead out of the series (or back); cancels whatever was still pending."""
        with self.db.tx() as conn:
            return _change_status(conn, lead_id, status, reason, now)

    def confirm_lead(
        self, lead_id: int, campaign_id: str, first: PlannedDelivery | None, now: datetime
    ) -> bool:
        """Double opt-in: a pending lead turns active, enrolled from now, with step 1 planned.

        Only a `pending` lead changes, so a second click, or a click after unsubscribing from
        the confirmation email, does nothing.
        """
        with self.db.tx() as conn:
            changed = conn.execute(
                update(leads)
                .where(leads.c.id == lead_id, leads.c.status == LeadStatus.PENDING)
                .values(status=LeadStatus.ACTIVE, status_reason="confirmed", status_at=to_db(now))
            ).rowcount
            if not changed:
                return False
            conn.execute(
                update(enrollments)
                .where(enrollments.c.lead_id == lead_id, enrollments.c.campaign_id == campaign_id)
                .values(enrolled_at=to_db(now))
            )
            if first is not None:
                self._queue.insert_planned(conn, lead_id, campaign_id, first, now)
            return True

    # -- engagement: clicks and conversions --------------------------------------------------

    def record_click(
        self, lead_id: int, campaign_id: str, step_id: str, url: str, now: datetime
    ) -> None:
        with self.db.tx() as conn:
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
        with self.db.tx() as conn:
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
                _change_status(
                    conn,
                    lead_id,
                    LeadStatus.CONVERTED,
                    f"converted ({source})",
                    now,
                    only_from=(LeadStatus.ACTIVE, LeadStatus.PENDING),
                )
            return created

    def attributed_step(self, lead_id: int, campaign_id: str) -> str | None:
        """The step a conversion is credited to: the last one clicked, else the last one sent."""
        with self.db.read() as conn:
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
                    deliveries.c.status == DeliveryStatus.SENT,
                )
                .order_by(deliveries.c.sent_at.desc(), deliveries.c.id.desc())
                .limit(1)
            ).scalar()


def _ids_by_email(conn: Connection, emails: list[str]) -> dict[str, int]:
    found = conn.execute(select(leads.c.email, leads.c.id).where(leads.c.email.in_(emails)))
    return {email: lead_id for email, lead_id in found}


def _insert_leads(
    conn: Connection, fresh: Sequence[NewLead], campaign_id: str, stamp: datetime
) -> dict[str, int]:
    """New leads, their enrollments and their first steps; returns their ids by address."""
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
    ids = _ids_by_email(conn, [lead.email for lead in fresh])
    conn.execute(
        insert(enrollments),
        [
            {
                "lead_id": ids[lead.email],
                "campaign_id": campaign_id,
                "enrolled_at": stamp,
                "state": EnrollmentState.ACTIVE,
            }
            for lead in fresh
        ],
    )
    planned = [(lead.email, lead.first) for lead in fresh if lead.first is not None]
    if planned:
        conn.execute(
            insert(deliveries),
            [
                {
                    "lead_id": ids[email],
                    "campaign_id": campaign_id,
                    "step_id": first.step_id,
                    "due_at": to_db(first.due_at),
                    "status": DeliveryStatus.PENDING,
                    "attempts": 0,
                    "updated_at": stamp,
                }
                for email, first in planned
            ],
        )
    return ids


def _change_status(
    conn: Connection,
    lead_id: int,
    status: LeadStatus,
    reason: str,
    now: datetime,
    only_from: Collection[LeadStatus] = (),
) -> bool:
    """`only_from` limits the change to leads in those statuses, so that, for example, an
    unsubscribed lead who books later stays unsubscribed."""
    status = LeadStatus(status)  # a caller's bare string is checked here, before any write
    where = [leads.c.id == lead_id, leads.c.status != status]
    if only_from:
        where.append(leads.c.status.in_(list(only_from)))
    changed = conn.execute(
        update(leads)
        .where(*where)
        .values(status=status, status_reason=reason, status_at=to_db(now))
    ).rowcount
    if changed and status is not LeadStatus.ACTIVE:
        conn.execute(
            update(deliveries)
            .where(deliveries.c.lead_id == lead_id, deliveries.c.status.in_(QUEUED_STATUSES))
            .values(
                status=DeliveryStatus.CANCELLED,
                last_error=f"lead {status}: {reason}",
                updated_at=to_db(now),
            )
        )
        conn.execute(
            update(enrollments).where(enrollments.c.lead_id == lead_id).values(state="exited")
        )
    return bool(changed)
