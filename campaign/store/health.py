"""What a monitor asks of the database itself: can it be read at all, and how have the
sending runs gone. Runs are counted in `meta`, so every worker sharing the database adds to
one tally, and the web process (which sends nothing) reads it at scrape time."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select

from campaign.store.database import Database
from campaign.store.meta import Meta
from campaign.store.schema import meta

RUNS = "runs-total"
RUN_SECONDS = "run-seconds-total"
LAST_RUN = "last-run"


@dataclass(frozen=True)
class LastRun:
    finished_at: datetime
    seconds: float


@dataclass(frozen=True)
class Runs:
    """Every completed run so far, by every worker: how many, their time, and the last one."""

    count: int
    seconds: float
    last: LastRun | None


class Health:
    def __init__(self, db: Database):
        self.db = db
        self.meta = Meta(db)

    def ping(self) -> None:
        """A trivial read of one of our own tables: raises `DatabaseError` when the server is
        unreachable, the file is unusable or the schema is missing, which `SELECT 1` would
        not notice for the last two."""
        with self.db.read() as conn:
            conn.execute(select(meta.c.key).limit(1)).all()

    def record_run(self, finished_at: datetime, seconds: float) -> None:
        last = {"finished_at": finished_at.isoformat(), "seconds": seconds}
        self.meta.add({RUNS: 1, RUN_SECONDS: seconds}, {LAST_RUN: json.dumps(last)})

    def runs(self) -> Runs:
        """The tally as one transaction saw it."""
        with self.db.read() as conn:
            rows = conn.execute(
                select(meta.c.key, meta.c.value).where(
                    meta.c.key.in_((RUNS, RUN_SECONDS, LAST_RUN))
                )
            ).all()
        values = {key: value for key, value in rows}
        last = None
        if LAST_RUN in values:
            data = json.loads(values[LAST_RUN])
            last = LastRun(datetime.fromisoformat(data["finished_at"]), float(data["seconds"]))
        return Runs(int(float(values.get(RUNS, "0"))), float(values.get(RUN_SECONDS, "0")), last)
