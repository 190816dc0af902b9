"""The suppression list in the store: filled from a version-2 database by the migration,
written with every status change that leaves for good, lifted with a reason, and the sender's
last look, which cancels a delivery to a suppressed address instead of sending it."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from campaign.model import LeadStatus, NewLead
from campaign.store import Store
from campaign.store.schema import SCHEMA_VERSION
from harness.db import Db
from harness.engine import Campaign, open_campaign

CAMPAIGN = "acupuncture-back-pain"
AT = datetime(2026, 3, 2, 16, 0)  # naive UTC, as stored
NOW = AT.replace(tzinfo=UTC)


LEADS = [  # id, address, status, why
    (1, "Ana@example.com", "bounced", "550 5.1.1 no such mailbox"),
    (2, "cem@example.com", "complained", "complaint: abuse report"),
    (3, "uma@example.com", "unsubscribed", "one-click unsubscribe"),
    (4, "ben@example.com", "active", None),
    (5, "cat@example.com", "converted", "converted (click)"),
]


def as_version_2(db: Db) -> None:
    """A database as the engine left it at schema version 2: no suppression list, clicks
    without a source, and the leads above written straight in, with one click."""
    Store.open(db.url).close()
    db.run("DROP TABLE suppressions")
    db.run("DROP INDEX ix_clicks_email")
    db.run("ALTER TABLE clicks DROP COLUMN source_reason")
    db.run("ALTER TABLE clicks DROP COLUMN source")
    db.run("UPDATE meta SET value = '2' WHERE key = 'schema_version'")
    for lead_id, email, status, why in LEADS:
        db.run(
            "INSERT INTO leads (id, email, email_key, first_name, attributes, status, "
            "status_reason, status_at, created_at) "
            "VALUES (:id, :email, :key, '', '{}', :status, :why, :at, :created)",
            id=lead_id,
            email=email,
            key=email.lower(),
            status=status,
            why=why,
            at=AT + timedelta(days=lead_id),
            created=AT,
        )
    db.run(
        "INSERT INTO clicks (lead_id, campaign_id, step_id, url, clicked_at) "
        "VALUES (5, :campaign, 'mechanisms', 'https://book.example.com/', :at)",
        campaign=CAMPAIGN,
        at=AT,
    )


def test_the_migration_from_version_2_suppresses_who_left_for_good(db: Db) -> None:
    as_version_2(db)
    store = Store.open(db.url)  # what every command does first
    try:
        assert store.meta.get("schema_version") == str(SCHEMA_VERSION)
        listed = {s.email: s for s in store.suppressions.listing()}
        assert sorted(listed) == ["Ana@example.com", "cem@example.com", "uma@example.com"]
        ana = listed["Ana@example.com"]
        assert (ana.reason, ana.detail, ana.lifted_at) == (
            "bounced",
            "550 5.1.1 no such mailbox",
            None,
        )
        assert ana.created_at == NOW + timedelta(days=1), "from when the lead's status changed"
        assert store.suppressions.counts() == {"bounced": 1, "complained": 1, "unsubscribed": 1}
        assert store.suppressions.find("ANA@EXAMPLE.COM") == ana, "any letter case"
        assert store.suppressions.find("ben@example.com") is None
        assert db.run("SELECT source, source_reason FROM clicks") == [("person", None)]
    finally:
        store.close()
    again = Store.open(db.url)  # a second open changes nothing
    try:
        assert len(again.suppressions.listing()) == 3
    finally:
        again.close()


def test_status_changes_suppress_once_and_lifting_is_recorded(tmp_path: Path) -> None:
    store = Store.open(f"sqlite:///{tmp_path / 'campaign.db'}")
    try:
        leads = store.leads
        # No series needed for the store's own calls: the leads are added unplanned.
        (ana, _), (ben, _) = leads.add_leads(
            [NewLead(e, "", None, {}, None) for e in ("ana@example.com", "ben@example.com")],
            CAMPAIGN,
            NOW,
        )
        assert leads.set_lead_status(ana, LeadStatus.UNSUBSCRIBED, "one click", NOW)
        assert leads.set_lead_status(ana, LeadStatus.COMPLAINED, "abuse report", NOW)
        assert leads.set_lead_status(ben, LeadStatus.CONVERTED, "booked", NOW)
        (only,) = store.suppressions.listing()
        assert (only.email, only.reason, only.detail) == (
            "ana@example.com",
            "unsubscribed",
            "one click",
        ), "the first reason stands; a booking suppresses nothing"

        later = NOW + timedelta(days=3)
        lifted = store.suppressions.lift(
            "Ana@Example.com", "asked by phone to get them again", later
        )
        assert lifted is not None and lifted.reason == "unsubscribed"
        assert store.suppressions.listing() == []
        (record,) = store.suppressions.listing(lifted=True)
        assert (record.lifted_at, record.lifted_reason) == (
            later,
            "asked by phone to get them again",
        )
        assert store.suppressions.lift("ana@example.com", "again", later) is None
        lead = leads.lead(ana)
        assert lead is not None and lead.status == "complained", "its status stays"

        # A second suppression after a lift is a new row; the lifted one stays as history.
        leads.set_lead_status(ana, LeadStatus.ACTIVE, "test", later)
        leads.set_lead_status(ana, LeadStatus.BOUNCED, "550", later)
        assert [s.reason for s in store.suppressions.listing(lifted=True)] == [
            "unsubscribed",
            "bounced",
        ]
    finally:
        store.close()


@pytest.fixture
def campaign(tmp_path: Path) -> Iterator[Campaign]:
    with open_campaign(tmp_path) as campaign:
        yield campaign


def test_the_last_look_cancels_a_delivery_to_a_suppressed_address(campaign: Campaign) -> None:
    """However a suppressed address came to have a delivery queued (here the lead's status is
    written back to active behind the engine's back), the sender does not mail it."""
    day0 = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)  # 09:00 in Chicago: step 1 at once
    ana, _ben = campaign.enroll(
        day0,
        ("ana@example.com", "Ana", "America/Chicago"),
        ("ben@example.org", "Ben", "America/Chicago"),
    )
    campaign.store.leads.set_lead_status(ana, LeadStatus.COMPLAINED, "abuse report", day0)
    db = Db(f"sqlite:///{campaign.db_path}", campaign.db_path.parent)
    db.run("UPDATE leads SET status = 'active' WHERE id = :id", id=ana)
    db.run("UPDATE deliveries SET status = 'pending' WHERE lead_id = :id", id=ana)

    report = campaign.send_due(day0)
    assert report.ok and (report.sent, report.cancelled) == (1, 1), report
    assert [c.recipients for c in campaign.catcher.messages] == [["ben@example.org"]]
    (row,) = [r for r in campaign.deliveries() if r["email"] == "ana@example.com"]
    assert (row["status"], row["last_error"]) == ("cancelled", "address suppressed: complained")
    assert campaign.send_due(day0 + timedelta(days=8)).sent == 1, "Ben's step 2 only"
