"""GET /healthz and GET /metrics on the real web app over HTTP, in front of a campaign whose
emails went through real SMTP: the numbers a Prometheus scrape parses must be the rows in
the SQLite file and the messages the catcher got; the run record must follow `send_due`.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from campaign.config import settings
from campaign.config.settings import SettingsError
from campaign.devtools.catcher import free_port
from campaign.inbound.process import InboundProcessor
from campaign.model import DeliveryStatus
from campaign.store import Store
from campaign.web.app import create_app
from harness.clock import NO_HANG
from harness.db import read_rows
from harness.engine import Campaign, build_engine, enroll, open_campaign
from harness.inbound import ANA, BEN, DAY0, WEEK, fill, last_to, start
from harness.mail import signer, step_of
from harness.smtp import Fault, FaultServer
from harness.web import API_TOKEN, AUTH, open_web, serving, wait_listening

SERIES = "acupuncture-back-pain"
CARL = "carl@example.net"
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    """Every sample of a scrape, keyed by its name and labels."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    key = (name, frozenset(labels.items()))
    assert key in samples, f"no sample {name}{labels}; have {sorted(n for n, _ in samples)}"
    return samples[key]


@contextmanager
def app_client(campaign: Campaign, store: Store | None = None) -> Iterator[httpx.Client]:
    """The app as `run.py web` wires it (the series as last compiled for the endpoints, as
    on disk now for /healthz), over HTTP on loopback."""
    engine = campaign.engine()
    app = create_app(
        store or campaign.store,
        engine.serving_renderer,
        signer(),
        API_TOKEN,
        campaign.clock,
        current=engine.renderer,
    )
    with (
        serving(app) as port,
        httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=NO_HANG) as client,
    ):
        yield client


def scrape(client: httpx.Client) -> Samples:
    reply = client.get("/metrics", headers=AUTH)
    assert reply.status_code == 200, reply.text
    assert reply.headers["content-type"].startswith("text/plain; version=")
    return parse(reply.text)


def file_counts(campaign: Campaign) -> Counter[tuple[str, str]]:
    """(step, status) of every delivery, read from the SQLite file."""
    return Counter((row["step_id"], row["status"]) for row in campaign.deliveries())


@pytest.fixture
def sent(tmp_path: Path) -> Iterator[Campaign]:
    """Step 1 sent over SMTP to Ana and Ben; Ana's bounces back (a Postfix DSN); Carl's is
    refused at RCPT by another relay, so it fails and he bounces."""
    with open_campaign(tmp_path) as campaign:
        start(campaign)
        schedule = campaign.loaded().schedule
        processor = InboundProcessor.for_schedule(campaign.store, schedule, signer, campaign.clock)
        received = processor.process(fill("postfix-dsn.eml", last_to(campaign, ANA)))
        assert received.kind == "hard-bounce", received
        enroll(campaign.store, schedule, DAY0, CARL, "Carl", "America/Chicago")
        with FaultServer(Fault("RCPT", reply="550 5.1.1 no such user", recipient=CARL)) as relay:
            refusing = build_engine(
                campaign.schedule_path, campaign.store, campaign.clock, port=relay.port
            )
            report = refusing.send_due()
        assert report.failed == 1 and report.bounced == 1, report
        yield campaign


def test_metrics_are_the_rows_and_the_messages(sent: Campaign) -> None:
    campaign = sent
    with app_client(campaign) as client:
        samples = scrape(client)
        rows = file_counts(campaign)
        assert rows[("mechanisms", "sent")] == 2 and rows[("mechanisms", "failed")] == 1
        steps = [s.id for s in campaign.loaded().schedule.steps]
        for step in steps:
            for status in DeliveryStatus:
                got = value(samples, "campaign_deliveries", series=SERIES, step=step, status=status)
                assert got == rows[(step, status)], (step, status)
        caught = Counter(step_of(c.message) for c in campaign.catcher.messages)
        for step in steps:
            assert (
                value(samples, "campaign_deliveries", series=SERIES, step=step, status="sent")
                == caught[step]
            )

        assert value(samples, "campaign_bounces_total", series=SERIES, step="mechanisms") == 1
        assert value(samples, "campaign_complaints_total", series=SERIES, step="mechanisms") == 0
        assert value(samples, "campaign_replies_total", series=SERIES, step="mechanisms") == 0
        assert value(samples, "campaign_leads", status="active") == 1
        assert value(samples, "campaign_leads", status="bounced") == 2
        assert value(samples, "campaign_suppressed_addresses", reason="bounced") == 2
        assert value(samples, "campaign_database_up") == 1
        assert value(samples, "campaign_schedule_valid") == 1
        assert value(samples, "campaign_sender_breaker_open") == 0

        # Ben's step 2 waits; not due yet, so nothing has waited past its time.
        pending = campaign.pending()
        assert list(pending) == [(BEN, "pain-types")]
        assert value(samples, "campaign_queue_pending", series=SERIES) == 1
        assert value(samples, "campaign_queue_oldest_due_age_seconds", series=SERIES) == 0
        campaign.clock.now = pending[(BEN, "pain-types")] + timedelta(minutes=90)
        later = scrape(client)
        assert value(later, "campaign_queue_oldest_due_age_seconds", series=SERIES) == 5400

        # Two runs so far (the catcher's, the refusing relay's), by the engine's clock.
        assert value(later, "campaign_runs_total") == 2
        assert value(later, "campaign_run_seconds_total") >= 0
        last_age = value(later, "campaign_last_run_age_seconds")
        assert last_age == (campaign.clock.now - DAY0).total_seconds()
        assert value(later, "campaign_last_run_timestamp_seconds") == DAY0.timestamp()


def test_metrics_need_the_api_token(tmp_path: Path) -> None:
    with open_web(tmp_path) as web:
        assert web.client.get("/metrics", headers=AUTH).status_code == 200
        refused = web.client.get("/metrics")
        assert refused.status_code == 401
        assert refused.headers["www-authenticate"].startswith("Bearer")
        wrong = {"Authorization": "Bearer not-the-token-at-all-0000"}
        assert web.client.get("/metrics", headers=wrong).status_code == 401
        assert "campaign_deliveries" not in refused.text


def test_metrics_are_off_without_a_token(tmp_path: Path) -> None:
    with open_web(tmp_path, api_token=None) as web:
        reply = web.client.get("/metrics", headers=AUTH)
        assert reply.status_code == 503
        assert "CAMPAIGN_API_TOKEN" in reply.json()["error"]


def test_healthz_reports_runs_and_a_broken_edit(campaign: Campaign) -> None:
    campaign.clock.now = DAY0
    with app_client(campaign) as client:
        fresh = client.get("/healthz")  # no token: load balancers probe it
        assert fresh.status_code == 200, fresh.text
        body = fresh.json()
        assert body["status"] == "ok"
        assert body["database"] == {"ok": True}
        assert body["schedule"] == {"ok": True, "series": [SERIES]}
        assert body["runs"] == 0 and body["last_run"] is None
        assert body["breaker"] == {"state": "closed"}

        campaign.enroll(DAY0, (ANA, "Ana", "America/Chicago"))
        ticks = iter([100.0, 102.5])
        campaign.engine().timer = lambda: next(ticks)
        assert campaign.send_due(DAY0).sent == 1
        campaign.clock.now = DAY0 + timedelta(minutes=5)
        body = client.get("/healthz").json()
        assert body["runs"] == 1
        assert body["last_run"] == {
            "finished_at": DAY0.isoformat(),
            "age_seconds": 300.0,
            "duration_seconds": 2.5,
        }

        text = campaign.schedule_path.read_text(encoding="utf-8")
        campaign.schedule_path.write_text(
            text.replace("delay: 7d", "delay: 7x", 1), encoding="utf-8"
        )
        broken = client.get("/healthz")
        assert broken.status_code == 503
        body = broken.json()
        assert body["status"] == "unavailable"
        assert body["database"] == {"ok": True}
        assert body["schedule"]["ok"] is False
        assert "delay: '7x' is not a delay" in body["schedule"]["problem"]
        assert value(scrape(client), "campaign_schedule_valid") == 0

        campaign.schedule_path.write_text(text, encoding="utf-8")
        assert client.get("/healthz").status_code == 200


def test_healthz_and_metrics_with_the_database_gone(campaign: Campaign) -> None:
    """A PostgreSQL server that is not there (a closed loopback port): 503 naming why, and a
    scrape that still answers, saying the database is down."""
    gone = Store.open(
        f"postgresql+psycopg://campaign@127.0.0.1:{free_port()}/campaign", create=False
    )
    try:
        with app_client(campaign, gone) as client:
            reply = client.get("/healthz")
            assert reply.status_code == 503
            body = reply.json()
            assert body["status"] == "unavailable"
            assert body["database"]["ok"] is False
            assert "refused" in body["database"]["problem"].lower()
            assert body["schedule"]["ok"] is True
            assert "last_run" not in body and "breaker" not in body
            samples = scrape(client)
            assert value(samples, "campaign_database_up") == 0
            assert not any(name.startswith("campaign_deliveries") for name, _ in samples)
    finally:
        gone.close()


def test_an_open_breaker_shows_but_keeps_healthz_up(campaign: Campaign) -> None:
    campaign.enroll(DAY0, (ANA, "Ana", "America/Chicago"))
    campaign.clock.now = DAY0
    down = build_engine(campaign.schedule_path, campaign.store, campaign.clock, port=free_port())
    report = down.send_due()
    assert report.stopped and "cannot be reached" in report.stopped, report
    with app_client(campaign) as client:
        reply = client.get("/healthz")
        assert reply.status_code == 200
        breaker = reply.json()["breaker"]
        assert breaker["state"] == "open" and breaker["failures"] == 1
        assert datetime.fromisoformat(breaker["until"]) == DAY0 + timedelta(minutes=1)
        assert "reason" not in breaker  # an SMTP reply is for `status`, not an open endpoint
        samples = scrape(client)
        assert value(samples, "campaign_sender_breaker_open") == 1
        assert value(samples, "campaign_runs_total") == 1  # a stopped run still ran
        campaign.clock.now = DAY0 + timedelta(minutes=2)
        assert client.get("/healthz").json()["breaker"] == {"state": "closed"}
        assert value(scrape(client), "campaign_sender_breaker_open") == 0


def test_send_due_records_each_run_in_the_database(campaign: Campaign) -> None:
    campaign.enroll(DAY0, (ANA, "Ana", "America/Chicago"), (BEN, "Ben", "America/Chicago"))
    ticks = iter([10.0, 10.75, 20.0, 20.5])
    campaign.engine().timer = lambda: next(ticks)
    assert campaign.send_due(DAY0).sent == 2
    assert campaign.send_due(DAY0 + WEEK).sent == 2
    meta = {row["key"]: row["value"] for row in read_rows(campaign.db_path, "SELECT * FROM meta")}
    assert float(meta["runs-total"]) == 2
    assert float(meta["run-seconds-total"]) == 1.25
    last = json.loads(meta["last-run"])
    assert datetime.fromisoformat(last["finished_at"]) == DAY0 + WEEK
    assert last["seconds"] == 0.5

    campaign.schedule_path.write_text("steps: [", encoding="utf-8")  # nothing can be sent
    assert not campaign.send_due(DAY0 + 2 * WEEK).ok
    assert campaign.store.health.runs().count == 2  # a run that never started is no run


def test_runs_counted_by_concurrent_writers(campaign: Campaign) -> None:
    """Workers finishing runs at once: every run counts (the rows are locked while added)."""
    stores = [Store.open(f"sqlite:///{campaign.db_path}") for _ in range(4)]
    finished = datetime(2026, 3, 2, tzinfo=UTC)

    def record(store: Store) -> None:
        for _ in range(25):
            store.health.record_run(finished, 0.5)

    threads = [threading.Thread(target=record, args=(store,)) for store in stores]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=NO_HANG)
        assert not thread.is_alive()
    for store in stores:
        store.close()
    runs = campaign.store.health.runs()
    assert runs.count == 100 and runs.seconds == 50.0


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("127.0.0.1:9100", ("127.0.0.1", 9100)),
        ("[::1]:9100", ("::1", 9100)),
        ("prometheus-net.internal:9100", ("prometheus-net.internal", 9100)),
    ],
)
def test_metrics_address_setting(given: str, expected: tuple[str, int]) -> None:
    assert settings.metrics_address({"CAMPAIGN_METRICS_ADDRESS": given}) == expected


@pytest.mark.parametrize(
    ("given", "says"),
    [
        ("9100", "write it as HOST:PORT"),
        ("::1:9100", "write it as HOST:PORT"),
        ("127.0.0.1:http", "the port must be a whole number from 1 to 65535"),
        ("127.0.0.1:70000", "the port must be a whole number from 1 to 65535"),
        ("bad..host:9100", "is not a host name or IP address"),
    ],
)
def test_metrics_address_mistakes_are_named(given: str, says: str) -> None:
    with pytest.raises(SettingsError, match="CAMPAIGN_METRICS_ADDRESS") as raised:
        settings.check_environment(env={"CAMPAIGN_METRICS_ADDRESS": given})
    assert says in str(raised.value)


@pytest.mark.slow
def test_run_py_web_serves_metrics_apart_without_a_token(tmp_path: Path) -> None:
    with open_campaign(tmp_path) as campaign:
        campaign.clock.now = DAY0
        campaign.enroll(DAY0, (ANA, "Ana", "America/Chicago"))
        assert campaign.send_due(DAY0).sent == 1
        port, metrics_port = free_port(), free_port()
        env = {"CAMPAIGN_METRICS_ADDRESS": f"127.0.0.1:{metrics_port}"}  # and no API token
        server = campaign.popen("web", "--port", str(port), env=env)
        try:
            wait_listening(server, f"http://127.0.0.1:{port}/healthz")
            with httpx.Client(timeout=NO_HANG) as client:
                assert client.get(f"http://127.0.0.1:{port}/healthz").status_code == 200
                assert client.get(f"http://127.0.0.1:{port}/metrics").status_code == 503
                apart = client.get(f"http://127.0.0.1:{metrics_port}/metrics")
                assert apart.status_code == 200
                samples = parse(apart.text)
                sent = value(
                    samples, "campaign_deliveries", series=SERIES, step="mechanisms", status="sent"
                )
                assert sent == 1
                assert value(samples, "campaign_runs_total") == 1
        finally:
            server.terminate()
            _, err = server.communicate(timeout=NO_HANG)
        assert f"metrics on http://127.0.0.1:{metrics_port}/metrics" in err


@pytest.mark.slow
def test_run_py_web_refuses_a_metrics_address_it_cannot_take(tmp_path: Path) -> None:
    with open_campaign(tmp_path) as campaign:
        campaign.enroll(DAY0, (ANA, "Ana", "America/Chicago"))
        env = {"CAMPAIGN_METRICS_ADDRESS": "192.0.2.1:9100"}  # not an address of this machine
        result = campaign.cli("web", "--port", str(free_port()), env=env, expect=2)
        assert "CAMPAIGN_METRICS_ADDRESS=192.0.2.1:9100: cannot listen there" in result.stderr
