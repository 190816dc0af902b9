"""A campaign for the reliability and marketer-tool tests: a real store, the real engine and a
clock the test moves, pointed at whatever SMTP server the test starts.

`Rig` wires a copy of the shipped schedule and a SQLite file in the test's folder to one engine
per SMTP port. Rows are read back with plain queries so a test sees exactly what an
operator's `status` would.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from sqlalchemy import select

from campaign.config.schedule import load_schedule
from campaign.model import LeadStatus
from campaign.sending.dispatcher import RunReport
from campaign.sending.runner import Engine
from campaign.store import Store
from campaign.store.schema import deliveries, leads
from harness.cli import run_py, start_run_py
from harness.clock import ManualClock, utc
from harness.engine import build_engine, enroll
from harness.smtp import Fault, FaultServer


@dataclass
class Rig:
    """One campaign on a SQLite file, sent by the real engine at a clock the test controls."""

    schedule_path: Path
    db_path: Path
    clock: ManualClock = field(default_factory=ManualClock)
    timeout: float = 2.0
    user: str | None = None
    password: str | None = None
    connections: int = 1
    store: Store = field(init=False)

    def __post_init__(self) -> None:
        self.store = Store.open(self.url)
        self.schedule = load_schedule(self.schedule_path).schedule
        self._engines: dict[int, Engine] = {}

    @property
    def url(self) -> str:
        return f"sqlite:///{self.db_path}"

    def add(self, *emails: str, name: str = "", zone: str | None = None, **attrs: str) -> list[int]:
        """Leads signed up now; an address already known keeps its id."""
        return [
            enroll(self.store, self.schedule, self.clock.now, email, name, zone, **attrs)[0]
            for email in emails
        ]

    def engine(self, port: int) -> Engine:
        """One engine per port, kept across runs like the long-running scheduler keeps it."""
        if port not in self._engines:
            self._engines[port] = build_engine(
                self.schedule_path,
                self.store,
                self.clock,
                port=port,
                timeout=self.timeout,
                user=self.user,
                password=self.password,
                connections=self.connections,
            )
        return self._engines[port]

    def run(self, port: int, max_messages: int | None = None) -> RunReport:
        return self.engine(port).send_due(max_messages)

    def deliver(self, at: datetime, refuse: str | None = None) -> int:
        """Everything due at `at`, over real SMTP to a fresh server; how many were sent.

        `refuse`: an address the server answers 550 for (a hard bounce).
        """
        self.clock.now = at
        faults = [Fault("RCPT", "550 5.1.1 no such mailbox", recipient=refuse, times=None)]
        with FaultServer(*faults if refuse else ()) as server:
            report = self.run(server.port)
            assert report.ok, report.stopped
            assert len(server.messages) == report.sent
        return report.sent

    def row(self, email: str, step: str = "mechanisms") -> dict[str, Any]:
        with self.store.db.engine.connect() as conn:
            found = (
                conn.execute(
                    select(deliveries)
                    .join(leads, leads.c.id == deliveries.c.lead_id)
                    .where(leads.c.email == email, deliveries.c.step_id == step)
                )
                .mappings()
                .one()
            )
        row = dict(found)
        row["due_at"] = row["due_at"].replace(tzinfo=UTC)
        return row

    def rows(self, email: str) -> list[dict[str, Any]]:
        with self.store.db.engine.connect() as conn:
            found = (
                conn.execute(
                    select(deliveries)
                    .join(leads, leads.c.id == deliveries.c.lead_id)
                    .where(leads.c.email == email)
                    .order_by(deliveries.c.id)
                )
                .mappings()
                .all()
            )
        return [dict(r) for r in found]

    def lead_status(self, email: str) -> str:
        lead = self.store.leads.lead_by_email(email)
        assert lead is not None, email
        return lead.status

    def snapshot(self) -> tuple[list[tuple], list[tuple]]:
        """Every lead and delivery row, to prove an operation changed nothing."""
        with self.store.db.engine.connect() as conn:
            return (
                [tuple(r) for r in conn.execute(select(leads).order_by(leads.c.id))],
                [tuple(r) for r in conn.execute(select(deliveries).order_by(deliveries.c.id))],
            )

    def send_due_args(self, at: datetime | None = None, db: str | None = None) -> list[str]:
        """The arguments of the real `run.py send-due` on this rig's schedule and database."""
        moment = (at or self.clock.now).isoformat()
        return [
            "--schedule",
            str(self.schedule_path),
            "--db",
            db or self.url,
            "send-due",
            "--now",
            moment,
        ]

    def send_due(self, port: int, db: str | None = None, **env: str) -> subprocess.CompletedProcess:
        """Run the real `send-due` to completion against an SMTP server on `port`."""
        return run_py(*self.send_due_args(db=db), env={"CAMPAIGN_SMTP_PORT": str(port), **env})

    def start_send_due(self, port: int, at: datetime, output: IO[Any]) -> subprocess.Popen:
        """Start the real `send-due` at `at` against `port`, both its streams into `output`."""
        return start_run_py(
            *self.send_due_args(at), env={"CAMPAIGN_SMTP_PORT": str(port)}, output=output
        )

    def close(self) -> None:
        self.store.close()


def seed_march(schedule: Path, db: Path) -> Path:
    """Four leads in early March 2026, the US (8 March) and UK (29 March) clock changes ahead.

    - Maria (New York) signs up Mon 2 Mar before dawn; step 1 goes at 09:00 EST (14:00Z).
    - Sam (Los Angeles) signs up too but unsubscribes on 3 Mar, before any email.
    - James (London) signs up Fri 6 Mar 20:00 GMT, after the window: step 1 waits for Monday.
    - Chris (Chicago) signs up Fri 6 Mar 16:00 CST and gets step 1 at 16:30 CST; a week on is
      Fri 13 Mar 17:30 CDT (the US clocks moved on 8 Mar), after the window: Monday 09:00 CDT.
    """
    rig = Rig(schedule, db, ManualClock(utc(2026, 3, 2, 6, 0)))
    rig.add("maria@example.com", name="Maria", zone="America/New_York")
    [sam] = rig.add("sam@example.com", name="Sam", zone="America/Los_Angeles")
    assert rig.deliver(utc(2026, 3, 2, 14, 0)) == 1  # Maria's step 1 only
    rig.store.leads.set_lead_status(sam, LeadStatus.UNSUBSCRIBED, "test", utc(2026, 3, 3, 12, 0))
    rig.clock.now = utc(2026, 3, 6, 20, 0)
    rig.add("james@example.com", name="James", zone="Europe/London")
    rig.clock.now = utc(2026, 3, 6, 22, 0)
    rig.add("chris@example.com", name="Chris", zone="America/Chicago")
    assert rig.deliver(utc(2026, 3, 6, 22, 30)) == 1  # Chris's step 1 only
    rig.close()
    return db
