"""Mail that comes back, for the inbound tests: two leads sent step 1 by the real engine,
samples filled in with what the catcher got, and the real `run.py inbound receive`."""

from __future__ import annotations

import sqlite3
import subprocess
from datetime import UTC, datetime, timedelta

from campaign.devtools.catcher import Caught
from harness.cli import CLI_TIMEOUT, cli_env, run_py_argv
from harness.engine import Campaign
from harness.mail import step_of
from harness.schedule import REPO

SAMPLES = REPO / "tests" / "inbound" / "samples"
DAY0 = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)  # Monday 09:00 in Chicago: step 1 at once
WEEK = timedelta(days=7)
RETURN_PATH = "bounces@bounce.clinic.example"
ANA = "ana@example.com"  # the lead each sample is about
BEN = "ben@example.org"  # a lead nothing inbound is about: their drip must go on


def with_return_path(data: dict) -> None:
    data["sender"]["return_path"] = RETURN_PATH


def start(campaign: Campaign, return_path: bool = True) -> None:
    if return_path:
        campaign.edit(with_return_path)
    campaign.enroll(DAY0, (ANA, "Ana", "America/Chicago"), (BEN, "Ben", "America/Chicago"))
    assert campaign.send_due(DAY0).sent == 2


def last_to(campaign: Campaign, email: str) -> Caught:
    return [c for c in campaign.catcher.messages if c.recipients == [email]][-1]


def fill(sample: str, caught: Caught, unique: str = "1") -> bytes:
    """The sample about `caught`, with the values the engine really used."""
    message = caught.message
    lead = caught.recipients[0]
    values = {
        "verp": caught.sender,
        "message_id": str(message["Message-ID"]),
        "subject": str(message["Subject"]),
        "date": str(message["Date"]),
        "lead": lead,
        "lead_local": lead.partition("@")[0],
        "lead_domain": lead.partition("@")[2],
        "name": "Ana",
        "unique": unique,
    }
    text = (SAMPLES / sample).read_text(encoding="utf-8")
    for name, value in values.items():
        text = text.replace("{{" + name + "}}", value)
    assert "{{" not in text, sample
    return text.encode("utf-8")


def receive(campaign: Campaign, data: bytes, *args: str) -> subprocess.CompletedProcess[str]:
    """The real `run.py inbound receive`, the message on its standard input, as a pipe
    transport runs it."""
    argv = run_py_argv("--schedule", str(campaign.schedule_path), "inbound", "receive", *args)
    result = subprocess.run(
        argv,
        input=data,
        cwd=REPO,
        env=cli_env(**campaign.env()),
        capture_output=True,
        timeout=CLI_TIMEOUT,
    )
    out = result.stdout.decode("utf-8", "replace")
    err = result.stderr.decode("utf-8", "replace")
    assert "Traceback" not in err, err
    return subprocess.CompletedProcess(argv, result.returncode, out, err)


def status(campaign: Campaign, email: str) -> str:
    lead = campaign.store.leads.lead_by_email(email)
    assert lead is not None
    return lead.status


def inbound_rows(campaign: Campaign) -> list[tuple]:
    with sqlite3.connect(campaign.db_path) as db:
        return db.execute(
            "SELECT message_key, kind, lead_id, step_id, outcome FROM inbound_messages ORDER BY id"
        ).fetchall()


def everything(campaign: Campaign) -> tuple[list[tuple], ...]:
    """Every lead, delivery and inbound row, to prove a message changed nothing."""
    with sqlite3.connect(campaign.db_path) as db:
        return tuple(
            db.execute(f"SELECT * FROM {table} ORDER BY id").fetchall()
            for table in ("leads", "deliveries", "enrollments", "inbound_messages")
        )


def steps_received(campaign: Campaign, email: str) -> list[str]:
    return [step_of(c.message) for c in campaign.catcher.messages if c.recipients == [email]]
