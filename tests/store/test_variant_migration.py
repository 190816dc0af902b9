"""Schema version 4: every delivery records which subject it went out with. A version-3
database gains the column on first open; the emails it had sent, or left in doubt, went out
with their step's one subject (variant 0); rows never started keep none."""

from __future__ import annotations

from datetime import datetime

from campaign.store import Store
from campaign.store.schema import SCHEMA_VERSION
from harness.db import Db

AT = datetime(2026, 3, 2, 16, 0)  # naive UTC, as stored
ROWS = [  # step, status
    ("mechanisms", "sent"),
    ("pain-types", "unknown"),
    ("process", "pending"),
    ("faqs", "failed"),
]


def as_version_3(db: Db) -> None:
    Store.open(db.url).close()
    db.run("ALTER TABLE deliveries DROP COLUMN variant")
    db.run("UPDATE meta SET value = '3' WHERE key = 'schema_version'")
    db.run(
        "INSERT INTO leads (id, email, email_key, first_name, attributes, status, created_at) "
        "VALUES (1, 'ann@example.com', 'ann@example.com', 'Ann', '{}', 'active', :at)",
        at=AT,
    )
    for step, status in ROWS:
        db.run(
            "INSERT INTO deliveries (lead_id, campaign_id, step_id, due_at, status, attempts, "
            "updated_at) VALUES (1, 'acupuncture-back-pain', :step, :at, :status, 1, :at)",
            step=step,
            status=status,
            at=AT,
        )


def test_the_migration_from_version_3_records_the_one_subject_sent(db: Db) -> None:
    as_version_3(db)
    Store.open(db.url).close()  # what every command does first
    assert db.run("SELECT value FROM meta WHERE key = 'schema_version'") == [(str(SCHEMA_VERSION),)]
    assert db.run("SELECT step_id, variant FROM deliveries ORDER BY id") == [
        ("mechanisms", 0),
        ("pain-types", 0),
        ("process", None),
        ("faqs", None),
    ]
    Store.open(db.url).close()  # a second open changes nothing
    assert len(db.run("SELECT variant FROM deliveries")) == len(ROWS)
