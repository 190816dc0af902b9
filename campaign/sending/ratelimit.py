"""Rate limits from `schedules.yaml`, held across batches and across processes.

- `per_minute` and `per_hour` are budgets counted in the database (`deliveries.sent_at`,
  indexed), so every process sharing the database spends the same budget and a restart
  forgets nothing. They are counted on the dispatcher's clock, so a replayed calendar
  (`send-due --now`) is limited exactly like a live one. When a budget is spent the run
  pauses (nothing is claimed) and the next run carries on.
- `per_second` spaces messages evenly: each message books the next free slot, kept in the
  database, `1 / per_second` seconds after the one booked before it, whichever process
  booked that one. So every worker shares one cadence, as the SMTP account does. Slots are
  wall-clock times, so workers on several machines need their clocks in step (NTP). A
  quiet spell banks no burst: a slot is never earlier than now. Waiting for the slot is the
  only real sleeping the engine does, and it is bounded by `MAX_WAIT`.
- `per_connection` is applied by the SMTP transport, which renews its connection.

Budgets are checked before each message is started, so concurrent workers may overshoot a
budget by at most one message each.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from campaign.config.schedule import RateLimit
from campaign.store import Store

MAX_WAIT = 5.0  # seconds; a slower `per_second` pauses the run instead of blocking it
PACE_KEY = "rate_limit.per_second.next_slot"
BUDGETS = (("per_minute", timedelta(minutes=1)), ("per_hour", timedelta(hours=1)))


@dataclass
class RateLimiter:
    """Decides, before each message, whether it may go now.

    One per worker process, shared by its connections: they take their `per_second` turns
    one at a time (`_turn`), so none books a slot further ahead than one spacing behind the
    other processes' bookings, and a busy pool never mistakes its own queue for a limit.
    """

    store: Store
    sleep: Callable[[float], None] = time.sleep
    wall: Callable[[], float] = time.time
    _turn: threading.Lock = field(default_factory=threading.Lock)

    def acquire(self, limits: RateLimit, now: datetime) -> str | None:
        """Wait for the next message's turn. None: send it; otherwise why the run must pause."""
        for name, window in BUDGETS:
            budget = getattr(limits, name)
            if budget is not None:
                used = self.store.reads.sent_since(now - window)
                if used >= budget:
                    return f"rate limit {name}: {budget} reached ({used} sent), the rest waits"
        if limits.per_second is not None:
            return self._pace(limits.per_second)
        return None

    def _pace(self, per_second: float) -> str | None:
        with self._turn:
            current = self.wall()
            slot = self.store.meta.book_slot(PACE_KEY, 1.0 / per_second, current, MAX_WAIT)
            wait = slot - current
            if wait > MAX_WAIT:
                return f"rate limit per_second: next message allowed in {wait:.0f} s"
            if wait > 0:
                self.sleep(wait)
            return None
