"""The send queue: deliveries reserved, started and settled, leases, and replans.

A worker reserves a short run of due rows at once (status `claimed`: taken from the queue,
not yet attempted) and then starts them one at a time: a row turns `sending`, committed,
just before its SMTP transaction, and only after the previous row of that connection was
settled. So a crash leaves at most one message per connection in doubt, and the reserved
rows behind it simply go back to the queue. PostgreSQL reserves with `FOR UPDATE SKIP
LOCKED`; SQLite serialises writers with `BEGIN IMMEDIATE`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import (
    DateTime,
    Integer,
    String,
    and_,
    bindparam,
    exists,
    func,
    literal_column,
    or_,
    select,
    update,
)
from sqlalchemy.engine import Connection
from sqlalchemy.sql import Select, Update

from campaign.model import (
    CONFIRM_STEP,
    Claim,
    ClickSource,
    DeliveryStatus,
    EnrollmentState,
    Lead,
    LeadStatus,
    PlannedDelivery,
    Sent,
    Start,
    address_key,
)
from campaign.store.audit import Audit, lead_target
from campaign.store.database import Database, from_db, from_db_or_none, to_db
from campaign.store.leads import lead_from_row, move_status
from campaign.store.meta import pause_since, series_pause_key
from campaign.store.prepared import Prepared
from campaign.store.schema import (
    NOT_HISTORY_STATUSES,
    QUEUED_STATUSES,
    clicks,
    deliveries,
    enrollments,
    leads,
    meta,
    suppressions,
)
from campaign.store.suppressions import lift_for_lead

# Inline, as in the partial index's WHERE clause (see `_due`).
PENDING = literal_column(f"'{DeliveryStatus.PENDING}'", String)
# A lead's history as the planner reads it: (step, status, when it ended or began).
History = list[tuple[str, str, datetime]]
Plan = Callable[[datetime, History], PlannedDelivery | None]


# Whom a delivery may go to: an active lead, or a lead still to confirm its address when the
# delivery is the confirmation email itself (double opt-in).
SENDABLE = or_(
    leads.c.status == LeadStatus.ACTIVE,
    and_(leads.c.status == LeadStatus.PENDING, deliveries.c.step_id == CONFIRM_STEP),
)


# A lead paused in the series (`leads pause`) is sent nothing: its queued row was taken back
# by the pause, and a row planned later by its message then in flight waits for the resume.
NOT_PAUSED = ~exists().where(
    enrollments.c.lead_id == deliveries.c.lead_id,
    enrollments.c.campaign_id == deliveries.c.campaign_id,
    enrollments.c.state == EnrollmentState.PAUSED,
)


# -- the per-message statements, built once: building one costs more than running it --------


def _due(campaign: Any, now: Any, limit: Any) -> Select:
    """The next due deliveries of leads they may go to (`SENDABLE`, not paused), in claim
    order (served by ix_deliveries_due).

    `'pending'` is a literal so the partial index matches even in a generic prepared plan.
    """
    return (
        select(deliveries.c.id)
        .join(leads, leads.c.id == deliveries.c.lead_id)
        .where(
            deliveries.c.campaign_id == campaign,
            deliveries.c.status == PENDING,
            deliveries.c.due_at <= now,
            SENDABLE,
            NOT_PAUSED,
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
        .values(status=DeliveryStatus.CLAIMED, claimed_at=now, claimed_by=bindparam("claim_worker"))
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
        deliveries.c.status.not_in(NOT_HISTORY_STATUSES),
    )
    .order_by(deliveries.c.id)
)
HISTORIES = (
    select(deliveries.c.lead_id, *HISTORY_COLUMNS)
    .where(
        deliveries.c.lead_id.in_(bindparam("leads", expanding=True)),
        deliveries.c.campaign_id == bindparam("campaign"),
        deliveries.c.status.not_in(NOT_HISTORY_STATUSES),
    )
    .order_by(deliveries.c.id)
)
# The links people (not scanners) opened, for judging steps' conditions.
PEOPLES_CLICKS = (
    select(clicks.c.lead_id, clicks.c.step_id, clicks.c.url)
    .where(
        clicks.c.lead_id.in_(bindparam("leads", expanding=True)),
        clicks.c.campaign_id == bindparam("campaign"),
        clicks.c.source == ClickSource.PERSON,
    )
    .order_by(clicks.c.id)
)
# An address on the suppression list (`store.suppressions`), looked up by its unique key.
SUPPRESSED = exists().where(
    suppressions.c.email_key == leads.c.email_key, suppressions.c.lifted_at.is_(None)
)
# The point of no return: a reserved row becomes the connection's one message in flight,
# only if it is still this worker's and its lead may still get it (the last look: a lead who
# left, or who confirmed before the confirmation email went out, or whose address is
# suppressed, is not mailed). Still one statement: the suppression is one index probe in it.
STILL_OURS_AND_SENDABLE = (
    deliveries.c.id == bindparam("delivery"),
    deliveries.c.status == DeliveryStatus.CLAIMED,
    deliveries.c.claimed_by == bindparam("worker"),
    exists().where(leads.c.id == deliveries.c.lead_id, SENDABLE, ~SUPPRESSED),
)
START = (
    update(deliveries)
    .where(*STILL_OURS_AND_SENDABLE)
    .values(
        status=DeliveryStatus.SENDING,
        claimed_at=bindparam("start_now", type_=DateTime),
        attempts=deliveries.c.attempts + 1,
        updated_at=bindparam("start_now", type_=DateTime),
        variant=bindparam("start_variant", type_=Integer),
    )
)
# A series' pause (`series pause`), read by every reservation under a shared lock: a pause
# writing it waits for the reservations under way, and those after it see it.
SERIES_FLAG = select(meta.c.value).where(meta.c.key == bindparam("pause_key"))
SERIES_FLAG_SHARED = SERIES_FLAG.with_for_update(read=True)
MARK_SENT = (
    update(deliveries)
    .where(deliveries.c.id == bindparam("delivery"))
    .values(
        status=DeliveryStatus.SENT,
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

# The frequency cap's last look (`Queue.start_capped`): the lead's row locked, so starts for
# one lead from any series or worker take turns, then its emails that count against the cap
# (every series; sent, in flight or in doubt) since the window began, found through
# uq_delivery, whose first column is the lead.
LOCK_LEAD = select(leads.c.id).where(leads.c.id == bindparam("lead")).with_for_update()
MAILED_AT = func.coalesce(deliveries.c.sent_at, deliveries.c.claimed_at)
RECENTLY_MAILED = select(MAILED_AT).where(
    deliveries.c.lead_id == bindparam("lead"),
    deliveries.c.status.in_([DeliveryStatus.SENT, DeliveryStatus.SENDING, DeliveryStatus.UNKNOWN]),
    deliveries.c.step_id != CONFIRM_STEP,  # it answers the lead's own signup
    bindparam("since", type_=DateTime) < MAILED_AT,
)
# A capped row goes back to the queue for later, no attempt spent, if it is still this
# worker's and its lead may still be mailed (else `_not_ours` says why not).
DEFER = (
    update(deliveries)
    .where(*STILL_OURS_AND_SENDABLE)
    .values(
        **UNCLAIMED,
        due_at=bindparam("defer_to", type_=DateTime),
        updated_at=bindparam("defer_now", type_=DateTime),
    )
)


def _settled(claim: Claim, now: datetime, **values: Any) -> Update:
    """The one statement that ends a claim: the outcome's columns plus the time it changed."""
    return (
        update(deliveries)
        .where(deliveries.c.id == claim.delivery_id)
        .values(**values, updated_at=to_db(now))
    )


def _history(conn: Connection, lead_id: int, campaign_id: str) -> History:
    rows = conn.execute(HISTORY, {"lead": lead_id, "campaign": campaign_id}).all()
    return [(s, st, from_db(at)) for s, st, at in rows]


def _series_paused(conn: Connection, db: Database, campaign_id: str) -> bool:
    """Whether the series is paused, read in a reservation's transaction with its row share
    locked (see `SERIES_FLAG`). The row is made by the first reservation that finds none, and
    read again: a pause that made it meanwhile is seen."""
    key = {"pause_key": series_pause_key(campaign_id)}
    flag = conn.execute(SERIES_FLAG_SHARED, key).scalar()
    if flag is None:
        conn.execute(
            db.insert(meta).values(key=key["pause_key"], value="").on_conflict_do_nothing()
        )
        flag = conn.execute(SERIES_FLAG_SHARED, key).scalar()
    return bool(flag)


@dataclass(frozen=True)
class Cap:
    """The frequency cap at the last look: at most `most` emails to a lead within `per`,
    from every series; `defer` (the planner's) says when a capped email may go, from the
    times the lead was mailed within the last `per`."""

    most: int
    per: timedelta
    defer: Callable[[list[datetime]], datetime]


@dataclass(frozen=True)
class LeadPause:
    """What `pause_lead` or `resume_lead` found, and what it did (`changed`)."""

    lead_id: int
    email: str
    status: LeadStatus  # the lead's own
    enrollment: str | None  # its state in the series before; None when not enrolled in it
    changed: bool = False
    taken_back: int = 0  # the queued emails a pause took back
    planned: PlannedDelivery | None = None  # what a resume planned next
    in_flight: bool = False  # a resume found an email in flight: its outcome plans the next


@dataclass(frozen=True)
class SeriesPause:
    """What `pause_series` or `resume_series` found (`since`: paused since then, or None),
    and what it did."""

    since: datetime | None
    changed: bool = False
    taken_back: int = 0  # reserved rows a pause put back in the queue, unsent
    queued: int = 0  # the series' queued emails, which wait for the resume


def _lead_for_pause(
    conn: Connection, email: str, campaign_id: str
) -> tuple[Lead, str | None] | None:
    """The lead with this address and its enrollment's state, both locked, or None."""
    row = (
        conn.execute(select(leads).where(leads.c.email_key == address_key(email)).with_for_update())
        .mappings()
        .first()
    )
    if row is None:
        return None
    state = conn.execute(
        select(enrollments.c.state)
        .where(enrollments.c.lead_id == row["id"], enrollments.c.campaign_id == campaign_id)
        .with_for_update()
    ).scalar()
    return lead_from_row(row), None if state is None else str(state)


def _set_enrollment(
    conn: Connection, lead_id: int, campaign_id: str, was: EnrollmentState, to: EnrollmentState
) -> None:
    conn.execute(
        update(enrollments)
        .where(
            enrollments.c.lead_id == lead_id,
            enrollments.c.campaign_id == campaign_id,
            enrollments.c.state == was,
        )
        .values(state=to)
    )


def _not_ours(conn: Connection, claim: Claim, now: datetime) -> Start:
    """Why a reserved row could not be taken any further. A row still this worker's was
    refused by the last look (its address is suppressed, or its lead may no longer be
    mailed): it is cancelled here, never sent. Only this path, taken when `START`
    changed nothing, costs the extra statements."""
    why = (
        select(suppressions.c.reason)
        .join(leads, leads.c.email_key == suppressions.c.email_key)
        .where(leads.c.id == claim.lead_id, suppressions.c.lifted_at.is_(None))
        .scalar_subquery()
    )
    reason = func.coalesce("address suppressed: " + why, "lead may not be mailed")
    cancelled = conn.execute(
        _settled(claim, now, status=DeliveryStatus.CANCELLED, last_error=reason).where(
            deliveries.c.status == DeliveryStatus.CLAIMED,
            deliveries.c.claimed_by == claim.worker,
        )
    ).rowcount
    if cancelled:
        return Start.LEFT
    status = conn.execute(
        select(deliveries.c.status).where(deliveries.c.id == claim.delivery_id)
    ).scalar()
    return Start.LEFT if status == DeliveryStatus.CANCELLED else Start.GONE


class Queue:
    """The deliveries: planned, reserved, started and settled. Every method is one short
    transaction."""

    def __init__(self, db: Database):
        self.db = db
        # The statements a sender runs for every message, compiled once for this database.
        dialect = db.engine.dialect
        self._start_sql = Prepared(START, dialect)
        self._mark_sent_sql = Prepared(MARK_SENT, dialect)
        self._plan_sql = Prepared(
            db.insert(deliveries).inline().on_conflict_do_nothing(), dialect, PLANNED_COLUMNS
        )

    # -- planning --------------------------------------------------------------------------

    def insert_planned(
        self,
        conn: Connection,
        lead_id: int,
        campaign_id: str,
        planned: PlannedDelivery,
        now: datetime,
    ) -> None:
        """Plan a step in `conn`'s transaction, unless it already has a row (sent or
        otherwise): never a second one.

        `ON CONFLICT DO NOTHING` rather than a savepoint: one statement, not three.
        """
        self._plan_sql.run(
            conn,
            {
                "lead_id": lead_id,
                "campaign_id": campaign_id,
                "step_id": planned.step_id,
                "due_at": to_db(planned.due_at),
                "status": DeliveryStatus.PENDING.value,  # a plain str binds faster (prepared.py)
                "attempts": 0,
                "updated_at": to_db(now),
            },
        )

    def enrolled_leads(self, campaign_id: str, batch: int = 1000) -> Iterator[list[int]]:
        """Ids of every lead still in the series and not paused, in batches, for replanning
        after an edit (a paused lead is replanned when it resumes)."""
        last = 0
        while True:
            with self.db.read() as conn:
                ids = (
                    conn.execute(
                        select(enrollments.c.lead_id)
                        .join(leads, leads.c.id == enrollments.c.lead_id)
                        .where(
                            enrollments.c.campaign_id == campaign_id,
                            enrollments.c.state != EnrollmentState.PAUSED,
                            leads.c.status == LeadStatus.ACTIVE,
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

    def replace_plan(self, lead_id: int, campaign_id: str, plan: Plan, now: datetime) -> None:
        """Make the lead's pending row match the planner's answer; sent rows are never touched.

        `plan` gets when the lead enrolled and its history (not the pending plan) as read
        inside this transaction, with the lead's rows locked (on SQLite the whole write lock
        is held): a sender recording or starting one of them meanwhile cannot make the
        answer stale, and drop the lead's next step. A lead not enrolled, or paused, is left
        alone: its resume plans it.
        """
        with self.db.tx() as conn:
            statuses = conn.execute(
                select(deliveries.c.status)
                .where(deliveries.c.lead_id == lead_id, deliveries.c.campaign_id == campaign_id)
                .with_for_update()
            ).scalars()
            if DeliveryStatus.SENDING in set(statuses):
                return  # in flight: the outcome will plan what comes next
            enrolled = conn.execute(
                select(enrollments.c.enrolled_at, enrollments.c.state).where(
                    enrollments.c.lead_id == lead_id, enrollments.c.campaign_id == campaign_id
                )
            ).first()
            if enrolled is None or enrolled.state == EnrollmentState.PAUSED:
                return
            planned = plan(from_db(enrolled.enrolled_at), _history(conn, lead_id, campaign_id))
            self.replace_queued(conn, lead_id, campaign_id, planned, now)

    def replace_queued(
        self,
        conn: Connection,
        lead_id: int,
        campaign_id: str,
        planned: PlannedDelivery | None,
        now: datetime,
    ) -> None:
        """Drop the lead's queued rows for other steps, then move or plan `planned`, in
        `conn`'s transaction."""
        queued = deliveries.c.status.in_(QUEUED_STATUSES)  # a reserved row is taken back too
        lead_rows = (deliveries.c.lead_id == lead_id, deliveries.c.campaign_id == campaign_id)
        stale = [*lead_rows, queued]
        if planned is not None:
            stale.append(deliveries.c.step_id != planned.step_id)
        conn.execute(deliveries.delete().where(*stale))
        if planned is None:
            return
        changed = conn.execute(
            update(deliveries)
            .where(*lead_rows, deliveries.c.step_id == planned.step_id, queued)
            .values(**UNCLAIMED, due_at=to_db(planned.due_at), updated_at=to_db(now))
        ).rowcount
        if not changed:
            self.insert_planned(conn, lead_id, campaign_id, planned, now)

    # -- reserve → start → settle ----------------------------------------------------------

    def reserve(
        self,
        campaign_id: str,
        due_before: datetime,
        worker: str,
        now: datetime,
        limit: int,
        *,
        with_clicks: bool = False,
    ) -> list[Claim]:
        """Take up to `limit` of the most overdue pending deliveries of active leads (due by
        `due_before`) out of the queue for one connection, in the order to send them.

        One transaction also reads their leads, enrollments and histories (and, `with_clicks`,
        the links they opened, for steps' conditions), so that sending needs no other read to
        render, to judge and to plan each lead's next step. Nothing is in doubt yet: a
        reserved row that is never started goes back to the queue when released or when its
        lease runs out. A paused series (`pause_series`) reserves nothing: the check is in
        this transaction, so no worker reserves past a pause once it is committed.
        """
        params = {
            "campaign": campaign_id,
            "due_before": to_db(due_before),
            "limit": limit,
            "claim_now": to_db(now),
            "claim_worker": worker,
        }
        with self.db.tx() as conn:
            if _series_paused(conn, self.db, campaign_id):
                return []  # the rows stay queued (`paused_since` says why)
            rows = sorted(conn.execute(RESERVE, params).all(), key=lambda r: (r.due_at, r.id))
            if not rows:
                return []
            ids = sorted({row.lead_id for row in rows})
            found = conn.execute(LEADS_AND_ENROLLMENTS, {"leads": ids, "campaign": campaign_id})
            people = {row["id"]: row for row in found.mappings()}
            histories: dict[int, History] = {i: [] for i in ids}
            past = conn.execute(HISTORIES, {"leads": ids, "campaign": campaign_id})
            for lead_id, step_id, status, at in past:
                histories[lead_id].append((step_id, status, from_db(at)))
            opened: dict[int, list[tuple[str, str]]] = {i: [] for i in ids}
            if with_clicks:
                for lead_id, step_id, url in conn.execute(
                    PEOPLES_CLICKS, {"leads": ids, "campaign": campaign_id}
                ):
                    opened[lead_id].append((step_id, url))
        return [
            Claim(
                row.id,
                row.lead_id,
                row.campaign_id,
                row.step_id,
                row.attempts + 1,
                from_db(row.due_at),
                worker,
                lead_from_row(people[row.lead_id]),  # the reservation only takes leads it may mail
                from_db_or_none(people[row.lead_id]["enrolled_at"]),
                tuple(histories[row.lead_id]),
                tuple(opened[row.lead_id]),
            )
            for row in rows
        ]

    def start(
        self, claim: Claim, now: datetime, after: Sent | None = None, variant: int = 0
    ) -> Start:
        """Put a reserved row in flight, committed before any SMTP traffic, with the subject
        it goes out with (`variant`), and record the connection's previous message (`after`)
        in the same transaction: one commit per message, and still one message in flight."""
        with self.db.tx() as conn:
            if after is not None:
                self._record_sent(conn, after)
            return self._start_in(conn, claim, now, variant)

    def _start_in(self, conn: Connection, claim: Claim, now: datetime, variant: int) -> Start:
        params = {
            "delivery": claim.delivery_id,
            "worker": claim.worker,
            "start_now": to_db(now),
            "start_variant": variant,
        }
        if self._start_sql.run(conn, params):
            return Start.GO
        return _not_ours(conn, claim, now)

    def start_capped(
        self, claim: Claim, now: datetime, cap: Cap, after: Sent | None = None, variant: int = 0
    ) -> Start | datetime:
        """`start` under a frequency cap: the lead's row is locked first, so two series or
        workers cannot both pass the count for one lead; a lead mailed `cap.most` times within
        the last `cap.per` is not mailed now, its row goes back to the queue until the time
        `cap.defer` gives (returned), no attempt spent. Used only when a cap is configured,
        so the send path without one keeps its single prepared statement."""
        with self.db.tx() as conn:
            if after is not None:
                self._record_sent(conn, after)
            conn.execute(LOCK_LEAD, {"lead": claim.lead_id})
            mailed = [
                from_db(at)
                for at in conn.execute(
                    RECENTLY_MAILED, {"lead": claim.lead_id, "since": to_db(now - cap.per)}
                ).scalars()
            ]
            if len(mailed) < cap.most:
                return self._start_in(conn, claim, now, variant)
            until = cap.defer(mailed)
            deferred = conn.execute(
                DEFER,
                {
                    "delivery": claim.delivery_id,
                    "worker": claim.worker,
                    "defer_to": to_db(until),
                    "defer_now": to_db(now),
                },
            ).rowcount
            return until if deferred else _not_ours(conn, claim, now)

    def settle_unsent(
        self,
        claim: Claim,
        now: datetime,
        after: Sent | None,
        outcome: DeliveryStatus,
        error: str,
        following: PlannedDelivery | None,
    ) -> Start:
        """End a reserved row that cannot be sent (its step was removed, or its message
        cannot be built) without ever putting it in flight: nothing went out, so even a
        crash right after leaves nothing in doubt. A failure counts as an attempt, a
        cancellation does not. The connection's previous message (`after`) is recorded
        in the same transaction, as `start` does."""
        with self.db.tx() as conn:
            if after is not None:
                self._record_sent(conn, after)
            ended = _settled(
                claim,
                now,
                status=outcome,
                last_error=error,
                attempts=deliveries.c.attempts + int(outcome == DeliveryStatus.FAILED),
                claimed_at=to_db(now),  # when it ended, as `start` records when it began
            )
            still_ours = (
                deliveries.c.status == DeliveryStatus.CLAIMED,
                deliveries.c.claimed_by == claim.worker,
            )
            changed = conn.execute(ended.where(*still_ours)).rowcount
            if not changed:
                return _not_ours(conn, claim, now)
            if following is not None:
                self.insert_planned(conn, claim.lead_id, claim.campaign_id, following, now)
            return Start.GO

    def release_reserved(self, claims: Sequence[Claim], now: datetime) -> None:
        """Put reserved rows that were never started back in the queue, as they were."""
        if not claims:
            return
        with self.db.tx() as conn:
            conn.execute(
                update(deliveries)
                .where(
                    deliveries.c.id.in_([claim.delivery_id for claim in claims]),
                    deliveries.c.status == DeliveryStatus.CLAIMED,
                    deliveries.c.claimed_by == claims[0].worker,
                )
                .values(**UNCLAIMED, updated_at=to_db(now))
            )

    def record_sent(self, sent: Sent) -> None:
        """Mark the delivery sent and plan the lead's next step, in one transaction."""
        with self.db.tx() as conn:
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
            self.insert_planned(
                conn, claim.lead_id, claim.campaign_id, sent.following, sent.sent_at
            )
        elif claim.step_id != CONFIRM_STEP:  # a confirmation ends nothing: the series waits
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
        outcome: DeliveryStatus = DeliveryStatus.FAILED,
    ) -> None:
        """The delivery's last word (`failed`, or `unknown` when it may have arrived), and the
        lead's next step planned in the same transaction: the series goes on."""
        with self.db.tx() as conn:
            conn.execute(_settled(claim, now, status=outcome, last_error=error, smtp_code=code))
            if following is not None:
                self.insert_planned(conn, claim.lead_id, claim.campaign_id, following, now)

    def release(self, claim: Claim, error: str, now: datetime) -> None:
        """Give a started claim back untouched (the whole account was refused, not this
        message)."""
        self._settle(claim, now, **UNCLAIMED, attempts=deliveries.c.attempts - 1, last_error=error)

    def _settle(self, claim: Claim, now: datetime, **values: Any) -> None:
        with self.db.tx() as conn:
            conn.execute(_settled(claim, now, **values))

    # -- pauses ----------------------------------------------------------------------------

    def pause_lead(
        self, email: str, campaign_id: str, now: datetime, actor: str
    ) -> LeadPause | None:
        """Keep an active lead in the series but send it nothing: its queued email is taken
        back (a worker that reserved it then finds nothing to start), and replans pass it by,
        in one transaction with the audit entry. None when no lead has the address; only an
        active lead in an active enrollment changes."""
        with self.db.tx() as conn:
            found = _lead_for_pause(conn, email, campaign_id)
            if found is None:
                return None
            lead, state = found
            result = LeadPause(lead.id, lead.email, lead.status, state)
            if state != EnrollmentState.ACTIVE or lead.status is not LeadStatus.ACTIVE:
                return result
            _set_enrollment(
                conn, lead.id, campaign_id, EnrollmentState.ACTIVE, EnrollmentState.PAUSED
            )
            taken = conn.execute(
                deliveries.delete().where(
                    deliveries.c.lead_id == lead.id,
                    deliveries.c.campaign_id == campaign_id,
                    deliveries.c.status.in_(QUEUED_STATUSES),
                )
            ).rowcount
            detail = f"series {campaign_id}: {taken} queued email(s) taken back"
            Audit.record(conn, actor, "pause", lead_target(lead.id), detail, now)
            return replace(result, changed=True, taken_back=taken)

    def resume_lead(
        self,
        email: str,
        campaign_id: str,
        plan: Callable[[Lead], Plan],
        now: datetime,
        actor: str,
    ) -> LeadPause | None:
        """Put a paused lead back in the series, its next step planned by `plan(lead)` from
        its history (so it waits its delay from the last email actually sent, and a long
        pause sends one email at the next run, never the missed ones at once), in one
        transaction with the audit entry. None when no lead has the address."""
        with self.db.tx() as conn:
            found = _lead_for_pause(conn, email, campaign_id)
            if found is None:
                return None
            lead, state = found
            result = LeadPause(lead.id, lead.email, lead.status, state)
            if state != EnrollmentState.PAUSED:
                return result
            _set_enrollment(
                conn, lead.id, campaign_id, EnrollmentState.PAUSED, EnrollmentState.ACTIVE
            )
            statuses = conn.execute(
                select(deliveries.c.status)
                .where(deliveries.c.lead_id == lead.id, deliveries.c.campaign_id == campaign_id)
                .with_for_update()
            ).scalars()
            planned = None
            in_flight = DeliveryStatus.SENDING in set(statuses)
            if not in_flight:
                enrolled = conn.execute(
                    select(enrollments.c.enrolled_at).where(
                        enrollments.c.lead_id == lead.id, enrollments.c.campaign_id == campaign_id
                    )
                ).scalar_one()
                history = _history(conn, lead.id, campaign_id)
                planned = plan(lead)(from_db(enrolled), history)
                self.replace_queued(conn, lead.id, campaign_id, planned, now)
            detail = f"series {campaign_id}: next " + (
                f"{planned.step_id} due {planned.due_at:%Y-%m-%d %H:%M}Z" if planned else "nothing"
            )
            Audit.record(conn, actor, "resume", lead_target(lead.id), detail, now)
            return replace(result, changed=True, planned=planned, in_flight=in_flight)

    def paused_leads(self, campaign_id: str) -> int:
        """How many leads are paused in the series."""
        with self.db.read() as conn:
            return conn.execute(
                select(func.count()).where(
                    enrollments.c.campaign_id == campaign_id,
                    enrollments.c.state == EnrollmentState.PAUSED,
                )
            ).scalar_one()

    def pause_series(self, campaign_id: str, now: datetime, actor: str) -> SeriesPause:
        """Stop every worker sending the series: from this commit no reservation takes its
        rows (`reserve` reads the pause under a lock this waits for), and rows reserved
        before it go back to the queue unsent, so their `start` finds nothing. Queued rows
        stay as they are. Pausing a paused series changes nothing."""
        key = series_pause_key(campaign_id)
        with self.db.tx() as conn:
            self._flag(conn, key, "", only_new=True)
            since = pause_since(
                conn.execute(SERIES_FLAG.with_for_update(), {"pause_key": key}).scalar()
            )
            if since is not None:
                return SeriesPause(since)
            self._flag(conn, key, now.astimezone(UTC).isoformat())
            taken = conn.execute(
                update(deliveries)
                .where(
                    deliveries.c.campaign_id == campaign_id,
                    deliveries.c.status == DeliveryStatus.CLAIMED,
                )
                .values(**UNCLAIMED, updated_at=to_db(now))
            ).rowcount
            queued = self._queued(conn, campaign_id)
            detail = f"{queued} queued email(s) wait; {taken} reserved put back unsent"
            Audit.record(conn, actor, "pause", f"series {campaign_id}", detail, now)
            return SeriesPause(now, True, taken, queued)

    def resume_series(self, campaign_id: str, now: datetime, actor: str) -> SeriesPause:
        """Let the series' queued rows go again, each at its planned time: an email overdue
        after a long pause goes at the next run, and the lead's next step still waits its
        full delay from it, so nothing bursts."""
        key = series_pause_key(campaign_id)
        with self.db.tx() as conn:
            was = pause_since(
                conn.execute(SERIES_FLAG.with_for_update(), {"pause_key": key}).scalar()
            )
            if was is None:
                return SeriesPause(None)
            self._flag(conn, key, "")
            queued = self._queued(conn, campaign_id)
            detail = f"paused since {was:%Y-%m-%d %H:%M}Z; {queued} queued email(s) go on"
            Audit.record(conn, actor, "resume", f"series {campaign_id}", detail, now)
            return SeriesPause(was, True, 0, queued)

    def _flag(self, conn: Connection, key: str, value: str, only_new: bool = False) -> None:
        insert = self.db.insert(meta).values(key=key, value=value)
        if only_new:
            conn.execute(insert.on_conflict_do_nothing())
        else:
            conn.execute(
                insert.on_conflict_do_update(index_elements=[meta.c.key], set_={"value": value})
            )

    @staticmethod
    def _queued(conn: Connection, campaign_id: str) -> int:
        return conn.execute(
            select(func.count()).where(
                deliveries.c.campaign_id == campaign_id,
                deliveries.c.status.in_(QUEUED_STATUSES),
            )
        ).scalar_one()

    # -- bounces by mistake ----------------------------------------------------------------

    def reactivate(self, lead_id: int, campaign_id: str, plan: Plan, now: datetime) -> bool:
        """A lead bounced by mistake is active again and back in the series; the delivery that
        bounced goes back to the queue with no attempt counted, and `plan` (given when the
        lead enrolled and its history without that delivery) says what is next and when.
        Only a bounced lead changes, so running it twice does nothing the second time. A lead
        whose confirmation email bounced never confirmed: it is `pending` again and that
        email goes back to the queue, nothing of the series."""
        bounced = (
            deliveries.c.lead_id == lead_id,
            deliveries.c.campaign_id == campaign_id,
            deliveries.c.status == DeliveryStatus.FAILED,
            deliveries.c.smtp_code >= 500,  # the bounce, not a message that failed to build
        )
        with self.db.tx() as conn:
            unconfirmed = conn.execute(
                select(deliveries.c.id).where(*bounced, deliveries.c.step_id == CONFIRM_STEP)
            ).first()
            back = LeadStatus.PENDING if unconfirmed else LeadStatus.ACTIVE
            reason = "reactivated: bounced by mistake"
            if not move_status(conn, lead_id, back, reason, now, only_from=[LeadStatus.BOUNCED]):
                return False
            lift_for_lead(conn, lead_id, LeadStatus.BOUNCED, reason, now)
            conn.execute(
                update(enrollments)
                .where(enrollments.c.lead_id == lead_id, enrollments.c.campaign_id == campaign_id)
                .values(state=EnrollmentState.ACTIVE)
            )
            conn.execute(
                update(deliveries)
                .where(*bounced)
                .values(**UNCLAIMED, attempts=0, updated_at=to_db(now))
            )
            if unconfirmed:
                return True  # the series starts when the lead confirms
            enrolled = conn.execute(
                select(enrollments.c.enrolled_at).where(
                    enrollments.c.lead_id == lead_id, enrollments.c.campaign_id == campaign_id
                )
            ).scalar()
            if enrolled is not None:
                planned = plan(from_db(enrolled), _history(conn, lead_id, campaign_id))
                self.replace_queued(conn, lead_id, campaign_id, planned, now)
            return True

    # -- leases and the queue's head -------------------------------------------------------

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

        with self.db.tx() as conn:
            conn.execute(  # reserved, never started: nothing was sent, back to the queue
                update(deliveries)
                .where(unlocked(deliveries.c.status == DeliveryStatus.CLAIMED))
                .values(**UNCLAIMED, updated_at=to_db(now))
            )
            stale = (
                deliveries.c.status == DeliveryStatus.SENDING,
                deliveries.c.claimed_at < cutoff,
            )
            rows = conn.execute(
                update(deliveries)
                .where(unlocked(*stale))
                .values(
                    status=DeliveryStatus.UNKNOWN,
                    updated_at=to_db(now),
                    last_error="claimed but never confirmed: the worker stopped mid-send",
                )
                .returning(deliveries.c.lead_id, deliveries.c.campaign_id)
            ).all()
        return [(r.lead_id, r.campaign_id) for r in rows]

    def next_due_at(self, campaign_id: str) -> datetime | None:
        """The earliest pending due time: the first entry of `ix_deliveries_due`, not a MIN()
        over every pending row (the join on active leads would defeat that shortcut)."""
        with self.db.read() as conn:
            value = conn.execute(
                select(deliveries.c.due_at)
                .join(leads, leads.c.id == deliveries.c.lead_id)
                .where(
                    deliveries.c.campaign_id == campaign_id,
                    deliveries.c.status == PENDING,
                    SENDABLE,
                    NOT_PAUSED,
                )
                .order_by(deliveries.c.due_at, deliveries.c.id)
                .limit(1)
            ).scalar()
        return from_db_or_none(value)
