"""The benchmark's workloads, each run in a child process of its own.

`python bench/tasks.py TASK '{json arguments}'` runs one task and prints one JSON line.
A fresh process per measurement keeps runs from polluting each other: peak memory is the
child's own `ru_maxrss`, CPU is the child's own user + system time, and no cache (premailer,
SQLAlchemy, the renderer) carries over from one measurement to the next.
"""

from __future__ import annotations

import json
import os
import resource
import smtplib
import socket
import statistics
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))  # the harness: the web app on loopback

from sqlalchemy import text  # noqa: E402

from campaign.config.schedule import load_schedule  # noqa: E402
from campaign.config.settings import SmtpSettings  # noqa: E402
from campaign.leads.intake import import_csv  # noqa: E402
from campaign.model import Claim, NewLead, PlannedDelivery, Sent, Start  # noqa: E402
from campaign.planner import plan_fingerprint, plan_key  # noqa: E402
from campaign.rendering.links import LinkSigner  # noqa: E402
from campaign.rendering.renderer import LeadView, Renderer  # noqa: E402
from campaign.sending.dispatcher import RESERVATION  # noqa: E402
from campaign.sending.runner import Engine  # noqa: E402
from campaign.store import Store  # noqa: E402
from campaign.store.queue import DUE  # noqa: E402

T0 = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)  # every benchmark lead signed up (and is due) now
SIGNER = LinkSigner("https://clinic.example.com", "benchmark-only-link-signing-key-0123")
SEED_BATCH = 5000


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kilobytes


# -- seeding -------------------------------------------------------------------------------


def seed(db: str, schedule: str, leads: int) -> dict[str, Any]:
    """`leads` leads enrolled at T0 with step one due at T0 (bulk, through add_leads)."""
    loaded = load_schedule(Path(schedule))
    campaign, first = loaded.schedule.campaign.id, loaded.schedule.steps[0].id
    store = Store.open(db)
    store.meta.init(plan_key(loaded.schedule), plan_fingerprint(loaded.schedule))
    started = time.perf_counter()
    for start in range(0, leads, SEED_BATCH):
        store.leads.add_leads(
            [
                NewLead(
                    f"lead{n:07d}@example.com", f"Lead{n}", None, {}, PlannedDelivery(first, T0)
                )
                for n in range(start, min(start + SEED_BATCH, leads))
            ],
            campaign,
            T0,
        )
    store.close()
    return {"seconds": time.perf_counter() - started}


# -- sending -------------------------------------------------------------------------------


def _backend_cpu(store: Store) -> float:
    """CPU seconds used by this process's PostgreSQL backends (same machine, /proc); they
    are told apart from other workers' by the application name psycopg sends (PGAPPNAME)."""
    with store.db.engine.connect() as conn:
        pids = (
            conn.execute(
                text("SELECT pid FROM pg_stat_activity WHERE application_name = :name"),
                {"name": os.environ["PGAPPNAME"]},
            )
            .scalars()
            .all()
        )
    ticks = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


def send(db: str, schedule: str, port: int, connections: int) -> dict[str, Any]:
    """Everything due, through the real Engine (dispatcher, renderer, store, SMTP)."""
    os.environ["PGAPPNAME"] = f"bench-{os.getpid()}"
    store = Store.open(db)
    engine = Engine(
        Path(schedule),
        store,
        SmtpSettings(port=port, connections=connections),
        SIGNER,
        clock=lambda: T0,
        worker=f"bench:{os.getpid()}",
    )
    engine.renderer()  # compiling the steps is paid once per schedule version, not per run
    backend_before = 0.0 if store.db.is_sqlite else _backend_cpu(store)
    cpu, started, start = cpu_seconds(), time.perf_counter(), time.time()
    report = engine.send_due()
    wall, cpu, end = time.perf_counter() - started, cpu_seconds() - cpu, time.time()
    backend = 0.0 if store.db.is_sqlite else _backend_cpu(store) - backend_before
    store.close()
    if not report.ok:
        raise RuntimeError(report.stopped)
    return {
        "sent": report.sent,
        "failed": report.failed,
        "seconds": wall,
        "start": start,
        "end": end,
        "cpu": cpu,
        "db_cpu": backend,
        "peak_mb": peak_rss_mb(),
    }


def stages(db: str, schedule: str) -> dict[str, Any]:
    """CPU per email of two of the engine's stages, each timed alone: the database's part of
    sending (reservations, then per message one transaction that records the previous
    message and starts the next) and rendering (personal fields, signed links, MIME bytes)."""
    renderer = Renderer(load_schedule(Path(schedule)))
    renderer.compile_all()
    campaign, second = renderer.schedule.campaign.id, renderer.schedule.steps[1].id
    store = Store.open(db)
    claims: list[Claim] = []
    previous: Sent | None = None
    cpu = cpu_seconds()
    queue = store.queue
    while batch := queue.reserve(campaign, T0, "bench", T0, RESERVATION):
        for claim in batch:
            assert queue.start(claim, T0, previous) is Start.GO
            previous = Sent(claim, "<bench@example.com>", T0, PlannedDelivery(second, T0))
        claims += batch
    if previous is not None:
        queue.record_sent(previous)
    database = cpu_seconds() - cpu
    store.close()
    cpu = cpu_seconds()
    for claim in claims:
        lead = claim.lead
        renderer.render(
            claim.step_id,
            LeadView.of(lead),
            SIGNER.links(lead.id, campaign, claim.step_id),
            now=T0,
            message_id=f"<d{claim.delivery_id}@example.com>",
        )
    rendering = cpu_seconds() - cpu
    return {
        "count": len(claims),
        "database": database / len(claims),
        "rendering": rendering / len(claims),
    }


def _sample_message(schedule: str) -> tuple[Renderer, bytes]:
    renderer = Renderer(load_schedule(Path(schedule)))
    step = renderer.schedule.steps[0].id
    email = renderer.render(
        step,
        LeadView("lead0000000@example.com", "Lead0"),
        SIGNER.links(1, renderer.schedule.campaign.id, step),
        now=T0,
    )
    return renderer, email.message.data


def _in_threads(connections: int, count: int, work: Callable[[int], None]) -> None:
    shares = [count // connections + (n < count % connections) for n in range(connections)]
    threads = [threading.Thread(target=work, args=(share,)) for share in shares]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def raw(schedule: str, port: int, connections: int, count: int) -> dict[str, Any]:
    """The limit: one pre-built message, sent `count` times over reused connections."""
    renderer, data = _sample_message(schedule)
    per_connection = renderer.schedule.rate_limit.per_connection

    def work(share: int) -> None:
        smtp = smtplib.SMTP("127.0.0.1", port, local_hostname="localhost", timeout=30)
        for n in range(share):
            if n and n % per_connection == 0:
                smtp.quit()
                smtp = smtplib.SMTP("127.0.0.1", port, local_hostname="localhost", timeout=30)
            smtp.sendmail("care@example.com", [f"lead{n:07d}@example.com"], data)
        smtp.quit()

    cpu, started = cpu_seconds(), time.perf_counter()
    _in_threads(connections, count, work)
    return {
        "sent": count,
        "seconds": time.perf_counter() - started,
        "cpu": cpu_seconds() - cpu,
        "peak_mb": peak_rss_mb(),
        "bytes": len(data),
    }


def naive(schedule: str, port: int, count: int) -> dict[str, Any]:
    """What a straightforward implementation does for every single email."""
    import logging
    from email.headerregistry import Address
    from email.message import EmailMessage
    from email.policy import SMTP
    from email.utils import format_datetime, make_msgid

    import html2text
    import jinja2
    from premailer import Premailer

    logging.getLogger("cssutils").setLevel(logging.CRITICAL)
    loaded = load_schedule(Path(schedule))
    sched, step = loaded.schedule, loaded.schedule.steps[0]
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(loaded.templates_dir), autoescape=True)
    template = env.get_template(step.template)
    cpu, started = cpu_seconds(), time.perf_counter()
    for n in range(count):
        email = f"lead{n:07d}@example.com"
        html = template.render(
            lead={"first_name": f"Lead{n}", "email": email},
            links={
                "booking": str(sched.booking_url),
                "unsubscribe": SIGNER.unsubscribe_url(n, sched.campaign.id),
            },
            clinic=sched.clinic.model_dump(),
            campaign=sched.campaign.model_dump(),
            step={
                "id": step.id,
                "subject": step.subject,
                "preheader": step.preheader,
                "number": 1,
                "total": len(sched.steps),
            },
        )
        html = Premailer(
            html,
            keep_style_tags=False,
            disable_validation=True,
            allow_network=False,
            cssutils_logging_level=logging.CRITICAL,
        ).transform()
        message = EmailMessage(policy=SMTP)
        message["From"] = sched.sender.from_
        message["To"] = Address(display_name=f"Lead{n}", addr_spec=email)
        message["Subject"] = step.subject
        message["Date"] = format_datetime(T0)
        message["Message-ID"] = make_msgid(domain="example.com")
        message.set_content(html2text.html2text(html))
        message.add_alternative(html, subtype="html")
        with smtplib.SMTP("127.0.0.1", port, local_hostname="localhost", timeout=30) as smtp:
            smtp.send_message(message)
    return {
        "sent": count,
        "seconds": time.perf_counter() - started,
        "cpu": cpu_seconds() - cpu,
        "peak_mb": peak_rss_mb(),
    }


# -- a million leads -----------------------------------------------------------------------

# (table, values, minutes from T0) for n = 1..:leads: each lead's step one was sent some time
# in the last 30 days and its step two is pending over the next 30, the first `:due` minutes
# of which are already due at T0 (about a thousand deliveries).
_SEQUENCE = {
    "sqlite": (
        "WITH RECURSIVE seq(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM seq WHERE n < :leads) "
    ),
    "postgresql": "",
}
_FROM = {
    "sqlite": "FROM seq",
    "postgresql": "FROM generate_series(CAST(1 AS bigint), :leads) AS seq(n)",
}
_MINUTES = {
    "sqlite": "strftime('%Y-%m-%d %H:%M:%S', :t0, ({m}) || ' minutes') || '.000000'",
    "postgresql": "CAST(:t0 AS timestamp) + ({m}) * interval '1 minute'",
}
_ROWS = (
    (
        "leads (id, email, first_name, attributes, status, created_at)",
        "n, 'lead' || n || '@example.com', 'Lead', '{{}}', 'active', {t}",
        "-43200 - n % 1000",
    ),
    (
        "enrollments (lead_id, campaign_id, enrolled_at, state)",
        "n, :campaign, {t}, 'active'",
        "-43200 - n % 1000",
    ),
    (
        "deliveries (lead_id, campaign_id, step_id, due_at, status, attempts, sent_at, updated_at)",
        "n, :campaign, :first, {t}, 'sent', 1, {t}, {t}",
        "-(n * 7919 % 43200)",
    ),
    (
        "deliveries (lead_id, campaign_id, step_id, due_at, status, attempts, updated_at)",
        "n, :campaign, :second, {t}, 'pending', 0, {t}",
        "n * 7919 % 43200 - :due",
    ),
)


def _timed(run: Callable[[], object], times: int) -> tuple[float, float]:
    samples = []
    for _ in range(times):
        started = time.perf_counter()
        run()
        samples.append((time.perf_counter() - started) * 1000)
    samples.sort()
    return statistics.median(samples), samples[int(len(samples) * 0.95) - 1]


def due_query(db: str, schedule: str, leads: int, samples: int) -> dict[str, Any]:
    """Generate `leads` enrolled leads in SQL, then time the queries each message runs."""
    loaded = load_schedule(Path(schedule))
    sched = loaded.schedule
    store = Store.open(db)
    kind = "sqlite" if store.db.is_sqlite else "postgresql"
    params = {
        "leads": leads,
        "t0": T0.replace(tzinfo=None),
        "campaign": sched.campaign.id,
        "first": sched.steps[0].id,
        "second": sched.steps[1].id,
        # enough due rows for every timed reservation, with some to spare
        "due": -(-43200 * max(1000, 2 * RESERVATION * (samples + 1)) // leads),
    }
    started = time.perf_counter()
    with store.db.engine.begin() as conn:
        for table, values, minutes in _ROWS:
            source = values.format(t=_MINUTES[kind].format(m=minutes))
            conn.execute(
                text(f"{_SEQUENCE[kind]}INSERT INTO {table} SELECT {source} {_FROM[kind]}"), params
            )
        if kind == "postgresql":
            conn.execute(text("SELECT setval('leads_id_seq', :leads)"), params)
    with store.db.engine.connect() as conn:
        conn.execution_options(isolation_level="AUTOCOMMIT").execute(text("ANALYZE"))
    generated = time.perf_counter() - started
    due = {"campaign": sched.campaign.id, "due_before": T0.replace(tzinfo=None), "limit": 1}

    def select_due() -> None:
        with store.db.engine.connect() as conn:
            assert conn.execute(DUE, due).first() is not None

    def claim() -> None:
        """A connection's reservation, then the start of its first row, each committed."""
        reserved = store.queue.reserve(sched.campaign.id, T0, "bench", T0, RESERVATION)
        assert len(reserved) == RESERVATION and store.queue.start(reserved[0], T0) is Start.GO

    results = {"generate_s": generated, "rows": leads * 4}
    for name, run in (
        ("select", select_due),
        ("claim", claim),
        ("next_due", lambda: store.queue.next_due_at(sched.campaign.id)),
        ("sent_last_hour", lambda: store.reads.sent_since(T0 - timedelta(hours=1))),
    ):
        run()  # warm: connection, statement cache
        results[name] = _timed(run, samples)
    with store.db.engine.connect() as conn:
        results["due_now"] = conn.execute(
            text("SELECT count(*) FROM deliveries WHERE status = 'pending' AND due_at <= :t"),
            {"t": T0.replace(tzinfo=None)},
        ).scalar()
    store.close()
    return results


# -- CSV import ----------------------------------------------------------------------------


def import_file(db: str, schedule: str, path: str) -> dict[str, Any]:
    loaded = load_schedule(Path(schedule))
    store = Store.open(db)
    started = time.perf_counter()
    report = import_csv(store, loaded.schedule, Path(path), T0)
    seconds = time.perf_counter() - started
    store.close()
    return {
        "imported": report.imported,
        "rejected": len(report.rejected),
        "seconds": seconds,
        "peak_mb": peak_rss_mb(),
    }


# -- mail that comes back ------------------------------------------------------------------

DSN = """From: MAILER-DAEMON@mx.example.net (Mail Delivery System)
To: {sender}
Subject: Undelivered Mail Returned to Sender
Message-ID: <dsn-{n}@mx.example.net>
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="b{n}"

--b{n}
Content-Type: text/plain

I'm sorry to have to inform you that your message could not be delivered.

--b{n}
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.example.net

Final-Recipient: rfc822; {email}
Action: failed
Status: 5.1.1
Diagnostic-Code: smtp; 550 5.1.1 <{email}>: Recipient address rejected

--b{n}
Content-Type: text/rfc822-headers

Message-ID: {message_id}
To: {email}
Subject: How acupuncture eases back pain

--b{n}--
"""


def _sent(store: Store) -> list[tuple[str, str]]:
    """(address, Message-ID) of every email sent: what a bounce or an event refers to."""
    with store.db.engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT l.email, d.message_id FROM deliveries d JOIN leads l ON l.id = d.lead_id"
                " WHERE d.status = 'sent' ORDER BY d.id"
            )
        )
        return [(row[0], row[1]) for row in rows]


def inbound(db: str, schedule: str, port: int, count: int) -> dict[str, Any]:
    """`2 * count` leads sent step 1; a hard-bounce DSN about each of the first `count`
    through the one inbound processor, and a SendGrid bounce event about each of the others
    posted over HTTP on loopback to the real web app (uvicorn in a thread of this process):
    per second, and CPU each."""
    import httpx

    from campaign.config.settings import webhook_settings
    from campaign.inbound.process import InboundProcessor
    from campaign.web.app import create_app
    from campaign.webhooks import Webhooks
    from harness.web import serving

    seed(db, schedule, 2 * count)
    store = Store.open(db)
    engine = Engine(Path(schedule), store, SmtpSettings(port=port), SIGNER, clock=lambda: T0)
    assert engine.send_due().sent == 2 * count
    sent = _sent(store)
    by_mail, by_hook = sent[:count], sent[count:]
    processor = InboundProcessor(store, engine.renderer().schedule, None, lambda: T0)
    dsns = [
        DSN.format(n=n, sender="care@example.com", email=email, message_id=mid).encode()
        for n, (email, mid) in enumerate(by_mail)
    ]
    cpu, started = cpu_seconds(), time.perf_counter()
    for raw in dsns:
        processor.process(raw)
    mail_s, mail_cpu = time.perf_counter() - started, cpu_seconds() - cpu

    secret = "benchmark-only-webhook-secret"
    hooks = Webhooks(webhook_settings({"CAMPAIGN_WEBHOOK_SECRET": secret}))
    app = create_app(store, engine.renderer, SIGNER, None, lambda: T0, hooks)
    events = [
        [
            {
                "email": email,
                "event": "bounce",
                "type": "bounce",
                "status": "5.1.1",
                "reason": "550 5.1.1 user unknown",
                "smtp-id": mid,
                "sg_event_id": f"ev{n}",
                "timestamp": int(T0.timestamp()),
            }
        ]
        for n, (email, mid) in enumerate(by_hook)
    ]
    # Like a provider's sender, the client writes at once (Nagle's algorithm off): otherwise
    # a body written after its headers waits for the server's delayed acknowledgement.
    nodelay = httpx.HTTPTransport(socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)])
    with (
        serving(app) as web_port,
        httpx.Client(auth=("webhook", secret), transport=nodelay) as client,
    ):
        url = f"http://127.0.0.1:{web_port}/webhooks/sendgrid"
        cpu, started = cpu_seconds(), time.perf_counter()
        for body in events:
            answer = client.post(url, json=body)
            assert answer.status_code == 200 and answer.json()["processed"] == 1, answer.text
        hook_s, hook_cpu = time.perf_counter() - started, cpu_seconds() - cpu
    bounced = store.reads.lead_counts().get("bounced", 0)
    store.close()
    assert bounced == 2 * count, bounced
    return {
        "messages": count,
        "mail_seconds": mail_s,
        "mail_cpu": mail_cpu,
        "hook_seconds": hook_s,
        "hook_cpu": hook_cpu,
    }


TASKS: dict[str, Callable[..., dict[str, Any]]] = {
    "seed": seed,
    "send": send,
    "stages": stages,
    "raw": raw,
    "naive": naive,
    "due_query": due_query,
    "import": import_file,
    "inbound": inbound,
}

if __name__ == "__main__":
    print(json.dumps(TASKS[sys.argv[1]](**json.loads(sys.argv[2]))), flush=True)
