"""The circuit breaker: while the SMTP relay fails, the whole sender backs off.

A relay that cannot be reached, or that fails before any recipient is named, says nothing
about the messages: spending their attempts on it would turn a long outage into lost emails.
Instead each such failure opens the breaker for a while (1, 2, 4, 8, then every 10 minutes),
and runs in that time do not touch the relay at all; the first run after it tries again.
The state lives in the database, so every worker sharing it backs off together, and
`status` shows it. A message sent successfully closes it.
"""

from __future__ import annotations

import json
import threading
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta

from campaign.store import Store

KEY = "smtp-breaker"
BREAKER_FIRST = timedelta(minutes=1)
BREAKER_CAP = timedelta(minutes=10)


@dataclass(frozen=True)
class Tripped:
    """The relay's failures in a row: how many, since when, until when runs wait, and why."""

    failures: int
    since: datetime
    until: datetime
    reason: str

    def as_json(self) -> dict[str, object]:
        return {
            "state": "backing off",
            **asdict(self),
            "since": _iso(self.since),
            "until": _iso(self.until),
        }


def _iso(moment: datetime) -> str:
    return moment.isoformat()


def read(store: Store) -> Tripped | None:
    """The breaker's state as stored, or None while the relay is fine."""
    value = store.meta.get(KEY)
    if not value:
        return None
    data = json.loads(value)
    return Tripped(
        int(data["failures"]),
        datetime.fromisoformat(data["since"]),
        datetime.fromisoformat(data["until"]),
        str(data["reason"]),
    )


class Breaker:
    """One run's view of the breaker, shared by its connections: read once when the run
    starts, written only when the relay fails, and cleared by the run's first success
    after a failure, so a message sent costs no extra query."""

    def __init__(self, store: Store):
        self.store = store
        self._seen = False  # a failure was on record when the run began
        self._lock = threading.Lock()

    def holding(self, now: datetime) -> Tripped | None:
        """The stored state if runs must still wait at `now`; remembers whether any was stored."""
        state = read(self.store)
        self._seen = state is not None
        return state if state is not None and now < state.until else None

    def trip(self, now: datetime, reason: str) -> Tripped:
        """Record one more failure of the relay; runs wait longer after each in a row."""
        with self._lock:
            last = read(self.store)
            failures = (last.failures if last else 0) + 1
            wait = min(BREAKER_FIRST * 2 ** min(failures - 1, 16), BREAKER_CAP)
            state = Tripped(failures, last.since if last else now, now + wait, reason)
            self.store.meta.set(KEY, json.dumps(state.as_json()))
            self._seen = True
            return state

    def succeeded(self) -> None:
        """A message went through: the relay works again. Only the first success after a
        failure on record writes anything."""
        if not self._seen:
            return
        with self._lock:
            if self._seen:
                self.store.meta.delete(KEY)
                self._seen = False
