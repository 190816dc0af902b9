"""Test support for the reliability tests: a real store, the real engine and an injected clock.

`Rig` wires a copy of the shipped schedule, a SQLite file in the test's folder and the real
`Engine` (renderer, dispatcher, SMTP transport) to whatever SMTP port a test chooses, with a
clock the test moves by hand. Rows are read back with plain SQL so a test sees exactly what
an operator's `status` would.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select

from campaign.config.schedule import load_schedule
from campaign.config.settings import SmtpSettings
from campaign.leads.intake import add_lead, parse_lead
from campaign.rendering.links import LinkSigner
from campaign.sending.runner import Engine
from campaign.store.queue import Store, deliveries, leads

REPO = Path(__file__).resolve().parents[1]
# Wednesday 4 March 2026, 10:00 in Chicago: inside the send window, step 1 due at once.
T0 = datetime(2026, 3, 4, 16, 0, tzinfo=UTC)
SECRET = "test-secret-key-0123456789abcdef"
BASE_URL = "https://links.example.com"


def set_yaml_block(path: Path, key: str, body: str) -> None:
    """Replace a top-level `key:` block of the schedule (up to the next blank line)."""
    text = path.read_text(encoding="utf-8")
    start = text.index(f"\n{key}:") + 1
    end = text.index("\n\n", start)
    path.write_text(f"{text[:start]}{key}:\n{body.rstrip()}{text[end:]}", encoding="utf-8")


@dataclass
class Rig:
    """One campaign on a SQLite file, sent by the real engine at a clock the test controls."""

    schedule_path: Path
    db_path: Path
    now: datetime = T0
    timeout: float = 2.0
    user: str | None = None
    password: str | None = None
    connections: int = 1
    store: Store = field(init=False)

    def __post_init__(self) -> None:
        self.store = Store.open(self.url)
        self.schedule = load_schedule(self.schedule_path).schedule
        self.signer = LinkSigner(BASE_URL, SECRET)
        self._engines: dict[int, Engine] = {}

    @property
    def url(self) -> str:
        return f"sqlite:///{self.db_path}"

    def add(self, *emails: str, name: str = "", **attrs: str) -> list[int]:
        ids = []
        for email in emails:
            lead = parse_lead({"email": email, "first_name": name, "attributes": attrs})
            ids.append(add_lead(self.store, self.schedule, lead, self.now)[0])
        return ids

    def engine(self, port: int) -> Engine:
        """One engine per port, kept across runs like the long-running scheduler keeps it."""
        if port not in self._engines:
            smtp = SmtpSettings(
                port=port,
                timeout=self.timeout,
                user=self.user,
                password=self.password,
                connections=self.connections,
            )
            self._engines[port] = Engine(
                self.schedule_path,
                self.store,
                smtp,
                self.signer,
                clock=lambda: self.now,
                worker="test",
            )
        return self._engines[port]

    def run(self, port: int, max_messages: int | None = None):
        return self.engine(port).send_due(max_messages)

    def row(self, email: str, step: str = "mechanisms") -> dict[str, Any]:
        with self.store.engine.connect() as conn:
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
        with self.store.engine.connect() as conn:
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
        lead = self.store.lead_by_email(email)
        assert lead is not None, email
        return lead.status

    def snapshot(self) -> tuple[list[tuple], list[tuple]]:
        """Every lead and delivery row, to prove an operation changed nothing."""
        with self.store.engine.connect() as conn:
            return (
                [tuple(r) for r in conn.execute(select(leads).order_by(leads.c.id))],
                [tuple(r) for r in conn.execute(select(deliveries).order_by(deliveries.c.id))],
            )

    def send_due_argv(self, at: datetime | None = None, db: str | None = None) -> list[str]:
        """The real `run.py send-due` against this rig's schedule and database."""
        moment = (at or self.now).isoformat()
        return [
            sys.executable,
            "run.py",
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
        return subprocess.run(
            self.send_due_argv(db=db),
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
            env=cli_env(CAMPAIGN_SMTP_PORT=str(port), **env),
        )

    def advance(self, delta: timedelta) -> None:
        self.now += delta


def cli_env(**extra: str) -> dict[str, str]:
    """The environment for running `run.py` in a subprocess: no stray CAMPAIGN_ settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAMPAIGN_")}
    env.update(
        {
            "CAMPAIGN_SECRET_KEY": SECRET,
            "CAMPAIGN_BASE_URL": BASE_URL,
            "COLUMNS": "200",
            "PYTHONPATH": str(REPO),
        }
    )
    env.update(extra)
    return env


PYTHON = sys.executable
