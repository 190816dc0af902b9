"""`Reads.variant_counts`, the subject test's numbers, on SQLite and PostgreSQL: per step and
variant the emails sent, their leads who clicked that email (people, once each), and those
who booked after it; rows written straight into the tables, so every case is known."""

from __future__ import annotations

from datetime import datetime, timedelta

from campaign.store import Store
from campaign.store.reads import VariantTally
from harness.db import Db

CAMPAIGN = "acupuncture-back-pain"
SENT = datetime(2026, 3, 2, 16, 0)  # naive UTC, as stored
HOUR = timedelta(hours=1)


def lead(db: Db, lead_id: int) -> None:
    email = f"lead{lead_id}@example.com"
    db.run(
        "INSERT INTO leads (id, email, email_key, first_name, attributes, status, created_at) "
        "VALUES (:id, :email, :email, '', '{}', 'active', :at)",
        id=lead_id,
        email=email,
        at=SENT - HOUR,
    )


def delivery(
    db: Db,
    lead_id: int,
    step: str,
    variant: int | None,
    status: str = "sent",
    sent_at: datetime | None = SENT,
    campaign: str = CAMPAIGN,
) -> None:
    db.run(
        "INSERT INTO deliveries (lead_id, campaign_id, step_id, due_at, status, attempts, "
        "updated_at, sent_at, variant) VALUES (:lead, :campaign, :step, :at, :status, 1, :at, "
        ":sent_at, :variant)",
        lead=lead_id,
        campaign=campaign,
        step=step,
        at=SENT,
        status=status,
        sent_at=sent_at if status == "sent" else None,
        variant=variant,
    )


def click(db: Db, lead_id: int, step: str, source: str = "person") -> None:
    db.run(
        "INSERT INTO clicks (lead_id, campaign_id, step_id, url, clicked_at, source) "
        "VALUES (:lead, :campaign, :step, 'https://clinic.example.com/about', :at, :source)",
        lead=lead_id,
        campaign=CAMPAIGN,
        step=step,
        at=SENT + HOUR,
        source=source,
    )


def conversion(db: Db, lead_id: int, step: str | None, source: str, at: datetime) -> None:
    db.run(
        "INSERT INTO conversions (lead_id, campaign_id, step_id, source, converted_at) "
        "VALUES (:lead, :campaign, :step, :source, :at)",
        lead=lead_id,
        campaign=CAMPAIGN,
        step=step,
        source=source,
        at=at,
    )


def test_variant_counts(db: Db) -> None:
    Store.open(db.url).close()
    for lead_id in range(1, 9):
        lead(db, lead_id)
    # A (variant 0) of mechanisms
    delivery(db, 1, "mechanisms", 0)
    click(db, 1, "mechanisms")  # clicked
    delivery(db, 4, "mechanisms", 0)
    conversion(db, 4, None, "form", SENT - HOUR)  # booked before the email: not after it
    delivery(db, 7, "mechanisms", 0)
    click(db, 7, "mechanisms")
    click(db, 7, "mechanisms")  # the same lead twice: one lead
    conversion(db, 7, "mechanisms", "click", SENT + HOUR)  # booked, backed by a person's click
    # B (variant 1) of mechanisms
    delivery(db, 2, "mechanisms", 1)
    click(db, 2, "mechanisms", source="scanner")  # a link scanner: neither clicked nor booked
    conversion(db, 2, "mechanisms", "click", SENT + HOUR)
    delivery(db, 3, "mechanisms", 1)
    delivery(db, 3, "pain-types", 0, sent_at=SENT + 3 * HOUR)
    click(db, 3, "pain-types")  # a click on another step's email
    conversion(db, 3, "pain-types", "form", SENT + 2 * HOUR)  # booked after B, before step 2
    # Not counted: not sent (never started, in doubt, failed), another series.
    delivery(db, 5, "mechanisms", None, status="pending")
    delivery(db, 6, "mechanisms", 1, status="unknown")
    delivery(db, 8, "mechanisms", 1, status="failed")
    delivery(db, 8, "mechanisms", 1, campaign="another-series")

    store = Store.open(db.url)
    try:
        counts = store.reads.variant_counts(CAMPAIGN)
    finally:
        store.close()
    assert counts == [
        VariantTally("mechanisms", 0, sent=3, clicked=2, booked=1),
        VariantTally("mechanisms", 1, sent=2, clicked=0, booked=1),
        VariantTally("pain-types", 0, sent=1, clicked=1, booked=0),
    ]
