"""The one-command demo: the whole five-week series, replayed in seconds on a simulated clock.

Everything is real except the clock: a fresh SQLite file, the real dispatcher, and a real
SMTP server (the local catcher) on a free loopback port. The clock jumps from one due time to
the next, so the demo shows exactly the calendar a real deployment would follow.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from campaign.config.schedule import load_schedule
from campaign.config.settings import SmtpSettings, base_url, secret_key
from campaign.devtools.catcher import Catcher, CatchHandler
from campaign.leads.intake import add_lead, parse_lead
from campaign.rendering.links import LinkSigner
from campaign.sending.runner import Engine
from campaign.store import Store

SAMPLE_LEADS = (
    ("maria@example.com", "Maria", "America/New_York"),
    ("james@example.com", "James", "Europe/London"),
    ("aiko@example.com", "Aiko", "Asia/Tokyo"),
    ("lena@example.com", "Lena", "Europe/Berlin"),
    ("sam@example.com", "", "America/Los_Angeles"),
)
# Monday 2 March 2026: the series crosses the US (8 March) and EU (29 March) clock changes.
DEMO_START = datetime(2026, 3, 2, 6, 0, tzinfo=UTC)
MAX_TICKS = 500


@dataclass(frozen=True)
class Delivered:
    at: datetime
    email: str
    zone: str
    subject: str
    path: Path


def run_demo(
    schedule_path: Path, out: Path, on_delivered: Callable[[Delivered], None] | None = None
) -> list[Delivered]:
    """Enroll the sample leads, replay the series, and return every email as it landed.
    Longer than most: a script, read top to bottom, of what a new user's first run does."""
    out.mkdir(parents=True, exist_ok=True)
    db = out / "demo.db"
    for stale in out.glob("demo.db*"):
        stale.unlink()
    emails_dir = out / "emails"
    emails_dir.mkdir(exist_ok=True)
    for old in emails_dir.glob("*.eml"):
        old.unlink()
    loaded = load_schedule(schedule_path)
    store = Store.open(f"sqlite:///{db}")
    clock = [DEMO_START]
    zones = {}
    for email, name, zone in SAMPLE_LEADS:
        add_lead(
            store,
            loaded.schedule,
            parse_lead({"email": email, "first_name": name, "timezone": zone}),
            DEMO_START,
        )
        zones[email] = zone
    delivered: list[Delivered] = []
    with Catcher(CatchHandler(maildir=out / "maildir")) as catcher:
        engine = Engine(
            schedule_path,
            store,
            SmtpSettings(port=catcher.port),
            LinkSigner(base_url(), secret_key(required=False)),
            clock=lambda: clock[0],
            worker="demo",
        )
        for _ in range(MAX_TICKS):
            due = store.queue.next_due_at(loaded.schedule.campaign.id)
            if due is None:
                break
            clock[0] = max(clock[0], due)
            report = engine.send_due()
            if report.stopped:
                raise RuntimeError(report.stopped)
            for caught in catcher.messages[len(delivered) :]:
                message = caught.message
                rcpt = caught.recipients[0]
                step = str(message["X-Campaign-Step"]).rpartition("/")[2]
                path = emails_dir / f"{len(delivered) + 1:02d}-{_slug(rcpt)}-{step}.eml"
                path.write_bytes(caught.data)
                item = Delivered(clock[0], rcpt, zones[rcpt], str(message["Subject"]), path)
                delivered.append(item)
                if on_delivered:
                    on_delivered(item)
            clock[0] += timedelta(minutes=1)
    store.close()
    return delivered


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
