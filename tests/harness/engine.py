"""The engine under test, built one way for every test: the real `Engine` (renderer,
dispatcher, SMTP transport) on a real store, the tests' link signing and a clock the test
moves by hand.

`Campaign` is a whole campaign in a folder: a copy of the shipped schedule, a SQLite file and
a running catcher, driven in-process or through the real `run.py` in a subprocess. Nothing
here is a mock: messages cross a loopback socket to aiosmtpd and rows live in a SQLite file.
"""

from __future__ import annotations

import sqlite3
import subprocess
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from campaign.config.schedule import LoadedSchedule, Schedule, load_schedule
from campaign.config.settings import SmtpSettings
from campaign.devtools.catcher import Catcher
from campaign.leads.intake import add_lead, parse_lead
from campaign.model import Clock
from campaign.sending.dispatcher import RunReport
from campaign.sending.runner import Engine
from campaign.store import Store
from harness.cli import CLI_TIMEOUT, run_py, start_run_py
from harness.clock import ManualClock, iso
from harness.db import read_rows
from harness.mail import signer
from harness.schedule import copy_shipped, edit_schedule, unthrottled
from harness.smtp import ControlledHandler


def build_engine(schedule_path: Path, store: Store, clock: Clock, **smtp: Any) -> Engine:
    """The engine the CLI builds, with `smtp` as its SmtpSettings. Keep one per test, like a
    long-running process: it recompiles when the schedule's files change."""
    return Engine(schedule_path, store, SmtpSettings(**smtp), signer(), clock=clock, worker="test")


def enroll(
    store: Store,
    schedule: Schedule,
    at: datetime,
    email: str,
    name: str = "",
    zone: str | None = None,
    **attributes: str,
) -> tuple[int, bool]:
    """One lead through the public lead functions: (its id, whether it was new)."""
    lead = parse_lead(
        {"email": email, "first_name": name, "timezone": zone, "attributes": attributes}
    )
    return add_lead(store, schedule, lead, at)


@dataclass
class Campaign:
    """A schedule copy, a SQLite file and a running catcher, driven in-process or by the CLI."""

    schedule_path: Path
    db_path: Path
    store: Store
    catcher: Catcher
    clock: ManualClock = field(
        default_factory=lambda: ManualClock(datetime(2026, 3, 2, tzinfo=UTC))
    )
    _engine: Engine | None = None

    @property
    def handler(self) -> ControlledHandler:
        assert isinstance(self.catcher.handler, ControlledHandler)
        return self.catcher.handler

    def loaded(self) -> LoadedSchedule:
        return load_schedule(self.schedule_path)

    def edit(self, change: Callable[[dict[str, Any]], None]) -> None:
        edit_schedule(self.schedule_path, change)

    def enroll(self, at: datetime, *leads: tuple[str, str, str | None]) -> list[int]:
        """Add (email, first name, zone) leads, each new."""
        schedule = self.loaded().schedule
        ids = []
        for email, name, zone in leads:
            lead_id, created = enroll(self.store, schedule, at, email, name, zone)
            assert created, f"{email} was already enrolled"
            ids.append(lead_id)
        return ids

    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = build_engine(
                self.schedule_path, self.store, self.clock, port=self.catcher.port
            )
        return self._engine

    def send_due(self, at: datetime) -> RunReport:
        """One in-process pass at `at` through the same Engine the CLI uses."""
        self.clock.now = at
        return self.engine().send_due()

    # -- the real command line -----------------------------------------------------------

    def env(self) -> dict[str, str]:
        """What `run.py` needs to reach this campaign's database and catcher."""
        return {
            "CAMPAIGN_DB": f"sqlite:///{self.db_path}",
            "CAMPAIGN_SMTP_PORT": str(self.catcher.port),
        }

    def cli(
        self,
        *args: str,
        expect: int | None = 0,
        timeout: float = CLI_TIMEOUT,
        env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run `run.py` on this campaign (plus `env`), checking the exit code."""
        result = run_py(
            "--schedule",
            str(self.schedule_path),
            *args,
            env={**self.env(), **(env or {})},
            expect=expect,
            timeout=timeout,
        )
        assert "Traceback" not in result.stderr, result.stderr
        return result

    def popen(self, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
        """Start `run.py` on this campaign (plus `env`); the test stops it."""
        return start_run_py(
            "--schedule", str(self.schedule_path), *args, env={**self.env(), **(env or {})}
        )

    def send_due_cli(self, at: datetime, *extra: str) -> subprocess.CompletedProcess[str]:
        return self.cli("send-due", "--now", iso(at), *extra)

    # -- what happened -------------------------------------------------------------------

    def received(self) -> list[tuple[str, str]]:
        """(recipient, subject) of every message the catcher accepted, in arrival order."""
        return [(c.recipients[0], str(c.message["Subject"])) for c in self.catcher.messages]

    def deliveries(self, status: str | None = None) -> list[sqlite3.Row]:
        """Delivery rows read straight from the file, not through the code under test."""
        query = (
            "SELECT d.*, l.email FROM deliveries d JOIN leads l ON l.id = d.lead_id"
            + (" WHERE d.status = ?" if status else "")
            + " ORDER BY d.id"
        )
        return read_rows(self.db_path, query, (status,) if status else ())

    def watch_statuses(self) -> None:
        """From now on, keep every status a delivery goes through (an SQLite trigger)."""
        with sqlite3.connect(self.db_path) as db:
            db.executescript(
                "CREATE TABLE status_log (delivery INTEGER, status TEXT);"
                "CREATE TRIGGER log_status AFTER UPDATE OF status ON deliveries "
                "BEGIN INSERT INTO status_log VALUES (new.id, new.status); END;"
            )

    def statuses(self, email: str, step: str) -> list[str]:
        """The statuses one delivery went through since `watch_statuses`, in order."""
        query = (
            "SELECT s.status FROM status_log s JOIN deliveries d ON d.id = s.delivery "
            "JOIN leads l ON l.id = d.lead_id WHERE l.email = ? AND d.step_id = ? ORDER BY s.rowid"
        )
        return [row["status"] for row in read_rows(self.db_path, query, (email, step))]

    def pending(self) -> dict[tuple[str, str], datetime]:
        """(email, step) → due time of every pending delivery."""
        return {
            (row["email"], row["step_id"]): datetime.fromisoformat(row["due_at"]).replace(
                tzinfo=UTC
            )
            for row in self.deliveries("pending")
        }

    def status_counts(self) -> Counter[str]:
        return Counter(row["status"] for row in self.deliveries())


def subjects(schedule: LoadedSchedule, *step_ids: str) -> list[str]:
    return [schedule.schedule.steps_by_id[step_id].subject for step_id in step_ids]


@contextmanager
def open_campaign(folder: Path, handler: ControlledHandler | None = None) -> Iterator[Campaign]:
    """Copy the shipped schedule into `folder` (unthrottled), open a store, start a catcher."""
    schedule_path = copy_shipped(folder)
    edit_schedule(schedule_path, unthrottled)
    handler = handler or ControlledHandler()
    db_path = folder / "campaign.db"
    store = Store.open(f"sqlite:///{db_path}")
    try:
        with Catcher(handler) as catcher:
            try:
                yield Campaign(schedule_path, db_path, store, catcher)
            finally:  # never leave the server thread waiting on a gate
                handler.open_gates()
    finally:
        store.close()
