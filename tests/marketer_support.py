"""Helpers for the marketer-tool tests: run the CLI in-process, seed a store through the real
engine (real SMTP to a local catcher, on an injected clock), and dump every table."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from aiosmtpd.smtp import SMTP, Envelope, Session
from click.testing import CliRunner, Result

from campaign.cli.main import main
from campaign.config.schedule import load_schedule
from campaign.config.settings import SmtpSettings
from campaign.devtools.catcher import Catcher, CatchHandler
from campaign.leads.intake import add_lead, parse_lead
from campaign.rendering.links import LinkSigner
from campaign.sending.runner import Engine
from campaign.store.queue import Store

SECRET = "test-secret-key-for-marketer-tools"


def run_cli(schedule: Path, db: Path | None, *args: str) -> Result:
    """`python run.py --schedule SCHEDULE [--db sqlite:///DB] ARGS...`, in this process."""
    options = ["--schedule", str(schedule)]
    if db is not None:
        options += ["--db", f"sqlite:///{db}"]
    env = {"CAMPAIGN_DB": None, "CAMPAIGN_SCHEDULE": None}
    return CliRunner().invoke(main, [*options, *args], env=env, catch_exceptions=False)


@dataclass
class Refusing(CatchHandler):
    """The catcher, except that one recipient does not exist."""

    refuse: str | None = None

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        if address == self.refuse:
            return "550 5.1.1 no such mailbox"
        envelope.rcpt_tos.append(address)
        return "250 OK"


class Seeder:
    """Enroll leads and send what is due, through the real engine, at chosen moments."""

    def __init__(self, schedule: Path, db: Path):
        self.schedule_path = schedule
        self.loaded = load_schedule(schedule)
        self.store = Store.open(f"sqlite:///{db}")
        self.clock = [datetime.min]

    def enroll(self, email: str, name: str, zone: str | None, at: datetime) -> int:
        lead = parse_lead({"email": email, "first_name": name, "timezone": zone})
        return add_lead(self.store, self.loaded.schedule, lead, at)[0]

    def send_due(self, at: datetime, refuse: str | None = None) -> int:
        """Everything due at `at`, over real SMTP; returns how many were sent.

        `refuse`: an address the SMTP server answers 550 for (a hard bounce).
        """
        self.clock[0] = at
        with Catcher(Refusing(refuse=refuse)) as catcher:
            engine = Engine(
                self.schedule_path,
                self.store,
                SmtpSettings(port=catcher.port),
                LinkSigner("https://clinic.example.com", SECRET),
                clock=lambda: self.clock[0],
                worker="test",
            )
            report = engine.send_due()
            assert report.ok, report.stopped
            assert len(catcher.messages) == report.sent
        return report.sent

    def close(self) -> None:
        self.store.close()


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def seed_march(schedule: Path, db: Path) -> Path:
    """Four leads in early March 2026, the US (8 March) and UK (29 March) clock changes ahead.

    - Maria (New York) signs up Mon 2 Mar before dawn; step 1 goes at 09:00 EST (14:00Z).
    - Sam (Los Angeles) signs up too but unsubscribes on 3 Mar, before any email.
    - James (London) signs up Fri 6 Mar 20:00 GMT, after the window: step 1 waits for Monday.
    - Chris (Chicago) signs up Fri 6 Mar 16:00 CST and gets step 1 at 16:30 CST; a week on is
      Fri 13 Mar 17:30 CDT (the US clocks moved on 8 Mar), after the window: Monday 09:00 CDT.
    """
    seeder = Seeder(schedule, db)
    seeder.enroll("maria@example.com", "Maria", "America/New_York", utc(2026, 3, 2, 6, 0))
    sam = seeder.enroll("sam@example.com", "Sam", "America/Los_Angeles", utc(2026, 3, 2, 6, 0))
    assert seeder.send_due(utc(2026, 3, 2, 14, 0)) == 1  # Maria's step 1 only
    seeder.store.set_lead_status(sam, "unsubscribed", "test", utc(2026, 3, 3, 12, 0))
    seeder.enroll("james@example.com", "James", "Europe/London", utc(2026, 3, 6, 20, 0))
    seeder.enroll("chris@example.com", "Chris", "America/Chicago", utc(2026, 3, 6, 22, 0))
    assert seeder.send_due(utc(2026, 3, 6, 22, 30)) == 1  # Chris's step 1 only
    seeder.close()
    return db


def dump_tables(db: Path) -> dict[str, list[tuple]]:
    """Every row of every table (and the schema), to prove a command changed nothing."""
    with sqlite3.connect(db) as conn:
        names = [
            row[0]
            for row in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name"
            )
        ]
        dump = {
            "sqlite_master": conn.execute(
                "SELECT type, name, sql FROM sqlite_master ORDER BY name"
            ).fetchall()
        }
        for name in names:
            dump[name] = conn.execute(f'SELECT * FROM "{name}" ORDER BY rowid').fetchall()
    return dump


def lines_of(text: str) -> list[str]:
    return [line.rstrip() for line in text.splitlines()]


def block(lines: Sequence[str], first: str, count: int) -> list[str]:
    """`count` lines starting at the one that starts with `first`."""
    starts = [i for i, line in enumerate(lines) if line.startswith(first)]
    assert starts, f"no line starts with {first!r} in:\n" + "\n".join(lines)
    return list(lines[starts[0] : starts[0] + count])
