"""PostgreSQL through the same store code as SQLite: every scenario here runs on both.

A throwaway cluster (tests/harness/postgres.py, one per session) gives each test a fresh database.
Nothing is mocked: leads come in through the CSV import, mail goes through the real Engine
and Dispatcher to an aiosmtpd server on loopback, and the multi-worker tests start four
`run.py send-due` processes at once against the same database.
"""

from __future__ import annotations

import csv
import re
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import bindparam, create_engine, insert, inspect, select, text, update
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.pool import NullPool

from campaign.config.schedule import load_schedule
from campaign.config.settings import SettingsError, SmtpSettings
from campaign.devtools.catcher import Catcher
from campaign.leads.intake import import_csv
from campaign.sending.runner import Engine
from campaign.store import Store
from campaign.store.prepared import Prepared
from campaign.store.queue import DUE
from campaign.store.schema import deliveries, leads, meta
from harness.cli import start_run_py
from harness.clock import ManualClock, iso
from harness.engine import build_engine
from harness.schedule import copy_shipped, edit_schedule, unthrottled
from harness.smtp import ControlledHandler

CAMPAIGN = "acupuncture-back-pain"
DAY0 = datetime(2026, 3, 2, 15, 30, tzinfo=UTC)  # a Monday, inside Chicago's 09:00–17:00
WEEK = timedelta(days=7)
FIRST, SECOND = "How acupuncture eases back pain", "Which kinds of back pain acupuncture can help"
WORKERS = 4
WORKER_TIMEOUT = 90.0


@dataclass
class Backend:
    """One database (SQLite file or PostgreSQL), its store and a schedule copy to send from."""

    kind: str
    url: str
    store: Store
    schedule_path: Path

    def query(self, sql: str, **params: Any) -> list[Any]:
        """Read straight from the database, not through the code under test."""
        with self.store.db.engine.connect() as conn:
            return list(conn.execute(text(sql), params).all())

    def statuses(self) -> dict[tuple[str, str], int]:
        rows = self.query(
            "SELECT step_id, status, count(*) FROM deliveries GROUP BY step_id, status"
        )
        return {(step, status): count for step, status, count in rows}

    def import_leads(self, rows: list[dict[str, str]], at: datetime) -> None:
        """Through the real CSV import: bulk inserts, attributes from the extra columns."""
        path = self.schedule_path.parent / "leads.csv"
        with path.open("w", newline="", encoding="utf-8") as out:
            writer = csv.DictWriter(out, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        report = import_csv(self.store, load_schedule(self.schedule_path).schedule, path, at)
        assert (report.imported, report.rejected, report.fatal) == (len(rows), [], None)

    def engine(self, port: int, at: datetime, connections: int = 1) -> Engine:
        return build_engine(
            self.schedule_path, self.store, ManualClock(at), port=port, connections=connections
        )


def people(count: int, prefix: str = "lead") -> list[dict[str, str]]:
    return [
        {
            "email": f"{prefix}{n:04d}@example.com",
            "first_name": f"Lead{n}",
            "timezone": "America/Chicago",
        }
        for n in range(count)
    ]


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.slow)])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    schedule_path = copy_shipped(tmp_path)
    edit_schedule(schedule_path, unthrottled)
    cluster = request.getfixturevalue("pg_cluster") if request.param == "postgresql" else None
    url = cluster.database() if cluster else f"sqlite:///{tmp_path / 'campaign.db'}"
    store = Store.open(url)
    try:
        yield Backend(request.param, url, store, schedule_path)
    finally:
        store.close()
        if cluster:
            cluster.drop(url)


# -- the series, end to end --------------------------------------------------------------


def test_series_goes_out_once_per_step_with_personal_data_intact(backend: Backend) -> None:
    backend.import_leads(
        [
            {
                "email": "zoe@example.com",
                "first_name": "Zoë",
                "timezone": "America/Chicago",
                "branch": "Zürich Süd",
            },
            *({**lead, "branch": "Main"} for lead in people(4)),
        ],
        DAY0 - timedelta(hours=1),
    )
    with Catcher() as catcher:
        first = backend.engine(catcher.port, DAY0).send_due()
        again = backend.engine(catcher.port, DAY0).send_due()
        assert (first.sent, again.sent) == (5, 0), (first, again)
        assert backend.statuses() == {("mechanisms", "sent"): 5, ("pain-types", "pending"): 5}
        nxt, sent = deliveries.alias(), deliveries.alias()
        with backend.store.db.engine.connect() as conn:
            gaps = conn.execute(
                select(nxt.c.due_at, sent.c.sent_at)
                .join(sent, (sent.c.lead_id == nxt.c.lead_id) & (sent.c.step_id == "mechanisms"))
                .where(nxt.c.step_id == "pain-types")
            ).all()
        assert len(gaps) == 5 and all(due - at >= WEEK for due, at in gaps), gaps
        backend.engine(catcher.port, DAY0 + WEEK + timedelta(hours=1)).send_due()
        received = Counter((c.recipients[0], str(c.message["Subject"])) for c in catcher.messages)
    assert set(received.values()) == {1}, received
    assert {subject for _, subject in received} == {FIRST, SECOND}
    assert len(received) == 10
    zoe = backend.store.leads.lead_by_email("zoe@example.com")
    assert zoe is not None and zoe.attributes == {"branch": "Zürich Süd"}
    assert zoe.first_name == "Zoë" and zoe.created_at.tzinfo is UTC
    zoe_mail = next(c.message for c in catcher.messages if c.recipients == [zoe.email])
    assert zoe_mail["To"].addresses[0].display_name == "Zoë"


def test_lead_who_left_gets_nothing(backend: Backend) -> None:
    backend.import_leads(people(2), DAY0 - timedelta(hours=1))
    gone = backend.store.leads.lead_by_email("lead0000@example.com")
    assert gone is not None
    assert backend.store.leads.set_lead_status(gone.id, "unsubscribed", "clicked the link", DAY0)
    with Catcher() as catcher:
        report = backend.engine(catcher.port, DAY0).send_due()
        assert [c.recipients for c in catcher.messages] == [["lead0001@example.com"]]
    assert report.sent == 1
    assert backend.query("SELECT status FROM deliveries WHERE lead_id = :lead", lead=gone.id) == [
        ("cancelled",)
    ]


def test_ids_beyond_32_bits(backend: Backend) -> None:
    big = 3_000_000_000
    if backend.kind == "postgresql":
        kinds = dict(
            backend.query(
                "SELECT table_name || '.' || column_name, data_type "
                "FROM information_schema.columns WHERE column_name IN ('id', 'lead_id') "
                "AND table_name IN ('leads', 'deliveries')"
            )
        )
        assert set(kinds.values()) == {"bigint"}, kinds
        backend.query(f"SELECT setval('leads_id_seq', {big})")
    else:  # SQLite hands out max(rowid) + 1: park a lead that is not in the series up there
        with backend.store.db.engine.begin() as conn:
            conn.execute(
                insert(leads).values(
                    id=big,
                    email="parked@example.com",
                    status="converted",
                    attributes={},
                    created_at=DAY0.replace(tzinfo=None),
                )
            )
    backend.import_leads(people(1), DAY0 - timedelta(hours=1))
    with Catcher() as catcher:
        report = backend.engine(catcher.port, DAY0).send_due()
        assert [c.recipients for c in catcher.messages] == [["lead0000@example.com"]]
    assert report.sent == 1
    lead = backend.store.leads.lead_by_email("lead0000@example.com")
    assert lead is not None and lead.id > big
    assert backend.query(
        "SELECT step_id, status FROM deliveries WHERE lead_id = :lead ORDER BY id", lead=lead.id
    ) == [("mechanisms", "sent"), ("pain-types", "pending")]


# -- finding due deliveries stays an index lookup ------------------------------------------


@pytest.mark.slow
def test_due_query_walks_the_partial_index(backend: Backend) -> None:
    """20 000 deliveries, 95 % already sent: the claim's search must use ix_deliveries_due."""
    stamp = DAY0.replace(tzinfo=None)
    with backend.store.db.engine.begin() as conn:
        conn.execute(
            insert(leads),
            [
                {
                    "id": n,
                    "email": f"bulk{n}@example.com",
                    "first_name": "",
                    "attributes": {},
                    "status": "active",
                    "created_at": stamp,
                }
                for n in range(1, 20_001)
            ],
        )
        conn.execute(
            insert(deliveries),
            [
                {
                    "lead_id": n,
                    "campaign_id": CAMPAIGN,
                    "step_id": "mechanisms",
                    "due_at": stamp + timedelta(minutes=n % 997),
                    "status": "pending" if n % 20 == 0 else "sent",
                    "attempts": 0,
                    "updated_at": stamp,
                }
                for n in range(1, 20_001)
            ],
        )
        conn.execute(text("ANALYZE"))
        compiled = DUE.compile(dialect=conn.dialect)
        values = compiled.construct_params({"campaign": CAMPAIGN, "due_before": stamp, "limit": 1})
        if backend.kind == "sqlite":
            plan = conn.exec_driver_sql(
                f"EXPLAIN QUERY PLAN {compiled}",
                tuple(values[name] for name in compiled.positiontup or ()),
            ).all()
        else:
            plan = conn.exec_driver_sql(f"EXPLAIN {compiled}", values).all()
    lines = "\n".join(str(row) for row in plan)
    assert "ix_deliveries_due" in lines, lines
    # The index holds the claim order itself: no sort of the pending rows per claim.
    assert "Sort" not in lines and "TEMP B-TREE" not in lines, lines


def test_an_older_due_index_is_rebuilt_when_the_store_opens(backend: Backend) -> None:
    """A database from before the partial index keeps the name with other columns; opening
    it with this engine rebuilds the index instead of trusting the name."""
    with backend.store.db.engine.begin() as conn:
        conn.execute(text("DROP INDEX ix_deliveries_due"))
        conn.execute(
            text("CREATE INDEX ix_deliveries_due ON deliveries (campaign_id, status, due_at)")
        )
    backend.store.close()
    reopened = Store.open(backend.url)
    try:
        with reopened.db.engine.connect() as conn:
            (found,) = [
                i
                for i in inspect(conn).get_indexes("deliveries")
                if i["name"] == "ix_deliveries_due"
            ]
    finally:
        reopened.close()
    assert found["column_names"] == ["campaign_id", "due_at", "id"]


# -- many workers, one queue ---------------------------------------------------------------


def run_workers(backend: Backend, port: int, count: int, **env: str) -> list[str]:
    """Start `count` `run.py send-due` processes at once; return each one's output."""
    argv = ["--schedule", str(backend.schedule_path), "send-due", "--now", iso(DAY0)]
    settings = {"CAMPAIGN_DB": backend.url, "CAMPAIGN_SMTP_PORT": str(port), **env}
    workers = [start_run_py(*argv, env=settings) for _ in range(count)]
    outputs = []
    try:
        for worker in workers:
            out, err = worker.communicate(timeout=WORKER_TIMEOUT)
            assert worker.returncode == 0 and "Traceback" not in err, f"{out}\n{err}"
            outputs.append(out)
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.wait(10)
    return outputs


@pytest.mark.slow
def test_four_worker_processes_mail_every_lead_exactly_once(backend: Backend) -> None:
    backend.import_leads(people(400), DAY0 - timedelta(hours=1))
    handler = ControlledHandler(rendezvous=WORKERS)
    with Catcher(handler) as catcher:
        try:
            outputs = run_workers(backend, catcher.port, WORKERS)
        finally:
            handler.met.set()
        received = Counter(c.recipients[0] for c in catcher.messages)
    assert handler.peers and len(handler.peers) >= WORKERS
    assert set(received.values()) == {1}, received.most_common(3)
    assert set(received) == {lead["email"] for lead in people(400)}
    per_worker = [int(re.search(r"sent (\d+)", out)[1]) for out in outputs]
    assert sum(per_worker) == 400 and min(per_worker) > 0, per_worker
    assert backend.statuses() == {("mechanisms", "sent"): 400, ("pain-types", "pending"): 400}
    claimers = backend.query(
        "SELECT count(DISTINCT claimed_by) FROM deliveries WHERE status = 'sent'"
    )
    assert claimers == [(WORKERS,)]


# -- several SMTP connections in one worker ------------------------------------------------


def test_connection_pool_sends_each_lead_once_over_parallel_connections(backend: Backend) -> None:
    backend.import_leads(people(120), DAY0 - timedelta(hours=1))
    handler = ControlledHandler(rendezvous=4)
    with Catcher(handler) as catcher:
        try:
            report = backend.engine(catcher.port, DAY0, connections=4).send_due()
        finally:
            handler.met.set()
        received = Counter(c.recipients[0] for c in catcher.messages)
    assert len(handler.peers) == 4, handler.peers  # four connections really worked at once
    assert report.sent == 120 and report.ok, report
    assert set(received.values()) == {1} and len(received) == 120


@pytest.mark.slow
def test_cli_worker_opens_the_connections_the_environment_asks_for(backend: Backend) -> None:
    backend.import_leads(people(60), DAY0 - timedelta(hours=1))
    handler = ControlledHandler(rendezvous=3)
    with Catcher(handler) as catcher:
        try:
            [output] = run_workers(backend, catcher.port, 1, CAMPAIGN_SMTP_CONNECTIONS="3")
        finally:
            handler.met.set()
        received = Counter(c.recipients[0] for c in catcher.messages)
    assert len(handler.peers) == 3, handler.peers
    assert "sent 60," in output
    assert set(received.values()) == {1} and len(received) == 60


@pytest.mark.parametrize("value", ["0", "11", "four"])
def test_connection_count_outside_the_range_is_a_setting_error(value: str) -> None:
    with pytest.raises(SettingsError, match="CAMPAIGN_SMTP_CONNECTIONS"):
        SmtpSettings.from_env({"CAMPAIGN_SMTP_CONNECTIONS": value})


def test_connection_pool_honours_max_messages(backend: Backend) -> None:
    backend.import_leads(people(30), DAY0 - timedelta(hours=1))
    with Catcher() as catcher:
        engine = backend.engine(catcher.port, DAY0, connections=3)
        first = engine.send_due(max_messages=10)
        assert (first.sent, len(catcher.messages)) == (10, 10)
        rest = engine.send_due()
        assert (rest.sent, len(catcher.messages)) == (20, 30)


def test_account_refusal_on_one_connection_stops_them_all(backend: Backend) -> None:
    from harness.smtp import Fault, FaultServer

    backend.import_leads(people(60), DAY0 - timedelta(hours=1))
    with FaultServer(Fault("MAIL", reply="550 5.7.1 account suspended")) as server:
        report = backend.engine(server.port, DAY0, connections=3).send_due()
        delivered = len(server.messages)
    assert report.stopped and "refused the account" in report.stopped, report
    assert report.sent == delivered < 30, report  # the others stopped after their message
    statuses = backend.statuses()
    assert statuses[("mechanisms", "pending")] == 60 - delivered, statuses
    assert backend.query("SELECT count(*) FROM deliveries WHERE status = 'sending'") == [(0,)]


# -- PostgreSQL specifics ------------------------------------------------------------------


@pytest.mark.slow
def test_concurrent_meta_writes_wait_for_each_other_instead_of_failing(pg_cluster: Any) -> None:
    """Two workers replanning after the same schedule edit both record the plan version."""
    url = pg_cluster.database()
    first, second = Store.open(url), Store.open(url)
    errors: list[BaseException] = []
    try:
        with first.db.tx() as conn:
            # Uncommitted: the key is locked until this transaction ends.
            conn.execute(insert(meta).values(key="plan:x", value="v1"))

            def write() -> None:
                try:
                    second.meta.set("plan:x", "v2")
                except BaseException as exc:  # reported by the assertion below
                    errors.append(exc)

            writer = threading.Thread(target=write)
            writer.start()
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and not _waiting_on_lock(first):
                time.sleep(0.01)
            assert _waiting_on_lock(first), "the second writer never waited on the first"
        writer.join(20)
        assert not writer.is_alive() and errors == []
        assert first.meta.get("plan:x") == "v2"
    finally:
        first.close()
        second.close()
        pg_cluster.drop(url)


def _waiting_on_lock(store: Store) -> bool:
    with store.db.engine.connect() as conn:
        return bool(
            conn.execute(
                text(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                    "AND datname = current_database()"
                )
            ).scalar()
        )


@pytest.mark.slow
def test_workers_starting_together_on_a_fresh_database_create_it_once(pg_cluster: Any) -> None:
    url = pg_cluster.database()
    errors: list[BaseException] = []
    opened: list[Store] = []

    def start() -> None:
        try:
            opened.append(Store.open(url))
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(WORKERS)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert errors == [] and len(opened) == WORKERS
        assert opened[0].meta.get("schema_version") is not None
    finally:
        for store in opened:
            store.close()
        pg_cluster.drop(url)


@pytest.mark.slow
def test_connection_dropped_while_idle_is_replaced_not_reported(
    pg_cluster: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server restart or idle timeout kills pooled connections; the next query still works."""
    monkeypatch.setattr(
        "campaign.store.database.IDLE_PING_AFTER", 0.0
    )  # every checkout counts as idle
    url = pg_cluster.database()
    store = Store.open(url)
    try:
        store.meta.set("k", "v")
        killer = create_engine(url, poolclass=NullPool)
        with killer.connect() as conn:  # end every connection the store's pool holds
            killed = conn.execute(
                text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
            ).scalar()
        killer.dispose()
        assert killed >= 1
        assert store.meta.get("k") == "v"
    finally:
        store.close()
        pg_cluster.drop(url)


# -- the sender's statements, run on the driver's cursor (campaign.prepared) ---------------

NEW_LEAD = ("email", "first_name", "attributes", "status", "created_at")


def test_a_driver_error_in_a_prepared_statement_is_sqlalchemys_own(backend: Backend) -> None:
    add = Prepared(insert(leads), backend.store.db.engine.dialect, NEW_LEAD)
    row = {
        "email": "zoe@example.com",
        "first_name": "Zoë",
        "attributes": "{}",
        "status": "active",
        "created_at": datetime(2026, 3, 2, 15, 0, 0, 123456),
    }
    with backend.store.db.tx() as conn:
        assert add.run(conn, row) == 1
    with pytest.raises(IntegrityError, match="zoe@example.com"), backend.store.db.tx() as conn:
        add.run(conn, row)
    found = backend.query("SELECT email, first_name, created_at FROM leads")
    assert [(email, name, str(at)) for email, name, at in found] == [
        ("zoe@example.com", "Zoë", "2026-03-02 15:00:00.123456")
    ]


@pytest.mark.slow
def test_a_connection_lost_mid_run_fails_one_transaction_then_is_replaced(
    pg_cluster: Any,
) -> None:
    """The sender holds one connection for its run. A server restart fails the transaction
    that meets it; the next one gets a new connection instead of failing the same way."""
    url = pg_cluster.database()
    store = Store.open(url)
    mark = Prepared(
        update(meta).where(meta.c.key == bindparam("key")).values(value=bindparam("value")),
        store.db.engine.dialect,
    )
    killer = create_engine(url, poolclass=NullPool)
    try:
        store.meta.set("k", "before")
        with store.db.holding():
            with store.db.tx() as conn:
                pid = conn.execute(text("SELECT pg_backend_pid()")).scalar()
            with killer.connect() as admin:
                admin.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
            with pytest.raises(DBAPIError), store.db.tx() as conn:
                mark.run(conn, {"key": "k", "value": "lost"})
            with store.db.tx() as conn:
                assert mark.run(conn, {"key": "k", "value": "after"}) == 1
        assert store.meta.get("k") == "after"
    finally:
        killer.dispose()
        store.close()
        pg_cluster.drop(url)
