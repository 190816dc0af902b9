"""Leads and what they do: sign-ups and enrollments, status changes, clicks and conversions.

A lead who leaves (unsubscribes, bounces, converts) has whatever was still queued for them
cancelled in the same transaction, so no sender can pick it up after the change.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import insert, select, update
from sqlalchemy.engine import Connection, RowMapping
from sqlalchemy.exc import IntegrityError

from campaign.model import (
    CONFIRM_STEP,
    ClickSource,
    ClickVerdict,
    Confirmation,
    DeliveryStatus,
    EmailClicks,
    EnrollmentState,
    Lead,
    LeadStatus,
    NewLead,
    PlannedDelivery,
    address_key,
)
from campaign.store.database import Database, from_db, from_db_or_none, to_db
from campaign.store.schema import (
    QUEUED_STATUSES,
    clicks,
    consents,
    conversions,
    deliveries,
    enrollments,
    leads,
)
from campaign.store.suppressions import suppress

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


@dataclass(frozen=True)
class Consent:
    """How the leads created together gave their consent, recorded with each of them: the
    source (`web form`, `import FILE.csv`, `command line`) and, from the web, the peer
    address, the user agent and the consent wording or its version as the form sent it."""

    source: str
    ip: str | None = None
    user_agent: str | None = None
    text: str | None = None


class Leads:
    """Every method is one short transaction."""

    def __init__(self, db: Database, queue: Queue):
        self.db = db
        self._queue = queue  # plans a confirmed lead's first step

    def add_leads(
        self,
        new: Sequence[NewLead],
        campaign_id: str,
        now: datetime,
        consent: Consent | None = None,
    ) -> list[tuple[int, bool]]:
        """Insert and enroll leads in one transaction; known addresses are left as they are.

        An address is known whatever its letter case (`address_key`). Returns (lead id,
        created) per input, so re-importing a file changes nothing. Writers adding the same
        address at once (PostgreSQL) never fail on each other: the insert skips a lead
        another transaction holds, and that lead counts as known. Each lead created gets a
        `consent` record; a known one keeps its own.
        """
        if not new:
            return []
        keys = [address_key(lead.email) for lead in new]
        with self.db.tx() as conn:
            known = _ids_by_key(conn, keys)
            firsts: dict[str, NewLead] = {}
            for key, lead in zip(keys, new, strict=True):
                if key not in known:
                    firsts.setdefault(key, lead)
            fresh = list(firsts.items())
            stamp = to_db(now)
            created = _insert_leads(self.db, conn, fresh, campaign_id, stamp) if fresh else {}
            if created and consent is not None:
                _insert_consents(conn, created.values(), consent, stamp)
            if len(created) < len(fresh):  # added by another writer since `known` was read
                known.update(_ids_by_key(conn, [k for k, _ in fresh if k not in created]))
        known.update(created)
        first: set[str] = set()
        answer = []
        for key in keys:
            answer.append((known[key], key in created and key not in first))
            first.add(key)
        return answer

    def lead(self, lead_id: int) -> Lead | None:
        with self.db.read() as conn:
            row = conn.execute(select(leads).where(leads.c.id == lead_id)).mappings().first()
        return lead_from_row(row) if row else None

    def lead_by_email(self, email: str) -> Lead | None:
        """The lead with this address, whatever its letter case."""
        key = address_key(email)
        with self.db.read() as conn:
            row = conn.execute(select(leads).where(leads.c.email_key == key)).mappings().first()
        return lead_from_row(row) if row else None

    def bounced_leads(
        self, emails: Sequence[str] = (), reason_ending: str | None = None
    ) -> list[tuple[int, str]]:
        """(id, address) of bounced leads: those with these addresses (in any case), or whose
        bounce reason ends with `reason_ending` (the tag of the run that bounced them)."""
        where = [leads.c.status == LeadStatus.BOUNCED]
        if emails:
            where.append(leads.c.email_key.in_([address_key(e) for e in emails]))
        if reason_ending is not None:
            where.append(leads.c.status_reason.endswith(reason_ending, autoescape=True))
        with self.db.read() as conn:
            rows = conn.execute(
                select(leads.c.id, leads.c.email).where(*where).order_by(leads.c.id)
            )
            return [(row.id, row.email) for row in rows]

    def set_lead_status(self, lead_id: int, status: LeadStatus, reason: str, now: datetime) -> bool:
        """Move a lead out of the series (or back); cancels whatever was still pending."""
        with self.db.tx() as conn:
            return _change_status(conn, _current_id(conn, lead_id), status, reason, now)

    def confirm_lead(
        self, lead_id: int, campaign_id: str, first: PlannedDelivery | None, now: datetime
    ) -> bool:
        """Double opt-in: a pending lead turns active, enrolled from now, with step 1 planned.

        Only a `pending` lead changes, so a second click, or a click after unsubscribing from
        the confirmation email, does nothing. A confirmation still queued (the signup was
        posted again) is dropped: the lead has confirmed already.
        """
        with self.db.tx() as conn:
            confirmed = move_status(
                conn, lead_id, LeadStatus.ACTIVE, "confirmed", now, only_from=[LeadStatus.PENDING]
            )
            if not confirmed:
                return False
            conn.execute(
                update(enrollments)
                .where(enrollments.c.lead_id == lead_id, enrollments.c.campaign_id == campaign_id)
                .values(enrolled_at=to_db(now))
            )
            self._queue.replace_queued(conn, lead_id, campaign_id, first, now)
            return True

    def queue_confirmation(
        self, lead_id: int, campaign_id: str, now: datetime, again_after: timedelta
    ) -> Confirmation | None:
        """Queue the double opt-in email for a pending lead signing up again, due now, unless
        one is still queued or was dealt with (sent, or given up on) less than `again_after`
        ago: an address gets one confirmation per `again_after` however often it is posted.

        None when the lead is no longer pending. The lead's row is locked first, so that
        signups of one address at once, and its confirmation, take turns.
        """
        with self.db.tx() as conn:
            status = conn.execute(
                select(leads.c.status).where(leads.c.id == lead_id).with_for_update()
            ).scalar()
            if status != LeadStatus.PENDING:
                return None
            mine = (
                deliveries.c.lead_id == lead_id,
                deliveries.c.campaign_id == campaign_id,
                deliveries.c.step_id == CONFIRM_STEP,
            )
            row = conn.execute(select(deliveries.c.status, deliveries.c.updated_at).where(*mine))
            found = row.first()
            if found is None:
                planned = PlannedDelivery(CONFIRM_STEP, now)
                self._queue.insert_planned(conn, lead_id, campaign_id, planned, now)
                return Confirmation.QUEUED
            if found.status in (*QUEUED_STATUSES, DeliveryStatus.SENDING):
                return Confirmation.QUEUED
            if from_db(found.updated_at) > now - again_after:
                return Confirmation.RECENTLY_SENT
            conn.execute(
                update(deliveries)
                .where(*mine)
                .values(
                    status=DeliveryStatus.PENDING,
                    due_at=to_db(now),
                    attempts=0,
                    claimed_at=None,
                    claimed_by=None,
                    sent_at=None,
                    message_id=None,
                    last_error=None,
                    smtp_code=None,
                    updated_at=to_db(now),
                )
            )
            return Confirmation.QUEUED

    # -- engagement: clicks and conversions --------------------------------------------------

    def record_click(
        self,
        lead_id: int,
        campaign_id: str,
        step_id: str,
        url: str,
        now: datetime,
        judge: Callable[[EmailClicks], ClickVerdict] | None = None,
        window: timedelta = timedelta(seconds=1),
    ) -> ClickVerdict:
        """Record a click with who made it, as `judge` decides from what the store knows of
        the email (when it was sent, its clicks within `window` before): a person's without
        one. A burst makes the email's earlier clicks in the window a scanner's too.

        The lead's row is locked first, so clicks on one email at once are judged in turn,
        each seeing the ones before."""
        with self.db.tx() as conn:
            current = _current_id(conn, lead_id)
            conn.execute(select(leads.c.id).where(leads.c.id == current).with_for_update())
            verdict = ClickVerdict(ClickSource.PERSON)
            email = (
                clicks.c.lead_id == current,
                clicks.c.campaign_id == campaign_id,
                clicks.c.step_id == step_id,
                clicks.c.clicked_at >= to_db(now - window),
            )
            if judge is not None:
                verdict = judge(_email_clicks(conn, lead_id, campaign_id, step_id, email))
            if verdict.burst:
                conn.execute(
                    update(clicks)
                    .where(*email, clicks.c.source == ClickSource.PERSON)
                    .values(source=ClickSource.SCANNER, source_reason=verdict.reason)
                )
            conn.execute(
                insert(clicks).values(
                    lead_id=current,
                    campaign_id=campaign_id,
                    step_id=step_id,
                    url=url,
                    clicked_at=to_db(now),
                    source=verdict.source,
                    source_reason=verdict.reason or None,
                )
            )
        return verdict

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
            lead_id = _current_id(conn, lead_id)
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
                .where(
                    clicks.c.lead_id == lead_id,
                    clicks.c.campaign_id == campaign_id,
                    clicks.c.source == ClickSource.PERSON,  # a scanner's click credits nothing
                )
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


def _email_clicks(
    conn: Connection, lead_id: int, campaign_id: str, step_id: str, recent: Sequence[Any]
) -> EmailClicks:
    """When the email (the lead's delivery of the step) was sent, and its recent clicks."""
    sent_at = conn.execute(
        select(deliveries.c.sent_at).where(
            deliveries.c.lead_id == lead_id,
            deliveries.c.campaign_id == campaign_id,
            deliveries.c.step_id == step_id,
        )
    ).scalar()
    rows = conn.execute(select(clicks.c.url, clicks.c.clicked_at).where(*recent)).all()
    return EmailClicks(from_db_or_none(sent_at), tuple((url, from_db(at)) for url, at in rows))


def _ids_by_key(conn: Connection, keys: list[str]) -> dict[str, int]:
    found = conn.execute(select(leads.c.email_key, leads.c.id).where(leads.c.email_key.in_(keys)))
    return {key: lead_id for key, lead_id in found}


def _current_id(conn: Connection, lead_id: int) -> int:
    """The lead a link in an email sent to `lead_id` acts on: the lead itself, or, for a row
    merged into another with the same address (`schema._merge`), that other lead."""
    row = conn.execute(select(leads.c.status, leads.c.email).where(leads.c.id == lead_id)).first()
    if row is None or row.status != LeadStatus.MERGED:
        return lead_id
    kept = conn.execute(
        select(leads.c.id).where(leads.c.email_key == address_key(row.email))
    ).scalar()
    return lead_id if kept is None else kept


def _insert_leads(
    db: Database,
    conn: Connection,
    fresh: Sequence[tuple[str, NewLead]],
    campaign_id: str,
    stamp: datetime,
) -> dict[str, int]:
    """New leads (by address key), their enrollments and their first steps; returns the ids
    of the leads this transaction created, by key. A lead whose address another writer
    stored first is skipped (`ON CONFLICT DO NOTHING`), not an error.

    Longer than most: three bulk inserts, their rows written out so each reads as its table."""
    added = conn.execute(
        db.insert(leads).on_conflict_do_nothing().returning(leads.c.email_key, leads.c.id),
        [
            {
                "email": lead.email,
                "email_key": key,
                "first_name": lead.first_name,
                "timezone": lead.timezone,
                "attributes": lead.attributes,
                "status": lead.status,
                "created_at": stamp,
            }
            for key, lead in fresh
        ],
    )
    ids: dict[str, int] = {key: lead_id for key, lead_id in added}
    mine = [(key, lead) for key, lead in fresh if key in ids]
    if not mine:
        return ids
    conn.execute(
        insert(enrollments),
        [
            {
                "lead_id": ids[key],
                "campaign_id": campaign_id,
                "enrolled_at": stamp,
                "state": EnrollmentState.ACTIVE,
            }
            for key, _lead in mine
        ],
    )
    planned = [(key, lead.first) for key, lead in mine if lead.first is not None]
    if planned:
        conn.execute(
            insert(deliveries),
            [
                {
                    "lead_id": ids[key],
                    "campaign_id": campaign_id,
                    "step_id": first.step_id,
                    "due_at": to_db(first.due_at),
                    "status": DeliveryStatus.PENDING,
                    "attempts": 0,
                    "updated_at": stamp,
                }
                for key, first in planned
            ],
        )
    return ids


def _insert_consents(
    conn: Connection, lead_ids: Collection[int], consent: Consent, stamp: datetime
) -> None:
    """One consent row per lead created, in one statement for the whole batch."""
    conn.execute(
        insert(consents),
        [
            {
                "lead_id": lead_id,
                "source": consent.source,
                "given_at": stamp,
                "ip": consent.ip,
                "user_agent": consent.user_agent,
                "text": consent.text,
            }
            for lead_id in lead_ids
        ],
    )


def move_status(
    conn: Connection,
    lead_id: int,
    status: LeadStatus,
    reason: str,
    now: datetime,
    only_from: Collection[LeadStatus] = (),
) -> bool:
    """The lead's status alone, nothing else of its series; False when it was not changed.
    `only_from` limits the change to leads in those statuses, so that, for example, an
    unsubscribed lead who books later stays unsubscribed."""
    status = LeadStatus(status)  # a caller's bare string is checked here, before any write
    # An erased lead's status is final: nothing that arrives later (a click, a bounce) moves it.
    where = [leads.c.id == lead_id, leads.c.status.not_in([status, LeadStatus.ERASED])]
    if only_from:
        where.append(leads.c.status.in_(list(only_from)))
    changed = conn.execute(
        update(leads)
        .where(*where)
        .values(status=status, status_reason=reason, status_at=to_db(now))
    ).rowcount
    return bool(changed)


def _change_status(
    conn: Connection,
    lead_id: int,
    status: LeadStatus,
    reason: str,
    now: datetime,
    only_from: Collection[LeadStatus] = (),
) -> bool:
    """A lead leaving the series (any status but active) takes nothing queued with it, and a
    bounce, complaint or unsubscribe puts the address on the suppression list, all in one
    transaction."""
    changed = move_status(conn, lead_id, status, reason, now, only_from)
    if changed:
        suppress(conn, lead_id, LeadStatus(status), reason, now)
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
            update(enrollments)
            .where(enrollments.c.lead_id == lead_id)
            .values(state=EnrollmentState.EXITED)
        )
    return changed
