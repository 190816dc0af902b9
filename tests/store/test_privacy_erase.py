"""An erasure in the store, on SQLite and PostgreSQL: one transaction that leaves the lead's
row (for counts) without its data, deletes its consents, cancels what was queued, and keeps
its suppression rows under a keyed hash; an address erased twice (signed up again between)
keeps one standing entry."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import text

from campaign.model import LeadStatus, NewLead, PlannedDelivery
from campaign.store import Store
from campaign.store.leads import Consent
from campaign.store.suppressions import hashed_key
from harness.db import Db

CAMPAIGN = "acupuncture-back-pain"
NOW = datetime(2026, 3, 2, 16, 0, tzinfo=UTC)
KEY = b"k" * 32
EMAIL = "Zq.Patient@example.com"


def add(store: Store, email: str, at: datetime) -> int:
    lead = NewLead(
        email, "Zephyrine", "Europe/Paris", {"plan": "gold"}, PlannedDelivery("mechanisms", at)
    )
    ((lead_id, created),) = store.leads.add_leads(
        [lead], CAMPAIGN, at, Consent("web form", "192.0.2.7", "UA", "v1")
    )
    assert created
    return lead_id


def rows(store: Store, sql: str) -> list[tuple]:
    with store.db.read() as conn:
        return [tuple(r) for r in conn.execute(text(sql))]


def test_erase_keeps_counts_and_a_hash(db: Db) -> None:
    store = Store.open(db.url)
    try:
        lead_id = add(store, EMAIL, NOW)
        store.leads.set_lead_status(lead_id, LeadStatus.UNSUBSCRIBED, f"{EMAIL} clicked", NOW)
        hashed = hashed_key(KEY, EMAIL)
        assert store.privacy.erase(EMAIL.lower(), hashed, NOW, "olga") is not None
        assert rows(
            store,
            "SELECT email, email_key, first_name, timezone, status FROM leads "
            f"WHERE id = {lead_id}",
        ) == [(f"erased-{lead_id}@erased.invalid", None, "", None, "unsubscribed")]
        # It had left: it keeps the status and time it left with, so reports still count it.
        assert rows(store, f"SELECT status_at FROM leads WHERE id = {lead_id}")[0][0] is not None
        assert rows(store, "SELECT count(*) FROM consents") == [(0,)]
        assert rows(store, "SELECT status FROM deliveries") == [("cancelled",)]
        assert rows(store, "SELECT email_key, reason, detail FROM suppressions") == [
            (hashed, "unsubscribed", f"erased-{lead_id}@erased.invalid clicked")
        ]
        assert store.suppressions.find(EMAIL) is None and store.suppressions.has_hashed()
        assert rows(store, "SELECT actor, action, target FROM audit_log") == [
            ("olga", "erase", f"lead {lead_id}")
        ]
        assert store.privacy.export(EMAIL) is None
        assert store.privacy.erase(EMAIL, hashed, NOW, "olga") is None

        later = NOW + timedelta(days=1)  # the person signs up again, then asks again
        assert store.suppressions.lift_hashed(hashed, "signed up again", later)
        again = add(store, EMAIL.lower(), later)
        assert store.privacy.export(EMAIL)["lead"]["id"] == again  # type: ignore[index]
        assert store.privacy.erase(EMAIL, hashed, later, "olga") is not None
        # Still in the series when erased: it leaves it as `erased`.
        assert rows(store, f"SELECT status FROM leads WHERE id = {again}") == [("erased",)]
        standing = rows(store, "SELECT reason FROM suppressions WHERE lifted_at IS NULL")
        assert standing == [("erased",)]
        assert set(store.suppressions.standing_hashed([hashed])) == {hashed}
    finally:
        store.close()
