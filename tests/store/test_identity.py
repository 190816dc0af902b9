"""One lead per mailbox: letter case does not make a second lead, a database written before
that rule is merged by the schema migration, and writers adding the same address at once on
PostgreSQL never fail on each other (over real HTTP and the real `run.py leads import`)."""

from __future__ import annotations

import csv
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from campaign.model import LeadStatus
from campaign.store import Store
from campaign.store.schema import SCHEMA_VERSION
from campaign.web.app import create_app
from harness.cli import start_run_py
from harness.clock import ManualClock
from harness.db import Db
from harness.engine import build_engine
from harness.mail import BASE_URL, signer
from harness.schedule import copy_shipped, edit_schedule, unthrottled
from harness.web import API_TOKEN, AUTH, ToLocalServer, serving

CAMPAIGN = "acupuncture-back-pain"
AT = datetime(2026, 3, 2, 16, 0)  # naive UTC, as stored
NOW = AT.replace(tzinfo=UTC)


# -- the migration of a database holding one address twice ---------------------------------

LEADS = [  # id, address, status: two pairs that differ only in case, and one lead alone
    (1, "ana@example.com", "active"),
    (2, "Ana@example.com", "active"),  # further in the series than lead 1: kept
    (3, "bob@example.com", "active"),
    (4, "BOB@example.com", "unsubscribed"),  # the person opted out: kept, and stays out
    (5, "cem@example.com", "active"),
]
DELIVERIES = [  # lead, step, status
    (1, "mechanisms", "pending"),
    (2, "mechanisms", "sent"),
    (2, "pain-types", "pending"),
    (3, "mechanisms", "pending"),
    (4, "mechanisms", "cancelled"),
    (5, "mechanisms", "pending"),
]


def as_version_1(db: Db) -> None:
    """A database as the engine left it before addresses were case-insensitive, holding the
    rows above: the schema without `email_key`, and the leads written straight in."""
    Store.open(db.url).close()
    db.run("DROP INDEX uq_leads_email_key")
    db.run("ALTER TABLE leads DROP COLUMN email_key")
    db.run("UPDATE meta SET value = '1' WHERE key = 'schema_version'")
    for lead_id, email, status in LEADS:
        db.run(
            "INSERT INTO leads (id, email, first_name, attributes, status, created_at) "
            "VALUES (:id, :email, '', '{}', :status, :at)",
            id=lead_id,
            email=email,
            status=status,
            at=AT,
        )
        db.run(
            "INSERT INTO enrollments (lead_id, campaign_id, enrolled_at, state) "
            "VALUES (:id, :campaign, :at, 'active')",
            id=lead_id,
            campaign=CAMPAIGN,
            at=AT,
        )
    for lead_id, step, status in DELIVERIES:
        db.run(
            "INSERT INTO deliveries (lead_id, campaign_id, step_id, due_at, status, attempts, "
            "updated_at) VALUES (:id, :campaign, :step, :at, :status, 0, :at)",
            id=lead_id,
            campaign=CAMPAIGN,
            step=step,
            status=status,
            at=AT,
        )
    db.run(
        "INSERT INTO clicks (lead_id, campaign_id, step_id, url, clicked_at) "
        "VALUES (1, :campaign, 'mechanisms', 'https://example.com/', :at)",
        campaign=CAMPAIGN,
        at=AT,
    )
    db.run(
        "INSERT INTO conversions (lead_id, campaign_id, step_id, source, converted_at) "
        "VALUES (1, :campaign, 'mechanisms', 'click', :at)",
        campaign=CAMPAIGN,
        at=AT,
    )


def test_the_migration_merges_leads_whose_addresses_differ_only_in_case(db: Db) -> None:
    as_version_1(db)
    store = Store.open(db.url)  # what every command does first
    try:
        assert store.meta.get("schema_version") == str(SCHEMA_VERSION)
        leads = {
            row[0]: tuple(row[1:]) for row in db.run("SELECT id, status, email_key FROM leads")
        }
        assert leads == {
            1: ("merged", None),
            2: ("active", "ana@example.com"),
            3: ("merged", None),
            4: ("unsubscribed", "bob@example.com"),
            5: ("active", "cem@example.com"),
        }
        queued = db.run("SELECT lead_id, step_id FROM deliveries WHERE status = 'pending'")
        assert sorted(queued) == [(2, "pain-types"), (5, "mechanisms")]
        assert db.run("SELECT lead_id FROM clicks") == [(2,)]
        assert db.run("SELECT lead_id FROM conversions") == [(2,)]
        assert db.run("SELECT state FROM enrollments WHERE lead_id IN (1, 3)") == [("exited",)] * 2

        # The merged rows' addresses find the kept leads, and a signup in any case adds none.
        ana, bob = (
            store.leads.lead_by_email("ANA@example.com"),
            store.leads.lead_by_email("bob@example.com"),
        )
        assert (ana and ana.id, bob and bob.id) == (2, 4)
        # An unsubscribe link in an email sent to the merged row acts on the kept lead.
        assert store.leads.set_lead_status(1, LeadStatus.UNSUBSCRIBED, "one-click", NOW)
        assert db.run("SELECT status FROM leads WHERE id = 2") == [("unsubscribed",)]
        again = Store.open(db.url).meta.get("schema_version")  # a second open: no change
        assert again == str(SCHEMA_VERSION)
    finally:
        store.close()


# -- PostgreSQL: many writers, one address --------------------------------------------------


@pytest.mark.slow
def test_concurrent_signups_and_imports_of_one_address_never_fail(
    pg_cluster: Any, tmp_path: Path
) -> None:
    """50 POST /leads of one address at once, then 10 more in other letter case, while two
    `leads import` runs add the same 300 addresses: one lead each, every request answered
    201 once and 200 after, both imports complete."""
    url = pg_cluster.database()
    schedule_path = copy_shipped(tmp_path)
    edit_schedule(schedule_path, unthrottled)
    store = Store.open(url)
    rows = [{"email": f"lead{n:03d}@example.com", "first_name": f"Lead {n}"} for n in range(300)]
    files = []
    for name, chunk in (("a.csv", rows), ("b.csv", rows[::-1])):
        path = tmp_path / name
        with path.open("w", newline="") as out:
            writer = csv.DictWriter(out, fieldnames=["email", "first_name"])
            writer.writeheader()
            writer.writerows(chunk)
        files.append(path)
    clock = ManualClock(NOW)
    engine = build_engine(schedule_path, store, clock)
    app = create_app(store, engine.renderer, signer(), API_TOKEN, clock)
    try:
        with (
            serving(app) as port,
            httpx.Client(base_url=BASE_URL, timeout=30, transport=ToLocalServer(port)) as client,
        ):
            imports = [
                start_run_py(
                    "--schedule",
                    str(schedule_path),
                    "leads",
                    "import",
                    str(path),
                    env={"CAMPAIGN_DB": url},
                )
                for path in files
            ]

            def signup(email: str) -> int | str:
                try:
                    return client.post("/leads", json={"email": email}, headers=AUTH).status_code
                except httpx.TransportError as exc:
                    return repr(exc)

            with ThreadPoolExecutor(max_workers=16) as pool:
                codes = list(pool.map(signup, ["zoe@example.com"] * 50))
                codes += list(pool.map(signup, ["Zoe@example.com", "ZOE@EXAMPLE.COM"] * 5))
            outputs = [process.communicate(timeout=60) for process in imports]
        assert Counter(codes) == {201: 1, 200: 59}, Counter(codes)
        for process, (out, err) in zip(imports, outputs, strict=True):
            assert process.returncode == 0, (out, err)
        imported = [int(out.split("imported ")[1].split(",")[0]) for out, _ in outputs]
        assert sum(imported) == 300, outputs
        counts = (
            store.db.engine.connect()
            .execute(
                text(
                    "SELECT (SELECT count(*) FROM leads), (SELECT count(*) FROM enrollments), "
                    "(SELECT count(*) FROM deliveries)"
                )
            )
            .one()
        )
        assert tuple(counts) == (301, 301, 301)
    finally:
        store.close()
        pg_cluster.drop(url)
