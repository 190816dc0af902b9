"""Shared ground for the sending tests: a real SMTP catcher, a real SQLite file, the real CLI.

Test modules load this as a plugin (`pytest_plugins = ("sending_support",)`) to get the
`campaign` fixture. Nothing here is a mock: messages cross a loopback socket to aiosmtpd, rows
live in a SQLite file, and `run.py` runs as a subprocess with only environment variables set.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
import yaml

from campaign.config.schedule import LoadedSchedule, load_schedule
from campaign.config.settings import SmtpSettings
from campaign.devtools.catcher import Catcher, CatchHandler
from campaign.leads.intake import add_lead, parse_lead
from campaign.rendering.links import LinkSigner
from campaign.sending.dispatcher import RunReport
from campaign.sending.runner import Engine
from campaign.store.queue import Store

REPO = Path(__file__).resolve().parents[1]
# Signs links in throwaway databases only; not a secret of any deployment.
TEST_SIGNING_KEY = "sending-tests-link-signing-key-0123456789"
HTTPS_BASE = "https://clinic.example.com"
CLI_TIMEOUT = 60.0
URL = re.compile(r"https?://[^\s\"'<>()]+")


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat()


def without_urls(text: str) -> str:
    """Per-lead unsubscribe and click URLs differ by token; compare everything else."""
    return URL.sub("<URL>", text)


def text_part(message: EmailMessage) -> str:
    """The text/plain body with the wire's CRLF line endings read back as newlines."""
    part = message.get_body(preferencelist=("plain",))
    assert part is not None, "the message has no text/plain part"
    return part.get_content().replace("\r\n", "\n")


def html_part(message: EmailMessage) -> str:
    part = message.get_body(preferencelist=("html",))
    assert part is not None, "the message has no text/html part"
    return part.get_content().replace("\r\n", "\n")


# -- schedule copies -----------------------------------------------------------------------


def edit_schedule(path: Path, change: Callable[[dict[str, Any]], None]) -> None:
    """Rewrite a schedule copy through YAML, so edits do not depend on the file's exact text."""
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    change(data)
    path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), encoding="utf-8")


def unthrottled(data: dict[str, Any]) -> None:
    """Rate limits high enough that hundreds of test messages go out in well under a second."""
    data["rate_limit"] = {"per_second": 10_000, "per_hour": 10_000_000, "per_connection": 1000}


def any_hour(data: dict[str, Any]) -> None:
    """A send window that is always open, for tests that must run on the real clock."""
    data["send_window"] = {
        "days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"],
        "start": "00:00",
        "end": "24:00",
    }


# -- an SMTP server with knobs -------------------------------------------------------------


@dataclass
class ControlledHandler(CatchHandler):
    """The catcher's handler, able to hold one message unanswered or to wait for company.

    `hold_at=N` stores the N-th message, then keeps the sender waiting for the `250` until
    `release` is set: a client killed meanwhile leaves its delivery in doubt. `rendezvous=N`
    answers nothing until N different connections have sent a message, which proves that N
    senders were really working at the same time. Waiting is async, so other connections go on.
    """

    hold_at: int | None = None
    rendezvous: int = 1
    timeout: float = 20.0
    held: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)
    met: threading.Event = field(default_factory=threading.Event)
    peers: set[Any] = field(default_factory=set)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.peers.add(session.peer)
        if len(self.peers) >= self.rendezvous:
            self.met.set()
        await self._until(self.met)
        reply = await super().handle_DATA(server, session, envelope)
        if self.hold_at is not None and len(self.messages()) == self.hold_at:
            self.held.set()
            await self._until(self.release)
        return reply

    async def _until(self, event: threading.Event) -> None:
        deadline = time.monotonic() + self.timeout
        while not event.is_set() and time.monotonic() < deadline:
            await asyncio.sleep(0.005)


# -- the campaign under test ---------------------------------------------------------------


@dataclass
class Campaign:
    """A schedule copy, a SQLite file and a running catcher, driven in-process or by the CLI."""

    schedule_path: Path
    db_path: Path
    store: Store
    catcher: Catcher
    clock: list[datetime] = field(default_factory=lambda: [datetime(2026, 3, 2, tzinfo=UTC)])
    _engine: Engine | None = None

    @property
    def handler(self) -> ControlledHandler:
        assert isinstance(self.catcher.handler, ControlledHandler)
        return self.catcher.handler

    def loaded(self) -> LoadedSchedule:
        return load_schedule(self.schedule_path)

    def edit(self, change: Callable[[dict[str, Any]], None]) -> None:
        edit_schedule(self.schedule_path, change)

    def signer(self) -> LinkSigner:
        return LinkSigner(HTTPS_BASE, TEST_SIGNING_KEY)

    def enroll(self, at: datetime, *leads: tuple[str, str, str | None]) -> list[int]:
        """Add (email, first name, zone) leads through the public `leads` functions."""
        schedule = self.loaded().schedule
        ids = []
        for email, name, zone in leads:
            lead = parse_lead({"email": email, "first_name": name, "timezone": zone})
            lead_id, created = add_lead(self.store, schedule, lead, at)
            assert created, f"{email} was already enrolled"
            ids.append(lead_id)
        return ids

    def engine(self) -> Engine:
        """One Engine for the test, like a long-running process: it recompiles on file edits."""
        if self._engine is None:
            self._engine = Engine(
                self.schedule_path,
                self.store,
                SmtpSettings(port=self.catcher.port),
                self.signer(),
                clock=lambda: self.clock[0],
                worker="test",
            )
        return self._engine

    def send_due(self, at: datetime) -> RunReport:
        """One in-process pass at `at` through the same Engine the CLI uses."""
        self.clock[0] = at
        return self.engine().send_due()

    # -- the real command line -----------------------------------------------------------

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CAMPAIGN_")}
        env.update(
            CAMPAIGN_DB=f"sqlite:///{self.db_path}",
            CAMPAIGN_SMTP_PORT=str(self.catcher.port),
            CAMPAIGN_SECRET_KEY=TEST_SIGNING_KEY,
            CAMPAIGN_BASE_URL=HTTPS_BASE,
        )
        return env

    def argv(self, *args: str) -> list[str]:
        return [sys.executable, "run.py", "--schedule", str(self.schedule_path), *args]

    def cli(
        self,
        *args: str,
        expect: int | None = 0,
        timeout: float = CLI_TIMEOUT,
        env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run `run.py` with this campaign's environment (plus `env`), checking the exit code."""
        result = subprocess.run(
            self.argv(*args),
            cwd=REPO,
            env={**self.env(), **(env or {})},
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if expect is not None:
            assert result.returncode == expect, (
                f"{' '.join(args)}: exit {result.returncode}\n{result.stdout}\n{result.stderr}"
            )
        assert "Traceback" not in result.stderr, result.stderr
        return result

    def popen(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            self.argv(*args),
            cwd=REPO,
            env=self.env(),
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
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
        with sqlite3.connect(self.db_path) as db:
            db.row_factory = sqlite3.Row
            return db.execute(query, (status,) if status else ()).fetchall()

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
        with sqlite3.connect(self.db_path) as db:
            return [status for (status,) in db.execute(query, (email, step))]

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


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll a condition a bounded number of times; fail naming what never happened."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {timeout:.0f}s waiting for {what}"
        time.sleep(0.01)


@contextmanager
def open_campaign(folder: Path, handler: ControlledHandler | None = None) -> Iterator[Campaign]:
    """Copy the shipped schedule and templates into `folder`, open a store, start a catcher."""
    shutil.copy(REPO / "schedules.yaml", folder / "schedules.yaml")
    shutil.copytree(REPO / "templates", folder / "templates")
    edit_schedule(folder / "schedules.yaml", unthrottled)
    handler = handler or ControlledHandler()
    db_path = folder / "campaign.db"
    store = Store.open(f"sqlite:///{db_path}")
    try:
        with Catcher(handler) as catcher:
            try:
                yield Campaign(folder / "schedules.yaml", db_path, store, catcher)
            finally:  # never leave the server thread waiting on a gate
                handler.release.set()
                handler.met.set()
    finally:
        store.close()


@pytest.fixture
def handler(request: pytest.FixtureRequest) -> ControlledHandler:
    """Parametrize indirectly (`{"hold_at": 20}`, `{"rendezvous": 2}`) to control the server."""
    return ControlledHandler(**getattr(request, "param", {}))


@pytest.fixture
def campaign(tmp_path: Path, handler: ControlledHandler) -> Iterator[Campaign]:
    with open_campaign(tmp_path, handler) as opened:
        yield opened
